"""Each SSH mode against each real client, through a real ``tarry serve``.

One table: for every (client, mode) cell, either the client must still be held
(connected, not failed) after at least 20 delays, or it must have left at its
own documented limit, with its own error message, at the time that limit
predicts (docs/ssh-modes.md). Every cell gets its own listener, so the CLOSE
line of a cell is known, and all cells run at once to keep the test short.
"""

from __future__ import annotations

import importlib.util
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import Tarry, need, need_module, ssh_argv, start_tarry, wait_until

HOLDTIME = Path(__file__).resolve().parents[1] / "bench" / "holdtime.py"
_spec = importlib.util.spec_from_file_location("holdtime", HOLDTIME)
assert _spec is not None and _spec.loader is not None
BENCH_HOLDTIME = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(BENCH_HOLDTIME)

pytestmark = pytest.mark.realclient

DELAY = 0.05
KEXINIT_TIME = 0.5
CHECK = 3.0  # >= 20 delays, and past ssh -o ConnectTimeout=2
LONG_CHECK = 17.0  # past paramiko's 15 s handshake timer
ASYNCSSH_LOGIN = 2.5  # asyncssh's login_timeout, shortened from its 120 s default

PARAMIKO, ASYNCSSH = BENCH_HOLDTIME.PARAMIKO, BENCH_HOLDTIME.ASYNCSSH  # the same scripts


def command(client: str, port: int) -> list[str]:
    if client == "ssh":
        return ssh_argv(port, host="root@127.0.0.1")
    if client == "ssh-ct2":
        ct = ["-o", "ConnectTimeout=2"]
        return ssh_argv(port, *ct, host="root@127.0.0.1")
    if client == "dbclient":
        return [need("dbclient"), "-y", "-y", "-p", str(port), "root@127.0.0.1", "true"]
    if client == "plink":
        return [need("plink"), "-batch", "-ssh", "-l", "root", "-P", str(port), "127.0.0.1", "true"]
    if client == "paramiko":
        need_module("paramiko")
        return [sys.executable, "-c", PARAMIKO, str(port)]
    if client == "asyncssh":
        need_module("asyncssh")
        return [sys.executable, "-c", ASYNCSSH, str(port), str(ASYNCSSH_LOGIN)]
    raise AssertionError(client)


@dataclass(frozen=True)
class Held:
    """Still connected, and not failed, at CHECK (and at LONG_CHECK when ``long``)."""

    long: bool = False


@dataclass(frozen=True)
class Limit:
    """Left at its own documented limit: after about ``seconds``, saying ``says``."""

    seconds: float
    says: str
    why: str


# The documented limits at DELAY = 0.05 s (docs/ssh-modes.md has the sources):
SSH_CT = Limit(2.0, "timed out during banner exchange", "ConnectTimeout bounds the banner")
PARAMIKO_LINES = Limit(100 * DELAY, "Indecipherable protocol version", "100 pre-banner lines")
# dropbear reports its own 50-line limit as the server having closed
DROPBEAR_LINES = Limit(50 * DELAY, "Remote closed the connection", "50 pre-banner lines")
ASYNCSSH_LOGIN_LIMIT = Limit(ASYNCSSH_LOGIN, "Login timeout expired", "login_timeout")

EXPECT: dict[tuple[str, str], Held | Limit] = {
    ("ssh", "banner"): Held(),
    ("ssh", "drip"): Held(),
    ("ssh", "kex"): Held(),
    ("ssh", "adaptive"): Held(),
    ("ssh-ct2", "banner"): SSH_CT,
    ("ssh-ct2", "drip"): SSH_CT,
    ("ssh-ct2", "kex"): Held(),
    ("ssh-ct2", "adaptive"): Held(),
    ("paramiko", "banner"): PARAMIKO_LINES,
    ("paramiko", "drip"): Held(),
    ("paramiko", "kex"): Held(long=True),
    ("paramiko", "adaptive"): Held(long=True),
    ("asyncssh", "banner"): ASYNCSSH_LOGIN_LIMIT,
    ("asyncssh", "drip"): ASYNCSSH_LOGIN_LIMIT,
    ("asyncssh", "kex"): ASYNCSSH_LOGIN_LIMIT,
    ("asyncssh", "adaptive"): ASYNCSSH_LOGIN_LIMIT,
    ("dbclient", "banner"): DROPBEAR_LINES,
    ("dbclient", "drip"): Held(),
    ("dbclient", "kex"): Held(),
    ("dbclient", "adaptive"): Held(),
    ("plink", "banner"): Held(),
    ("plink", "drip"): Held(),
    ("plink", "kex"): Held(),
    ("plink", "adaptive"): Held(),
}


