"""Bytes per held SMTP client, plain and inside TLS, measured not guessed.

The server side runs in this process on the sans-I/O baits (no engine), the
clients in a forked child, so that only what the tarpit holds is counted, over
N clients each held after its handshake and greeting: the RSS growth, the C
heap in use (glibc mallinfo2: OpenSSL allocates there) and the Python objects
(tracemalloc; they include the held socket objects of this harness).

    python bench/smtp_tls_memory.py [N] [plain|tls|tls-tickets]
"""

from __future__ import annotations

import ctypes
import gc
import os
import socket
import ssl
import sys
import tempfile
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


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    mode = sys.argv[2] if len(sys.argv) > 2 else "tls"
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
