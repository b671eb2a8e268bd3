"""What the database baits' real-client tests share: a tarry with one fast and
one slow listener of a protocol, and its CLOSE lines."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from support import Tarry, end_process, need, start_tarry

FAST, SLOW = 0.002, 0.2  # seconds a byte: dialogues that finish; clients that are held


def start_two_speeds(proto: str, state_dir: object) -> Tarry:
    """``tarry serve`` with listener 0 at FAST (no per-address cap: brute-forcers
    open many connections) and listener 1 at SLOW; its history is kept."""
    t = start_tarry(
        "[history]\nflush_interval = 0.1\n"
        f'[[tarpit]]\nprotocol = "{proto}"\nlisten = ["127.0.0.1:0"]\ndelay = {FAST}\n'
        "max_clients_per_ip = 0\n"
        f'[[tarpit]]\nprotocol = "{proto}"\nlisten = ["127.0.0.1:0"]\ndelay = {SLOW}\n',
        env={"XDG_STATE_HOME": str(state_dir)},
    )
    t.port(proto)
    t.history = Path(str(state_dir)) / "tarry" / "history.sqlite3"  # type: ignore[attr-defined]
    return t


def close_line(tarry: Tarry, proto: str, pattern: str, timeout: float = 20.0) -> str:
    """The first CLOSE line of ``proto`` that matches ``pattern``."""
    return tarry.wait_for(rf" CLOSE proto={proto} .*{pattern}", timeout).string


def patator(module: str, port: int, user: str, where: Path) -> str:
    """patator's ``module`` over 100 passwords (pw000..pw099), 10 threads, no
    retries: its whole output."""
    passwords = where / "passwords.txt"
    passwords.write_text("".join(f"pw{i:03d}\n" for i in range(100)))
    argv = [
        need("patator"), module, "host=127.0.0.1", f"port={port}", f"user={user}",
        "password=FILE0", f"0={passwords}", "-t", "10", "--max-retries", "0",
    ]  # fmt: skip
    got = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    return got.stdout + got.stderr


HELD = 20 * SLOW  # how long a held client is watched: many of its own timeouts


def held_program(argv: list[str], env: dict[str, str] | None = None) -> None:
    """``argv`` must still be waiting after HELD seconds; then it is ended."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        time.sleep(HELD)
        assert proc.poll() is None, proc.communicate()
    finally:
        end_process(proc)


def held_call(call: Callable[[], object]) -> None:
    """``call`` (a client library's connect or command) must still be waiting
    after HELD seconds, nothing raised; its thread ends when tarry stops."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(HELD)
    assert thread.is_alive() and not failed, failed
