"""Real clients against the raw stack's parts, in a network namespace the test
creates: held with no kernel socket, the kernel silent, closes seen at once,
and the nftables table cleaned up after a crash and after a normal exit."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from netns import need_root
from support import SSH_OPTS, need, wait_until

_names = itertools.count()


@pytest.fixture
def ns() -> Iterator[str]:
    need_root()
    name = f"tarry-raw-{os.getpid()}-{next(_names)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


class Lines:
    """A process in the namespace with its stdout collected line by line."""

    def __init__(self, ns: str, argv: list[str], stderr: bool = False) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if stderr else subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def find(self, prefix: str, timeout: float = 5.0) -> str:
        return wait_until(
            lambda: next((line for line in self.lines if line.startswith(prefix)), None),
            timeout,
            f"a line starting {prefix!r} in {self.lines[-5:]}",
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=10)


def demo(ns: str, *listen: str, every: float = 0.2, table: bool = True) -> Lines:
    argv = [sys.executable, "-m", "tarry.raw.demo", "--every", str(every)]
    if not table:
        argv.append("--no-table")
    for text in listen:
        argv += ["--listen", text]
    proc = Lines(ns, argv)
    proc.find("READY")
    return proc


def in_ns(ns: str, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def kernel_resets(ns: str) -> int:
    head, values = [
        line.split()[1:]
        for line in in_ns(ns, "cat", "/proc/net/snmp").stdout.splitlines()
        if line.startswith("Tcp:")
    ]
    return int(dict(zip(head, values, strict=True))["OutRsts"])


def opened(server: Lines, seen: int) -> str:
    """The client port of the next OPEN line after the first ``seen``."""
    wait_until(
        lambda: sum(line.startswith("OPEN") for line in server.lines) > seen, 5, "an OPEN line"
    )
    return [line for line in server.lines if line.startswith("OPEN")][seen].split()[2]


def close_within(
    server: Lines, client: subprocess.Popen[str], port: str, limit: float = 1.0
) -> str:
    client.kill()
    start = time.monotonic()
    line = server.find(f"CLOSE 127.0.0.1 {port} ", timeout=limit + 2)
    took = time.monotonic() - start
    assert took <= limit, f"CLOSE came {took:.2f}s after the kill"
    client.wait(timeout=5)
    return line


def test_real_clients_are_held_without_a_socket_and_the_kernel_stays_silent(ns):
    nc, curl = need("nc"), need("curl")
    ssh = need("ssh")
    server = demo(ns, "127.0.0.1:2222=ssh", "127.0.0.1:8080=http", "[::1]:2222=ssh")
    resets = kernel_resets(ns)
    try:
        # nc: a banner line, again and again
        ncp = Lines(ns, [nc, "127.0.0.1", "2222"])
        nc_port = opened(server, 0)
        wait_until(
            lambda: ncp.lines.count("tarry raw demo: please hold") >= 3, 5, "three lines to nc"
        )
        # ssh, with and without ConnectTimeout: it reads our lines as pre-banner lines
        argv = [ssh, "-vvv", "-p", "2222", *SSH_OPTS, "127.0.0.1", "true"]
        sshp = Lines(ns, [*argv[:1], "-o", "ConnectTimeout=5", *argv[1:]], stderr=True)
        ssh_port = opened(server, 1)
        sshp.find("debug1: kex_exchange_identification: banner line 2: tarry raw demo: please hold")
        plain = Lines(ns, argv, stderr=True)
        plain_port = opened(server, 2)
        plain.find("debug1: kex_exchange_identification: banner line 0: tarry raw demo")
        # curl: a status line, then header lines for as long as it waits
        got = in_ns(
            ns,
            curl,
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--max-time",
            "1.5",
            "http://127.0.0.1:8080/",
        )
        assert got.stdout.startswith("HTTP/1.1 200 OK\nX-Tarry: raw-demo\nX-Tarry: raw-demo\n"), got
        assert got.returncode == 28  # timed out: held, as it should be
        # IPv6
        six = Lines(ns, [nc, "-6", "::1", "2222"])
        six.find("tarry raw demo: please hold")
        assert kernel_resets(ns) == resets, "the kernel's TCP sent a RST"
        # killing a client: its CLOSE within one second
        for client, port in ((ncp, nc_port), (sshp, ssh_port), (plain, plain_port)):
            assert close_within(server, client.proc, port).split()[3] in ("closed", "reset")
        six.proc.kill()
        server.find("CLOSE ::1 ")
        assert server.lines.count("READY") == 1
    finally:
        server.stop()
    assert server.lines[-1] == "EXIT"
    assert "tarry" not in in_ns(ns, "nft", "list", "ruleset").stdout


def test_kill_9_then_restart_removes_the_stale_table_and_exit_leaves_no_rule(ns):
    need("nft")
    first = demo(ns, "127.0.0.1:2222=ssh")
    first.stop(signal.SIGKILL)
    assert "table inet tarry" in in_ns(ns, "nft", "list", "ruleset").stdout  # left by the crash
    second = demo(ns, "127.0.0.1:2222=ssh")
    assert any(line.startswith("STALE ") for line in second.lines)
    second.stop()
    assert second.proc.returncode == 0 and second.lines[-1] == "EXIT"
    assert in_ns(ns, "nft", "list", "ruleset").stdout.strip() == ""


def test_a_client_that_closes_gets_fin_and_the_server_closes_on_exit(ns):
    server = demo(ns, "127.0.0.1:2222=ssh")
    code = (
        "import socket, sys\n"
        "s = socket.create_connection(('127.0.0.1', 2222), timeout=5)\n"
        "print(s.recv(100).decode().strip(), flush=True)\n"
        "sys.stdin.readline()\n"  # held until the test says
        "s.settimeout(5)\n"
        "while (got := s.recv(4096)): pass\n"
        "print('EOF', flush=True)\n"
    )
    client = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None and client.stdin is not None
        assert client.stdout.readline().strip() == "tarry raw demo: please hold"
        port = opened(server, 0)
        server.stop()  # the server goes: the client reads to a clean EOF (our FIN)
        assert f"CLOSE 127.0.0.1 {port} shutdown" in server.lines
        client.stdin.write("\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "EOF"
    finally:
        client.kill()
        client.wait(timeout=5)


def test_missing_capabilities_stop_the_demo_with_one_line(ns):
    setpriv = need("setpriv")
    done = in_ns(
        ns,
        setpriv,
        "--inh-caps=-all",
        "--bounding-set=-all",
        sys.executable,
        "-m",
        "tarry.raw.demo",
        "--listen",
        "127.0.0.1:22=ssh",
    )
    assert done.returncode == 2
    assert (
        done.stderr
        == 'tarry.raw.demo: stack = "raw" cannot start: missing CAP_NET_RAW, CAP_NET_ADMIN\n'
    )


def test_without_the_table_the_kernel_does_reset(ns):
    """The control for the silence above: the same client, no table, and the
    kernel's TCP answers the tarpit port with RSTs."""
    nc = need("nc")
    server = demo(ns, "127.0.0.1:2222=ssh", table=False)
    resets = kernel_resets(ns)
    try:
        in_ns(ns, nc, "-w", "1", "127.0.0.1", "2222", timeout=10)
        assert kernel_resets(ns) > resets
    finally:
        server.stop()


LOSSY = """
table inet lossy {
    chain out {
        type filter hook output priority 0; policy accept;
        tcp sport 2222 ip length > 60 numgen inc mod 4 == 1 counter drop
    }
}
"""


def test_lost_lines_are_sent_again_on_the_next_tick(ns):
    """Every fourth line the tarpit sends is dropped on its way out: the client
    reports each hole with a SACK block, and the bytes go again on the next
    tick, so it still reads whole lines, in order, at the pace of the ticks."""
    nc = need("nc")
    loaded = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
        input=LOSSY,
        text=True,
        capture_output=True,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    server = demo(ns, "127.0.0.1:2222=ssh", every=0.1)
    try:
        got = in_ns(ns, "timeout", "2", nc, "127.0.0.1", "2222")
    finally:
        server.stop()
    lines = got.stdout.splitlines()
    assert set(lines[:-1]) == {"tarry raw demo: please hold"}, lines[:5]
    assert "tarry raw demo: please hold".startswith(lines[-1])
    assert len(lines) >= 10, len(lines)  # without the resend, the stream stops at the first hole
    dropped = in_ns(ns, "nft", "list", "table", "inet", "lossy").stdout
    assert int(dropped.split("counter packets ")[1].split()[0]) >= 3
