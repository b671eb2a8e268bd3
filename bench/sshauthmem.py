"""Userland memory per client held in the SSH ``auth`` mode, with real clients.

Starts ``tarry serve`` with one SSH listener in ``auth`` mode, connects N/2
asyncssh clients that each try a password (so each has completed the key
exchange and waits for its refusal, which comes at 0.8 x asyncssh's 120 s
login_timeout), waits until tarry is idle, records its RSS, connects N/2 more,
and reports the marginal cost per client: (RSS delta) / (N/2). The same run in
``kex`` mode gives today's cost for comparison. Loopback only; the tarry it
started is ended by its PID.

Usage: python bench/sshauthmem.py [-n 256] [--modes auth,kex]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncssh

from sshmem import rss  # bench/ is the script's own directory

REPO = Path(__file__).resolve().parent.parent


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_idle(pid: int, quiet: float = 1.0, limit: float = 60.0) -> None:
    """Until tarry has used no CPU for ``quiet`` seconds: every client is waiting."""
    end = time.monotonic() + limit
    last, since = cpu_ticks(pid), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.2)
        now = cpu_ticks(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
    raise RuntimeError("tarry never went idle")


async def attempt(port: int, i: int, stop: asyncio.Event) -> None:
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username="root",
            password=f"pw{i}",
            known_hosts=None,
            client_keys=None,
            agent_path=None,
            connect_timeout=30,
            login_timeout=600,
        ):
            pass
    except (TimeoutError, asyncssh.Error, OSError):
        pass


async def hold(port: int, n: int, pid: int) -> tuple[int, int]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(attempt(port, i, stop)) for i in range(n // 2)]
    await asyncio.sleep(1.0)
    await asyncio.to_thread(wait_idle, pid)
    half = rss(pid)
    tasks += [asyncio.create_task(attempt(port, i, stop)) for i in range(n // 2, n)]
    await asyncio.sleep(1.0)
    await asyncio.to_thread(wait_idle, pid)
    full = rss(pid)
    alive = sum(not t.done() for t in tasks)
    if alive < n:
        raise RuntimeError(f"only {alive} of {n} clients are still waiting")
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return half, full


def measure(mode: str, n: int) -> float:
    fd, path = tempfile.mkstemp(suffix=".toml", prefix="tarry-sshauthmem-")
    with os.fdopen(fd, "w") as f:
        f.write(
            f'[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:0"]\ndelay = 10\n'
            f'mode = "{mode}"\nmax_auth_clients = {n}\nkexinit_time = 0\nmax_clients_per_ip = 0\n'
            "\n[privileges]\nallow_root = true\n"
        )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tarry", "serve", "-c", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        port = 0
        for line in proc.stdout:
            m = re.search(r"LISTEN proto=ssh listener=\S*:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        half, full = asyncio.run(hold(port, n, proc.pid))
        return (full - half) / (n // 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.unlink(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=256, help="clients held at the end")
    ap.add_argument("--modes", default="auth,kex")
    args = ap.parse_args()
    print("| mode | clients | RSS bytes per client |")
    print("| --- | --- | --- |")
    for mode in args.modes.split(","):
        print(f"| {mode} | {args.n} | {measure(mode, args.n):,.0f} |", flush=True)


if __name__ == "__main__":
    main()
