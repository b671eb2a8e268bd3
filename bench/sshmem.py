"""Userland memory per held client in each SSH mode, adaptive included.

For each mode, starts ``tarry serve`` with one SSH listener, connects N/2
clients that each send what a real OpenSSH client sends first (its
identification line and its KEXINIT, captured from the installed ``ssh`` when
there is one), waits until tarry has read them, records RSS, connects N/2 more,
and reports the marginal cost (RSS delta / (N/2)). The marginal figure does not
depend on an idle baseline. Loopback only; every process is ended by its PID.

Usage: python bench/sshmem.py [-n 4000] [--modes banner,drip,kex,adaptive]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sshhello import capture_openssh_hello

REPO = Path(__file__).resolve().parent.parent


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def openssh_hello() -> bytes:
    """The identification line and KEXINIT of the installed ssh, or a stand-in."""
    hello = capture_openssh_hello()
    if hello is not None:
        return hello
    body = bytes([20]) + os.urandom(16)
    for name in ["curve25519-sha256", "ssh-ed25519", *["aes128-ctr"] * 2]:
        body += struct.pack(">I", len(name)) + name.encode()
    for name in [*["hmac-sha2-256"] * 2, "none", "none", "", ""]:
        body += struct.pack(">I", len(name)) + name.encode()
    body += b"\0" * 5
    pad = 8 - (5 + len(body)) % 8
    pad += 8 if pad < 4 else 0
    packet = struct.pack(">IB", 1 + len(body) + pad, pad) + body + b"\0" * pad
    return b"SSH-2.0-OpenSSH_9.6\r\n" + packet


def measure(mode: str, n: int, hello: bytes) -> tuple[float, int]:
    fd, path = tempfile.mkstemp(suffix=".toml", prefix="tarry-sshmem-")
    with os.fdopen(fd, "w") as f:
        f.write(
            f'[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:0"]\ndelay = 10.0\n'
            f'mode = "{mode}"\nmax_clients = {n + 100}\n'
        )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tarry", "serve", "-c", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    socks: list[socket.socket] = []
    drain: subprocess.Popen[bytes] | None = None
    try:
        assert proc.stdout is not None
        port = 0
        for line in proc.stdout:
            m = re.search(r"LISTEN proto=ssh listener=127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        # drain stdout in the background so the pipe never blocks tarry
        drain = subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
        marks = []
        for _ in range(2):
            for _ in range(n // 2):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(hello)
                socks.append(s)
            time.sleep(2.5)  # past ident_wait and a few ticks: every hello is read
            marks.append(rss(proc.pid))
        held = len(socks)
        return (marks[1] - marks[0]) / (n // 2), held
    finally:
        for s in socks:
            s.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if drain is not None:
            drain.wait(10)
        os.unlink(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=4000, help="clients held per mode (<= ~19000 here)")
    ap.add_argument("--modes", default="banner,drip,kex,adaptive")
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    hello = openssh_hello()
    print(f"# python bench/sshmem.py -n {args.n} --modes {args.modes}")
    ident = hello.split(b"\r")[0].decode()
    print(f"# each client sends {len(hello)} bytes: {ident} + KEXINIT")
    print("| mode | clients | RSS bytes per client (marginal, N/2..N) |")
    print("|------|---------|------------------------------------------|")
    for mode in args.modes.split(","):
        per, held = measure(mode, args.n, hello)
        print(f"| {mode} | {held} | {per:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
