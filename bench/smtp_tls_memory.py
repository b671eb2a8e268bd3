"""Bytes per held SMTP client, plain and inside TLS, measured not guessed.

The server side runs in this process on the sans-I/O baits (no engine), the
clients in a forked child, so that only what the tarpit holds is counted, over
N clients each held after its handshake and greeting: the RSS growth, the C
heap in use (glibc mallinfo2: OpenSSL allocates there) and the Python objects
(tracemalloc; they include the held socket objects of this harness).

    python bench/smtp_tls_memory.py [N] [plain|tls|tls-tickets]

With ``serve-plain`` or ``serve-tls`` it measures a real ``tarry serve`` instead
(engine included): the RSS growth of that process while this one holds N
clients (keep N + 30 under max_tls_clients, 1024 by default).
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc

from tarry import tls
from tarry.bait import TarpitSpec
from tarry.baits import smtp

PAGE = os.sysconf("SC_PAGE_SIZE")


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def heap() -> int:
    """Bytes in use on the C heap (small and mmapped blocks)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    m = libc.mallinfo2()
    return m.uordblks + m.hblkhd


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def spec(mode: str) -> TarpitSpec:
    options = {k: o.default for k, o in smtp.OPTIONS.items()}
    options["tls"] = mode != "plain"
    options["starttls"] = False
    return TarpitSpec("smtp", ["127.0.0.1:0"], 0.0, 100000, 0.0, options)


def client(socks: list[socket.socket], ctx: ssl.SSLContext | None, go: int) -> None:
    held = []
    for s in socks:
        c = ctx.wrap_socket(s, server_hostname="mail.example.com") if ctx else s
        buf = b""
        while not buf.endswith(b"Postfix\r\n"):
            buf += c.recv(4096)
        held.append(c)
    os.read(go, 1)  # hold every connection until the parent has measured
    os._exit(0)


def serve(bait: object, sock: socket.socket) -> tuple[int, object]:
    """Drive one client to its held state: handshake done, greeting sent."""
    s = bait.open("127.0.0.1")
    state, obj = s.state, s.obj
    start = time.monotonic()
    while True:
        if s.out:
            sock.sendall(s.out)
        inner = obj.inner if tls.is_tls(obj) else obj
        if isinstance(inner, smtp.Session) and inner.reply is None:
            return state, obj
        if s.delay is not None and s.delay < 1.0:
            s = bait.tick(state, obj, time.monotonic() - start)
        else:
            s = bait.feed(state, obj, sock.recv(65536), time.monotonic() - start)
        state, obj = s.state, s.obj


def serve_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def measure_serve(n: int, use_tls: bool) -> None:
    state = tempfile.mkdtemp()
    cfg = os.path.join(state, "smtp.toml")
    with open(cfg, "w") as f:
        f.write(
            '[[tarpit]]\nprotocol = "smtp"\nlisten = ["127.0.0.1:0"]\ndelay = 0.002\n'
            f"max_clients = {n + 100}\ntls = {'true' if use_tls else 'false'}\n"
            "starttls = false\n"
        )
    env = {**os.environ, "XDG_STATE_HOME": state}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tarry", "serve", "-c", cfg],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(re.search(r"listener=127\.0\.0\.1:(\d+)", line).group(1))
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain the log
        cctx = ssl.create_default_context()
        cctx.check_hostname = False
        cctx.verify_mode = ssl.CERT_NONE
        held = []

        def one() -> None:
            s = socket.create_connection(("127.0.0.1", port))
            c = cctx.wrap_socket(s) if use_tls else s
            buf = b""
            while not buf.endswith(b"Postfix\r\n"):
                buf += c.recv(100)
            held.append(c)

        for _ in range(30):
            one()
        time.sleep(0.5)
        r0 = serve_rss(proc.pid)
        for _ in range(n):
            one()
        time.sleep(0.5)
        r1 = serve_rss(proc.pid)
        mode = "serve-tls" if use_tls else "serve-plain"
        print(f"{mode}: {n} held clients: tarry serve RSS {(r1 - r0) / n / 1024:.1f} KiB/client")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    mode = sys.argv[2] if len(sys.argv) > 2 else "tls"
    if mode.startswith("serve-"):
        measure_serve(n, mode == "serve-tls")
        return
    state_dir = tempfile.mkdtemp()
    sp = spec(mode)
    bait = smtp.make(sp)
    if mode != "plain":
        bait = tls.wrap(sp, bait, state_dir)
        if mode == "tls-tickets":
            bait.ctx.num_tickets = 2
    cctx = None
    if mode != "plain":
        cctx = ssl.create_default_context()
        cctx.check_hostname = False
        cctx.verify_mode = ssl.CERT_NONE
    warm = 20
    pairs = [socket.socketpair() for _ in range(n + warm)]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        for a, _ in pairs:
            a.close()
        client([b for _, b in pairs], cctx, r)
    for _, b in pairs:
        b.close()
    held = [serve(bait, a) for a, _ in pairs[:warm]]  # one-time costs out of the figure
    gc.collect()
    tracemalloc.start()
    rss0, heap0, py0 = rss(), heap(), tracemalloc.get_traced_memory()[0]
    held += [serve(bait, a) for a, _ in pairs[warm:]]
    gc.collect()
    rss1, heap1, py1 = rss(), heap(), tracemalloc.get_traced_memory()[0]
    os.write(w, b"x" * (n + warm))
    os.waitpid(pid, 0)
    print(
        f"{mode}: {n} held clients: RSS {(rss1 - rss0) / n / 1024:.1f} KiB/client, "
        f"C heap {(heap1 - heap0) / n / 1024:.1f} KiB/client, "
        f"Python objects {(py1 - py0) / n:.0f} B/client"
        + (f", live TLS {bait.live}" if mode != "plain" else "")
    )
    if mode != "plain":
        print(f"  session cache: {bait.ctx.session_stats()}")
    del held


if __name__ == "__main__":
    main()
