"""Run a real tarry process for a test and read what it logs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(program: str) -> str:
    """The path of a real client; skip locally when it is missing, fail in CI."""
    path = shutil.which(program)
    if path is None:
        if IN_CI:
            pytest.fail(f"{program} is not installed, and CI must not skip real-client tests")
        pytest.skip(f"{program} is not installed")
    return path


def need_module(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        if IN_CI:
            pytest.fail(f"Python package {name} is missing, and CI must not skip real-client tests")
        pytest.skip(f"Python package {name} is not installed")


# OpenSSH, non-interactive, trusting any host key, reading no user config
SSH_OPTS = [
    "-F", "/dev/null",
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
]  # fmt: skip


def ssh_argv(port: int, *options: str, host: str = "127.0.0.1") -> list[str]:
    """An ``ssh`` command line that tries to log in to a tarpit on ``port``."""
    return [need("ssh"), "-p", str(port), *SSH_OPTS, *options, host, "true"]


def grab_banner(port: int, source: str) -> None:
    """A banner grabber from ``source``: say its version (ssh-keyscan sends
    OpenSSH's), read the server's, then leave."""
    with socket.socket() as s:
        s.bind((source, 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")
        got = b""
        deadline = time.monotonic() + 10
        while b"SSH-2.0-" not in got:
            assert time.monotonic() < deadline, f"no version string in 10 s: {got[-200:]!r}"
            chunk = s.recv(4096)
            assert chunk, "closed before a version string"
            got += chunk


def free_port() -> int:
    """A port nobody listens on, for programs that must be told one (``tarry ssh
    -p``, Prometheus). Picked below the ephemeral range, so that the many
    outgoing loopback connections of other tests cannot take it meanwhile."""
    import random
    import socket

    low, high = 10000, 32000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            high = min(high, int(f.read().split()[0]) - 1)
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        port = random.randint(low, high)
        try:
            with socket.socket(socket.AF_INET6) as s:  # "*": both families, as tarry binds
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                s.bind(("::", port))
            return port
        except OSError:
            continue
    raise AssertionError("no free port found")


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it is truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class Tarry:
    """A tarry process with its stdout collected line by line."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        nofile: int | None = None,
        prefix: list[str] | None = None,
        read_stdout: bool = True,
        python: list[str] | None = None,
    ) -> None:
        """``prefix`` runs tarry under another program (e.g. systemd-socket-activate);
        without ``read_stdout``, its stdout is a pipe that nobody reads (until
        ``drain_stdout``): a log reader that stopped. ``python`` is the interpreter
        command (e.g. with ``-S``, to hide site-packages)."""
        self.lines: list[str] = []
        self.err: list[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [*(prefix or []), *(python or [sys.executable]), "-m", "tarry", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            preexec_fn=None if nofile is None else lambda: _limit_fds(nofile),
        )
        if read_stdout:
            self.drain_stdout()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True).start()

    def drain_stdout(self) -> None:
        """Read tarry's stdout from now on, into ``lines``."""
        threading.Thread(
            target=self._pump, args=(self.proc.stdout, self.lines), daemon=True
        ).start()

    def _pump(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._lock:
                into.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 5.0, after: int = 0) -> re.Match[str]:
        """The first log line from index ``after`` on that matches ``pattern``."""
        rx = re.compile(pattern)

        def find() -> re.Match[str] | None:
            with self._lock:
                for line in self.lines[after:]:
                    m = rx.search(line)
                    if m:
                        return m
            if self.proc.poll() is not None:
                raise AssertionError(f"tarry exited ({self.proc.returncode}): {self.err[-5:]}")
            return None

        return wait_until(find, timeout, f"a log line matching {pattern!r}")

    def count(self, pattern: str) -> int:
        rx = re.compile(pattern)
        with self._lock:
            return sum(1 for line in self.lines if rx.search(line))

    def port(self, proto: str = "ssh", index: int = 0) -> int:
        self.wait_for(rf"LISTEN proto={proto} ")
        rx = re.compile(rf"LISTEN proto={proto} listener=\S*:(\d+)")
        with self._lock:
            ports = [int(m.group(1)) for line in self.lines if (m := rx.search(line))]
        return ports[index]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        time.sleep(0.05)  # let the reader threads drain the pipes
        return self.proc.returncode

    def rss_kb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")


def hold_then_kill_9(t: Tarry, n: int, stay: float) -> tuple[dict[int, float], dict[int, float]]:
    """Hold ``n`` clients on ``t``'s tarpit for ``stay`` s, then ``kill -9`` it.
    By client port: the least each was held (from just after its connect to
    the signal) and the most (from just before its connect until tarry died)."""
    clients: dict[int, tuple[socket.socket, float, float]] = {}  # before, after connect
    try:
        port = t.port()
        for _ in range(n):
            before = time.time()
            s = socket.create_connection(("127.0.0.1", port), 5)
            clients[s.getsockname()[1]] = (s, before, time.time())
        t.wait_for(rf"ACCEPT .* n={n}/")
        time.sleep(stay)  # held
        killed = time.time()
        t.proc.send_signal(signal.SIGKILL)
        t.proc.wait(10)
        dead = time.time()
    finally:
        t.stop()
        for s, *_ in clients.values():
            s.close()
    held = {p: killed - after for p, (_, _, after) in clients.items()}
    most = {p: dead - before for p, (_, before, _) in clients.items()}
    return held, most


def end_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """End a helper server the test started (by its PID): SIGTERM, then SIGKILL."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _limit_fds(n: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


ADMIN_DEFAULT_GROUP = pytest.mark.xdist_group("admin-default-port")
"""Tests that run tarry with the default admin port (127.0.0.1:8787), or hold it
themselves, run one at a time on one xdist worker (``--dist loadgroup``)."""


def start_tarry(
    config_text: str,
    extra_args: list[str] | None = None,
    default_admin: bool = False,
    **kw: Any,
) -> Tarry:
    """``tarry serve`` with ``config_text`` written to a temporary file.

    Tests run as root in CI, where tarry would switch to nobody after binding;
    unless the test is about that, it keeps running as the test's user. A
    config with no [admin] table gets a dashboard on a free port, unless
    ``default_admin`` (then mark the test ADMIN_DEFAULT_GROUP)."""
    if os.geteuid() == 0 and "[privileges]" not in config_text:
        config_text += "\n[privileges]\nallow_root = true\n"
    if "[admin]" not in config_text and not default_admin:
        # tests run in parallel (pytest-xdist): the default 127.0.0.1:8787 is one
        # port for all of them; tests of that default use ADMIN_DEFAULT_GROUP
        config_text += '\n[admin]\nlisten = "127.0.0.1:0"\n'
    fd, path = tempfile.mkstemp(suffix=".toml", prefix="tarry-test-")
    with os.fdopen(fd, "w") as f:
        f.write(config_text)
    t = Tarry(["serve", "-c", path, *(extra_args or [])], **kw)
    t.config_path = path  # type: ignore[attr-defined]
    return t