def config(cells: list[tuple[str, str]]) -> str:
    out = []
    for client, mode in cells:
        out += [
            "[[tarpit]]",
            'protocol = "ssh"',
            'listen = ["127.0.0.1:0"]',
            f'name = "{client}-{mode}"',
            f"delay = {DELAY}",
            f'mode = "{mode}"',
            f"kexinit_time = {KEXINIT_TIME}",
            "",
        ]
    return "\n".join(out)


def held_for(tarry: Tarry, port: int) -> float:
    """Seconds tarry held the client of the listener on ``port`` (its CLOSE line)."""
    m = tarry.wait_for(rf"CLOSE .* time=(\d+\.\d+) .* listener=127\.0\.0\.1:{port}\b", 5)
    return float(m.group(1))


def test_every_mode_against_every_client() -> None:
    cells = list(EXPECT)
    commands = {cell: command(cell[0], 0) for cell in cells}  # skips/fails early
    assert commands
    tarry = start_tarry(config(cells))
    procs: dict[tuple[str, str], subprocess.Popen[str]] = {}
    spawned: dict[tuple[str, str], float] = {}
    ended: dict[tuple[str, str], float] = {}  # when each client process exited

    def spawn(batch: list[tuple[str, str]]) -> None:
        for cell in batch:
            spawned[cell] = time.monotonic()
            procs[cell] = subprocess.Popen(
                command(cell[0], ports[cell]),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        # every client really connected (so "still running" means held, not stuck)
        for cell in batch:
            tarry.wait_for(rf"ACCEPT .* listener=127\.0\.0\.1:{ports[cell]}\b", timeout=15)

    def settle(until: float) -> None:
        while time.monotonic() < until:
            for cell, p in procs.items():
                if cell not in ended and p.poll() is not None:
                    ended[cell] = time.monotonic()
            time.sleep(0.02)

    def output(cell: tuple[str, str]) -> str:
        return procs[cell].stdout.read() if procs[cell].stdout else ""

    try:
        ports = {cell: tarry.port("ssh", i) for i, cell in enumerate(cells)}
        # the Python clients first: their imports load the machine, which would
        # skew the timing of the native ones, so those start once these are in
        spawn([c for c in cells if c[0] in ("paramiko", "asyncssh")])
        spawn([c for c in cells if c[0] not in ("paramiko", "asyncssh")])
        problems = []
        held = {cell: w for cell, w in EXPECT.items() if isinstance(w, Held)}
        for check, cells_now in (
            (CHECK, list(held)),
            (LONG_CHECK, [c for c, w in held.items() if w.long]),
        ):
            if not cells_now:
                continue
            settle(max(spawned[c] for c in cells_now) + check)
            for cell in cells_now:
                if cell in ended and ended[cell] - spawned[cell] < check:
                    took = ended[cell] - spawned[cell]
                    problems.append(f"{cell}: left after {took:.2f}s, not held: {output(cell)!r}")
                elif tarry.count(rf"CLOSE .*:{ports[cell]}\b"):
                    problems.append(f"{cell}: tarry logged a CLOSE before {check}s")
        # the limited ones: wait for them to leave, then check when and why, as
        # the client saw it (tarry's clock starts at accept, which a loaded
        # machine may delay past the client's connect)
        limits = {cell: w for cell, w in EXPECT.items() if isinstance(w, Limit)}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(c in ended for c in limits):
            settle(time.monotonic() + 0.1)
        for cell, want in limits.items():
            assert cell in ended, f"{cell} never left"
            out = output(cell)
            if cell[0] in ("paramiko", "asyncssh"):  # they time themselves, after imports
                m = re.search(r"^(\d+\.\d+) ", out, re.MULTILINE)
                assert m, (cell, out)
                took = float(m.group(1))
            else:
                took = ended[cell] - spawned[cell]
            held_for(tarry, ports[cell])  # and tarry saw it leave
            if not want.seconds * 0.8 <= took <= want.seconds * 2 + 1.0:
                problems.append(
                    f"{cell}: left after {took:.2f}s, expected ~{want.seconds}s: {out!r}"
                )
            if want.says not in out:
                problems.append(f"{cell}: expected {want.says!r} ({want.why}), got {out!r}")
        assert not problems, "\n".join(problems)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
        tarry.stop()
    # the kex cells got far enough to send their KEXINIT: tarry logged a HASSH
    for cell in cells:
        if cell[1] in ("kex", "adaptive") or cell == ("dbclient", "drip"):
            line = tarry.wait_for(rf"CLOSE .* listener=127\.0\.0\.1:{ports[cell]}\b.*", 1)
            assert re.search(r" hassh=[0-9a-f]{32}\b", line.group(0)), (cell, line.group(0))


def adaptive_config(delay: float) -> str:
    return (
        f'[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:0"]\ndelay = {delay}\n'
        f'mode = "adaptive"\nkexinit_time = {KEXINIT_TIME}\n'
    )


def test_adaptive_paces_a_returning_openssh_under_its_server_alive_timeout() -> None:
    """ssh with ServerAliveInterval=1, ServerAliveCountMax=2 gives up on a server
    silent for 2 s, even during key exchange. IGNOREs every 5 s lose it; on its
    next visit from the same address tarry paces under 2 s and holds it."""
    alive = ["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"]
    tarry = start_tarry(adaptive_config(5.0))
    procs: list[subprocess.Popen[str]] = []
    try:
        port = tarry.port("ssh")
        cmd = ssh_argv(port, *alive, host="root@127.0.0.1")
        first = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(first)
        m = tarry.wait_for(r"CLOSE .* time=(\d+\.\d+) .*reason=closed .* pace=5 ", timeout=10)
        assert float(m.group(1)) < 5.0  # it left before our first IGNORE
        first.communicate(timeout=5)
        assert first.returncode == 255  # ssh failed: its ServerAlive timeout
        second = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(second)
        tarry.wait_for(r"ACCEPT ", timeout=10, after=len(tarry.lines) - 1)
        time.sleep(8.0)  # four times its patience
        assert second.poll() is None, second.communicate()[0]
        second.kill()
        wait_until(lambda: tarry.count(r"CLOSE ") >= 2, timeout=5, what="the second CLOSE")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        tarry.stop()
    paces = [float(x) for x in re.findall(r"CLOSE .* pace=([\d.]+) ", "\n".join(tarry.lines))]
    assert paces[0] == 5.0 and 0.5 <= paces[1] < 2.0 / 1.25, paces


def test_adaptive_gives_a_banner_grabber_no_version_on_its_next_visit() -> None:
    tarry = start_tarry(adaptive_config(0.2))
    try:
        port = tarry.port("ssh")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")
            got = b""
            while b"\n" not in got:
                got += s.recv(1024)
            assert got.startswith(b"SSH-2.0-OpenSSH_")
        tarry.wait_for(r"CLOSE .* mode=kex ", timeout=5)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")
            got = b""
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and len(got) < 8:
                got += s.recv(1024)
            assert len(got) >= 8 and not got.startswith(b"SSH-"), got
            assert re.match(rb"^[\x20-\x7e\r\n]+$", got), got
        tarry.wait_for(r"CLOSE .* mode=drip ", timeout=5)
    finally:
        tarry.stop()
