"""A thousand HTTP clients at once stay held (the memory figure is in bench/)."""

from __future__ import annotations

import select
import socket
import time

from support import start_tarry, wait_until

N = 1000
DELAY = 0.2


def test_a_thousand_http_clients_stay_held() -> None:
    t = start_tarry(
        "[log]\nlevel = 'info'\n[admin]\nlisten = ''\n[history]\nenabled = false\n"
        "[[tarpit]]\nprotocol = 'http'\nlisten = ['127.0.0.1:0']\n"
        f"delay = {DELAY}\nmax_clients = {N + 10}\nrequest_timeout = 2.0\n"
    )
    socks: list[socket.socket] = []
    try:
        port = t.port("http")
        for i in range(N):
            s = socket.socket()
            s.bind((f"127.0.0.{2 + i % 50}", 0))
            s.connect(("127.0.0.1", port))
            s.sendall(
                b"GET /wp-login.php HTTP/1.1\r\nHost: victim.example\r\n"
                b"User-Agent: Mozilla/5.0 (scale test)\r\n\r\n"
            )
            s.setblocking(False)
            socks.append(s)
        wait_until(lambda: t.count(r" ACCEPT ") == N, 20, f"{N} accepts")
        ep = select.epoll()
        index = {s.fileno(): i for i, s in enumerate(socks)}
        for s in socks:
            ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        got = [0] * N
        heads = [b""] * N
        ended = set()
        deadline = time.monotonic() + 15 * DELAY
        # every client keeps getting bytes for 15 delays, and none is let go
        while time.monotonic() < deadline:
            for fd, _mask in ep.poll(0.2):
                i = index[fd]
                try:
                    data = socks[i].recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    ended.add(i)
                    ep.unregister(fd)
                if got[i] < 16:
                    heads[i] = (heads[i] + data)[:16]
                got[i] += len(data)
        assert not ended, f"{len(ended)} clients were let go"
        assert min(got) >= 400, f"a client got only {min(got)} bytes"
        assert all(h.startswith(b"HTTP/1.1 ") for h in heads), "a response did not start right"
        assert t.count(r" CLOSE ") == 0
    finally:
        for s in socks:
            s.close()
        if socks:
            wait_until(lambda: t.count(r" CLOSE ") == len(socks), 20, "every CLOSE")
            close = next(line for line in t.lines if " CLOSE " in line)
            assert "path=/wp-login.php" in close and "host_header=victim.example" in close
        t.stop()
