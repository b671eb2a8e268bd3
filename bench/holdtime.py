"""How long each real SSH client stays in each SSH mode, at realistic delays.

Runs one ``tarry serve`` with one listener per (client, mode) cell, starts every
client at once against its own listener, and prints the seconds tarry held each
one (from its CLOSE line), capped at ``--cap``: ``>=CAP`` means the client was
still held when the cell was stopped. Everything stays on loopback; every
process started here is ended by its PID.

Usage: python bench/holdtime.py [--cap 300] [--delay 10] [--modes banner,drip,kex,adaptive]
                                [--clients ssh,ssh-ct10,paramiko,asyncssh,dbclient,plink]

The clients are the ones installed here: OpenSSH ``ssh`` (plain, and with
``-o ConnectTimeout=10`` as many bots use it), paramiko and asyncssh with their
default timeouts, dropbear's ``dbclient`` and PuTTY's ``plink``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODES = ("banner", "drip", "kex", "adaptive")
CLIENTS = ("ssh", "ssh-ct10", "paramiko", "asyncssh", "dbclient", "plink")

# The Python clients as scripts (python -c SCRIPT PORT): each prints, when it gives
# up, "SECONDS ExceptionName: message", timed by itself after its imports.
# tests/test_ssh_clients.py runs these same scripts.
PARAMIKO = """
import sys, time, paramiko
t = time.monotonic()
try:
    c = paramiko.SSHClient()
    c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    c.connect("127.0.0.1", port=int(sys.argv[1]), username="root", password="x",
              look_for_keys=False, allow_agent=False)
except Exception as e:
    print(f"{time.monotonic() - t:.2f} {type(e).__name__}: {e}", flush=True)
"""

# an optional second argument shortens asyncssh's login_timeout (120 s by default)
ASYNCSSH = """
import asyncio, sys, time, asyncssh
async def main():
    t = time.monotonic()
    try:
        await asyncssh.connect("127.0.0.1", port=int(sys.argv[1]), username="root",
                               password="x", known_hosts=None,
                               login_timeout=float(sys.argv[2]) if sys.argv[2:] else 120)
    except Exception as e:
        print(f"{time.monotonic() - t:.2f} {type(e).__name__}: {e}", flush=True)
asyncio.run(main())
"""

SSH_OPTS = ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]
SSH_OPTS += ["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]


def command(client: str, port: int) -> list[str] | None:
    """The command line for ``client`` against ``port``, or None if it is missing."""
    p = str(port)
    if client in ("ssh", "ssh-ct10"):
        ssh = shutil.which("ssh")
        extra = ["-o", "ConnectTimeout=10"] if client == "ssh-ct10" else []
        return ssh and [ssh, *SSH_OPTS, *extra, "-p", p, "root@127.0.0.1", "true"]
    if client == "dbclient":
        db = shutil.which("dbclient")
        return db and [db, "-y", "-y", "-p", p, "root@127.0.0.1", "true"]
    if client == "plink":
        plink = shutil.which("plink")
        return plink and [plink, "-batch", "-ssh", "-l", "root", "-P", p, "127.0.0.1", "true"]
    for name, code in (("paramiko", PARAMIKO), ("asyncssh", ASYNCSSH)):
        if client == name:
            try:
                __import__(name)
            except ImportError:
                return None
            return [sys.executable, "-c", code, p]
    raise SystemExit(f"unknown client {client!r} (known: {', '.join(CLIENTS)})")


def config(cells: list[tuple[str, str]], delay: float, kexinit_time: float) -> str:
    out = []
    for client, mode in cells:
        out += ["[[tarpit]]", 'protocol = "ssh"', 'listen = ["127.0.0.1:0"]']
        out += [f'name = "{client}-{mode}"', f"delay = {delay}", f'mode = "{mode}"']
        out += [f"kexinit_time = {kexinit_time}", f"max_clients = {len(cells) + 10}", ""]
    return "\n".join(out)


class Tarry:
    def __init__(self, path: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tarry", "serve", "-c", path],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append(line.rstrip("\n"))

    def find(self, rx: re.Pattern[str]) -> list[re.Match[str]]:
        with self.lock:
            return [m for line in self.lines if (m := rx.search(line))]

    def ports(self, n: int, timeout: float = 20.0) -> list[int]:
        rx = re.compile(r"LISTEN proto=ssh listener=127\.0\.0\.1:(\d+)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(rx)
            if len(found) >= n:
                return [int(m.group(1)) for m in found[:n]]
            if self.proc.poll() is not None:
                raise SystemExit("tarry exited before listening")
            time.sleep(0.05)
        raise SystemExit("tarry did not listen in time")

    def held(self) -> dict[int, float]:
        rx = re.compile(r"CLOSE .* time=(\d+\.\d+) .* listener=127\.0\.0\.1:(\d+)")
        return {int(m.group(2)): float(m.group(1)) for m in self.find(rx)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cap", type=float, default=300.0, help="seconds per cell (all in parallel)")
    ap.add_argument("--delay", type=float, default=10.0, help="the tarpit delay, seconds")
    ap.add_argument("--kexinit-time", type=float, default=10.0, help="kex: KEXINIT drip seconds")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--clients", default=",".join(CLIENTS))
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    clients = [c for c in args.clients.split(",") if c]
    missing = [c for c in clients if command(c, 1) is None]
    clients = [c for c in clients if c not in missing]
    cells = [(c, m) for c in clients for m in modes]
    if not cells:
        raise SystemExit("no client to run")
    fd, path = tempfile.mkstemp(suffix=".toml", prefix="tarry-holdtime-")
    with os.fdopen(fd, "w") as f:
        f.write(config(cells, args.delay, args.kexinit_time))
    tarry = Tarry(path)
    procs: list[subprocess.Popen[bytes]] = []
    capped: set[int] = set()  # indexes of cells still held at the cap
    try:
        ports = dict(zip(cells, tarry.ports(len(cells)), strict=True))
        for cell in cells:
            cmd = command(cell[0], ports[cell])
            assert cmd is not None
            procs.append(
                subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + args.cap
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.5)
    finally:
        for i, p in enumerate(procs):
            if p.poll() is None:
                capped.add(i)
                p.kill()
            p.wait()
        time.sleep(0.5)  # let tarry log the last CLOSE lines of clients that left by themselves
        tarry.stop()
        os.unlink(path)
    held = tarry.held()
    print(
        f"# python bench/holdtime.py --cap {args.cap:g} --delay {args.delay:g} "
        f"--kexinit-time {args.kexinit_time:g} --modes {','.join(modes)} "
        f"--clients {','.join(clients)}"
    )
    print(f"# {platform.node()} {platform.platform()}, Python {platform.python_version()}")
    if missing:
        print(f"# not installed, not run: {', '.join(missing)}")
    print(f"# seconds held per client x mode; >={args.cap:g} = still held at the cap")
    width = max(len(c) for c in clients)
    print(f"| {'client':<{width}} | " + " | ".join(f"{m:>8}" for m in modes) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * 10 for _ in modes) + "|")
    for client in clients:
        row = []
        for mode in modes:
            t = held.get(ports[(client, mode)])
            if cells.index((client, mode)) in capped:
                row.append(f">={args.cap:g}")
            else:
                row.append("?" if t is None else f"{t:.1f}")
        print(f"| {client:<{width}} | " + " | ".join(f"{c:>8}" for c in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
