"""Real SSH clients against the endlessh-style banner tarpit (``tarry ssh``)."""

from __future__ import annotations

import re
import socket
import subprocess
import time

from support import Tarry, free_port, need_module, ssh_argv, wait_until

DELAY_MS = 50


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def start_banner(delay_ms: int = DELAY_MS) -> tuple[Tarry, int]:
    port = free_port()
    t = Tarry(["ssh", "-v", "-4", "-d", str(delay_ms), "-p", str(port)])
    wait_until(lambda: listening(port), 10, "tarry ssh to listen")
    t.wait_for(r" CLOSE ")  # the probe connection above
    return t, port


def test_openssh_is_still_waiting_after_many_delays() -> None:
    t, port = start_banner()
    proc = subprocess.Popen(
        ssh_argv(port, host="nobody@127.0.0.1"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: t.count(r" ACCEPT ") == 2, 5, "ssh's connection")
        time.sleep(20 * DELAY_MS / 1000)  # 20 delays: 20 lines sent, still no version string
        assert proc.poll() is None, f"ssh gave up: {proc.communicate()[1]}"
        assert t.count(r" CLOSE ") == 1  # only the probe
        # the bytes really flowed to it: the server counts what it sent
        t.signal(10)  # SIGUSR1
        line = t.wait_for(r" TOTALS ").string
        assert int(re.search(r"bytes=(\d+)", line).group(1)) >= 15 * 3
    finally:
        proc.kill()
        proc.wait()
        t.stop()
    # the client's own identification string was learned (seen on CLOSE)
    close = [x for x in t.lines if " CLOSE " in x][1]
    assert re.search(r" CLOSE host=127\.0\.0\.1 port=\d+ fd=\d+ time=\d+\.\d{3} bytes=\d+$", close)


def test_openssh_identification_is_logged_by_serve() -> None:
    from support import start_tarry

    t = start_tarry(
        '[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:0"]\ndelay = 0.05\n'
        '[admin]\nlisten = ""\n[history]\nenabled = false\n'
    )
    proc = None
    try:
        port = t.port()
        proc = subprocess.Popen(
            ssh_argv(port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        t.wait_for(r" ACCEPT ")
        time.sleep(0.5)
        assert proc.poll() is None
        proc.kill()
        proc.wait()
        close = t.wait_for(r" CLOSE ", timeout=2).string
        assert re.search(r"ssh_id=\"?SSH-2\.0-OpenSSH_\S+", close), close
    finally:
        if proc and proc.poll() is None:
            proc.kill()
        t.stop()


def _paramiko_hold(delay_ms: int, banner_timeout: float) -> tuple[str, float, Tarry]:
    paramiko = need_module("paramiko")
    t, port = start_banner(delay_ms)
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = banner_timeout
    started = time.monotonic()
    try:
        transport.start_client(timeout=60)
    except paramiko.SSHException as exc:
        return str(exc), time.monotonic() - started, t
    finally:
        transport.close()
    raise AssertionError("paramiko completed a handshake with a tarpit")


def test_paramiko_is_held_until_its_own_banner_timeout() -> None:
    """paramiko waits ``banner_timeout`` (15 s by default) for the first line,
    then 2 s for each further line, for at most 100 lines. A first line slower
    than its banner timeout: it leaves exactly at that timeout."""
    error, held, t = _paramiko_hold(delay_ms=3000, banner_timeout=1.5)
    try:
        assert "Error reading SSH protocol banner" in error, error
        assert 1.4 <= held < 2.5, held
        wait_until(lambda: t.count(r" CLOSE ") == 2, 5, "the CLOSE")
    finally:
        t.stop()


def test_paramiko_fast_lines_hold_it_until_its_line_cap() -> None:
    """Lines faster than its 2 s per-line timeout: it reads its 100 lines, then gives up."""
    error, held, t = _paramiko_hold(delay_ms=DELAY_MS, banner_timeout=1.5)
    try:
        assert "Indecipherable protocol version" in error, error
        assert 99 * DELAY_MS / 1000 <= held < 100 * DELAY_MS / 1000 + 3, held
        wait_until(lambda: t.count(r" CLOSE ") == 2, 5, "the CLOSE")
        close = [x for x in t.lines if " CLOSE " in x][1]
        assert float(re.search(r"time=(\d+\.\d+)", close).group(1)) >= 99 * DELAY_MS / 1000
    finally:
        t.stop()
