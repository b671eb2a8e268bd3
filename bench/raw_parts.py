"""Figures of the raw stack's parts (docs/raw-stack.md).

    .venv/bin/python bench/raw_parts.py index [-n 100000 -n 1000000]
    sudo .venv/bin/python bench/raw_parts.py lines [-n 20000]

``index``: bytes per entry and time per operation of the 4-tuple indexes:
``Index`` with 20-byte keys, with 8-byte keys (an IPv4-only tarpit), and
``RowIndex``, which reads keys from the row's columns.

``lines``: CPU per line of the send path (tcp.send + packet.build + sendmmsg),
one line to each of ``n`` clients over loopback in a new network namespace
(``unshare -n``, root); sending includes the kernel's side. Only the I/O
parts, not a side-by-side bench.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from tarry.raw import packet, tcp
from tarry.raw.index import Index, RowIndex, tuple_key
from tarry.raw.ring import Sender

LINE = b"tarry raw demo: please hold\r\n"


def index(name: str, table: Index | RowIndex, keys: list[bytes]) -> str:
    n = len(keys)
    start = time.perf_counter()
    for row, key in enumerate(keys):
        table.put(key, row)
    mid = time.perf_counter()
    for key in keys:
        table.get(key)
    per = [(mid - start) / n * 1e9, (time.perf_counter() - mid) / n * 1e9]
    return f"{name:<22} n={n:>9,}  {table.nbytes / n:5.1f} B/entry  put {per[0]:5.0f} ns  get {per[1]:5.0f} ns"


def indexes(sizes: list[int]) -> None:
    for n in sizes:
        keys = [tuple_key(i.to_bytes(4, "big"), i & 0xFFFF, 0) for i in range(n)]
        print(index("Index (20-byte keys)", Index(), keys))
        print(index("Index (8-byte keys)", Index(width=8), [key[12:] for key in keys]))
        print(index("RowIndex", RowIndex(keys.__getitem__), keys))


def lines(n: int) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    conns = tcp.Conns(n)
    for row in range(n):
        conns.start(row, 1000, 2000)
    sender = Sender()
    me, peer = socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.2")
    start = time.process_time()
    out = [
        packet.build(me, peer, 2222, 10000 + row % 50000, o.seq, o.ack, o.flags, o.payload)
        for row in range(n)
        for o in tcp.send(conns, row, LINE)
    ]
    built = time.process_time()
    sender.send(out)
    took = [(built - start) / n * 1e6, (time.process_time() - built) / n * 1e6]
    print(
        f"{n:,} lines: build {took[0]:.2f} µs/line, send {took[1]:.2f} µs/line, {sender.calls} sendmmsg calls"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["index", "lines"])
    ap.add_argument("-n", type=int, action="append")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.what == "index":
        indexes(args.n or [100_000, 1_000_000])
    elif args.inside:
        lines(args.n[0])
    else:
        n = (args.n or [20_000])[0]
        argv = [sys.executable, os.path.abspath(__file__), "lines", "-n", str(n), "--inside"]
        sys.exit(subprocess.run(["unshare", "-n", *argv], check=False).returncode)


if __name__ == "__main__":
    main()
