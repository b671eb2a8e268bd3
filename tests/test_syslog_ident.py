"""``tarry ssh -s`` through a real rsyslogd is endlessh under syslog (issue 18 item 4).

The fail2ban maintainer's endlessh regex is anchored on the syslog tag,
``endlessh[pid]:``, so a drop-in must log under that tag, with the PID, on the
daemon facility, and its settings lines too. The test starts its own rsyslogd
(own config, socket, output files in a temp dir; ended by PID), points
``tarry ssh -s`` at that socket (``TARRY_SYSLOG_ADDRESS``), holds real TCP
clients, and runs the real ``fail2ban-regex`` on what rsyslogd wrote.
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import Tarry, end_process, free_port, need, start_tarry, wait_until

# The syslog-anchored endlessh regex (as quoted in issue 18 from fail2ban's
# maintainer: ``endlessh\[\d+\]: ... ACCEPT host=<ADDR>``), over the whole line
# fail2ban is left with after the date: " <hostname> endlessh[123]: ACCEPT ..."
ANCHORED = r"^\s*\S+ endlessh\[\d+\]: ACCEPT host=<ADDR> port=\d+ fd=\d+ n=\d+/\d+$"

RSYSLOG_CONF = """\
global(workDirectory="{dir}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{dir}/log.sock" CreatePath="on")
daemon.* action(type="omfile" file="{dir}/daemon.log" template="RSYSLOG_TraditionalFileFormat")
*.*;daemon.none action(type="omfile" file="{dir}/other.log" template="RSYSLOG_TraditionalFileFormat")
"""


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Path]:
    """An rsyslogd of the test's own; yields its directory (log.sock, daemon.log)."""
    binary = need("rsyslogd")
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(dir=tmp_path))
    proc = subprocess.Popen(
        [binary, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslogd.pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: (tmp_path / "log.sock").exists(), 10, "rsyslogd's socket")
        yield tmp_path
    finally:
        end_process(proc)


def run_ssh(logdir: Path, *flags: str, clients: int = 3) -> tuple[int, list[str]]:
    """``tarry ssh -s -v`` held ``clients`` real TCP clients; its PID and the daemon lines."""
    port = free_port()
    t = Tarry(
        ["ssh", "-s", "-v", "-d", "50", "-p", str(port), *flags],
        env={"TARRY_SYSLOG_ADDRESS": str(logdir / "log.sock")},
    )
    daemon = logdir / "daemon.log"

    def lines() -> list[str]:
        return daemon.read_text().splitlines() if daemon.exists() else []

    try:
        wait_until(lambda: any("BindFamily" in x for x in lines()), 10, "the settings lines")
        socks = [
            wait_until(lambda: _connect(port), 5, "tarry ssh to listen") for _ in range(clients)
        ]
        for s in socks:
            s.recv(1)  # a banner line came: the client is held
            s.close()
        wait_until(lambda: sum(" CLOSE " in x for x in lines()) == clients, 10, "the CLOSE lines")
    finally:
        t.stop()
    return t.proc.pid, lines()


def _connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return None


def test_ssh_s_logs_as_endlessh_pid_on_daemon_and_fail2ban_matches(
    rsyslog: Path, tmp_path: Path
) -> None:
    pid, lines = run_ssh(rsyslog)
    tags = {re.search(r" (\S+): ", x).group(1) for x in lines}  # type: ignore[union-attr]
    assert tags == {f"endlessh[{pid}]"}, lines
    # every line is on the daemon facility, the settings lines included
    for setting in ("Port ", "Delay 50", "MaxLineLength ", "MaxClients ", "BindFamily "):
        assert any(f"endlessh[{pid}]: {setting}" in x for x in lines), (setting, lines)
    other = rsyslog / "other.log"
    assert not other.exists() or other.read_text() == ""

    f2b = need("fail2ban-regex")
    log = tmp_path / "syslog"
    log.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [f2b, "--print-all-matched", str(log), ANCHORED],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    matched = re.search(r"Failregex: (\d+) total", out)
    assert matched is not None, out
    assert int(matched.group(1)) == 3, out
    block = out.split("Matched line(s):", 1)[1].split("`-", 1)[0]
    hosts = re.findall(r"endlessh\[\d+\]: ACCEPT host=(\S+)", block)
    assert len(hosts) == 3 and set(hosts) <= {"::ffff:127.0.0.1", "127.0.0.1"}, out


def test_syslog_ident_changes_the_tag(rsyslog: Path) -> None:
    pid, lines = run_ssh(rsyslog, "--syslog-ident", "tarpit", clients=1)
    assert lines and all(f" tarpit[{pid}]: " in x for x in lines), lines


def test_bad_syslog_ident_is_one_line() -> None:
    t = Tarry(["ssh", "-s", "--syslog-ident", "has space"])
    assert t.proc.wait(10) == 1
    t.stop()
    assert len(t.err) == 1 and "syslog ident" in t.err[0], t.err


def test_serve_takes_log_syslog_ident(rsyslog: Path) -> None:
    t = start_tarry(
        f"""
[[tarpit]]
protocol = "ssh"
listen = ["127.0.0.1:0"]
delay = 0.05

[log]
syslog = true
syslog_address = "{rsyslog / "log.sock"}"
syslog_ident = "endlessh"
"""
    )
    daemon = rsyslog / "daemon.log"
    try:
        s = wait_until(lambda: _connect(t.port()), 5, "tarry serve to listen")
        s.recv(1)
        s.close()
        wait_until(lambda: daemon.exists() and " CLOSE " in daemon.read_text(), 10, "CLOSE")
    finally:
        t.stop()
    lines = daemon.read_text().splitlines()
    assert lines and all(f" endlessh[{t.proc.pid}]: " in x for x in lines), lines


def test_ssh_f_missing_file_warns_and_runs_on_the_defaults(tmp_path: Path) -> None:
    """endlessh's config_load skips a file fopen cannot open and runs on (its
    source, endlessh.c); tarry does too, and says so on stderr only."""
    port = free_port()
    missing = tmp_path / "no-such-config"
    t = Tarry(["ssh", "-v", "-d", "50", "-f", str(missing), "-p", str(port)])
    try:
        t.wait_for(rf"Port {port}$", timeout=10)
        t.wait_for(r"Delay 50$")
        t.wait_for(r"MaxLineLength 32$")  # endlessh's default: nothing was read
        s = wait_until(lambda: _connect(port), 5, "tarry ssh to listen")
        s.recv(1)
        s.close()
        t.wait_for(r" CLOSE host=")
    finally:
        assert t.stop() == 0
    assert len(t.err) == 1 and str(missing) in t.err[0] and "no such" in t.err[0], t.err
