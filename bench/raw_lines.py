"""CPU per line of the raw stack's send path: tcp.send + packet.build + sendmmsg.

    sudo .venv/bin/python bench/raw_lines.py [-n 20000]

Runs itself in a new network namespace (``unshare -n``, root), sends one line
to each of ``n`` clients over loopback, and prints the process CPU time per
line for building and for sending (the latter includes the kernel's side,
loopback delivery too). Only the I/O parts, not a side-by-side bench.
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
from tarry.raw.ring import Sender

LINE = b"tarry raw demo: please hold\r\n"


def run(n: int) -> None:
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
    sent = time.process_time()
    print(
        f"{n:,} lines: build {(built - start) / n * 1e6:.2f} µs/line, "
        f"send {(sent - built) / n * 1e6:.2f} µs/line, {sender.calls} sendmmsg calls"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        run(args.n)
        return
    argv = [sys.executable, os.path.abspath(__file__), "-n", str(args.n), "--inside"]
    sys.exit(subprocess.run(["unshare", "-n", *argv], check=False).returncode)


if __name__ == "__main__":
    main()
