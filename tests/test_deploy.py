"""Deployment, for real: systemd socket activation with OpenSSH trapped through it,
sd_notify on a datagram socket the test reads, privilege drop as root, and the
event loop choice. Loopback only."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from support import IN_CI, Tarry, need, need_module, start_tarry, wait_until
from test_engine import connect, free_port, read_lines, ssh_config

NO_HISTORY = '[history]\nenabled = false\n[admin]\nlisten = ""\n'
ROOT = os.geteuid() == 0
STAY_ROOT = "[privileges]\nallow_root = true\n"


@pytest.fixture
def procs():
    started: list[Tarry] = []
    yield started
    for t in started:
        t.stop()


def write(tmp: Path, text: str) -> str:
    path = tmp / "tarry.toml"
    path.write_text(text)
    return str(path)


# ---- socket activation ----------------------------------------------------------


def activated(config: str, port: int, fdname: str, **env: str) -> Tarry:
    """tarry serve under systemd-socket-activate, which binds ``port`` and passes it."""
    prog = need("systemd-socket-activate")
    prefix = [prog, "-l", f"127.0.0.1:{port}", f"--fdname={fdname}"]
    for var in ("PYTHONPATH", "XDG_STATE_HOME", *env):
        prefix += ["-E", var]
    return Tarry(["serve", "-c", config], env=env, prefix=prefix)


def ssh_client(port: int) -> subprocess.Popen:
    """OpenSSH, verbose, so it reports every banner line it is made to read."""
    return subprocess.Popen(
        [
            need("ssh"),
            "-v",
            "-p",
            str(port),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=60",
            "-o",
            "ConnectionAttempts=1",
            "tarry-test@127.0.0.1",
            "true",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def banner_lines(client: subprocess.Popen, n: int, timeout: float = 10.0) -> list[str]:
    """OpenSSH's debug output, until it has reported ``n`` banner lines."""
    if not hasattr(client, "debug"):
        client.debug = []  # type: ignore[attr-defined]

        def pump() -> None:
            for line in client.stderr:  # type: ignore[union-attr]
                client.debug.append(line)  # type: ignore[attr-defined]

        threading.Thread(target=pump, daemon=True).start()

    def enough() -> list[str] | None:
        text = "".join(client.debug)  # type: ignore[attr-defined]
        seen = re.findall(r"kex_exchange_identification: banner line \d+: (.*)", text)
        return seen if len(seen) >= n else None

    return wait_until(enough, timeout, f"{n} banner lines at the ssh client")


@pytest.mark.realclient
def test_socket_activation_by_name_traps_openssh(tmp_path, procs) -> None:
    port = free_port()
    # the config's own address is elsewhere: the passed socket named "trap" replaces it
    config = write(
        tmp_path,
        ssh_config(delay=0.1).replace('listen = ["127.0.0.1:0"]', 'listen = ["127.0.0.1:1"]')
        + 'name = "trap"\n'
        + NO_HISTORY,
    )
    t = activated(config, port, "trap")
    procs.append(t)
    wait_until(lambda: any("Listening on" in e for e in t.err), 10, "systemd-socket-activate")
    client = ssh_client(port)  # the first connection makes systemd-socket-activate start tarry
    try:
        t.wait_for(rf"LISTEN proto=ssh listener=127\.0\.0\.1:{port} ", timeout=20)
        t.wait_for(r" ACCEPT host=127\.0\.0\.1 ", timeout=10)
        lines = banner_lines(client, 5)
        assert all(not line.startswith("SSH-") for line in lines)
        assert client.poll() is None, "the ssh client got away"
        # tarry listens on fd 3, the passed socket: it bound nothing itself
        assert os.readlink(f"/proc/{t.proc.pid}/fd/3").startswith("socket:")
        assert t.count(r" LISTEN ") == 1
    finally:
        client.kill()
        client.wait()
    t.wait_for(r" CLOSE .*ssh_id=SSH-2\.0-OpenSSH", timeout=10)


def test_socket_activation_by_address_and_unused_sockets(tmp_path, procs) -> None:
    port = free_port()
    config = write(
        tmp_path,
        ssh_config(delay=0.1).replace("127.0.0.1:0", f"127.0.0.1:{port}") + NO_HISTORY,
    )
    t = activated(config, port, "whatever")
    procs.append(t)
    wait_until(lambda: any("Listening on" in e for e in t.err), 10, "systemd-socket-activate")
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    t.wait_for(rf"LISTEN proto=ssh listener=127\.0\.0\.1:{port} ", timeout=20)
    assert len(read_lines(s, 2)) == 2
    s.close()
    t.wait_for(r" CLOSE ")


def test_reload_hands_a_passed_socket_back_and_takes_it_again(tmp_path, procs) -> None:
    port = free_port()
    # (as root it stays root: after a switch to nobody, pytest's tmp_path is unreadable)
    named = ssh_config(delay=0.05) + 'name = "trap"\n' + NO_HISTORY + STAY_ROOT
    config = write(tmp_path, named)
    t = activated(config, port, "trap")
    procs.append(t)
    wait_until(lambda: any("Listening on" in e for e in t.err), 10, "systemd-socket-activate")
    held = socket.create_connection(("127.0.0.1", port), timeout=10)
    t.wait_for(rf"LISTEN proto=ssh listener=127\.0\.0\.1:{port} ", timeout=20)
    t.wait_for(r" ACCEPT ")
    # a config without the table: its client is released, the socket goes back to the pool
    Path(config).write_text(named.replace('name = "trap"', 'name = "other"'))
    t.signal(signal.SIGHUP)
    t.wait_for(r" CLOSE .*reason=reload", timeout=10)
    held.close()
    # the table comes back: the same passed socket serves it again (tarry cannot re-bind it)
    Path(config).write_text(named)
    mark = len(t.lines)
    t.signal(signal.SIGHUP)
    t.wait_for(rf"LISTEN proto=ssh listener=127\.0\.0\.1:{port} ", timeout=10, after=mark)
    again = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert len(read_lines(again, 2)) == 2
    assert not any("reload rejected" in e for e in t.err)
    again.close()


def test_a_passed_socket_no_tarpit_wants_is_reported(tmp_path, procs) -> None:
    port = free_port()
    config = write(tmp_path, ssh_config(delay=0.1) + NO_HISTORY)
    t = activated(config, port, "other")
    procs.append(t)
    wait_until(lambda: any("Listening on" in e for e in t.err), 10, "systemd-socket-activate")
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    wait_until(
        lambda: any("matches no [[tarpit]]" in e and f":{port} (other)" in e for e in t.err),
        20,
        "the warning about the unused socket",
    )
    # tarry runs its own listener meanwhile
    assert len(read_lines(connect(t.port()), 1)) == 1
    s.close()


# ---- sd_notify --------------------------------------------------------------------


class NotifyListener:
    """The systemd side of sd_notify: a datagram socket, abstract or on disk."""

    def __init__(self, abstract: bool, tmp: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"tarry-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            path = str(tmp / "notify.sock")
            self.sock.bind(path)
            self.env = path
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []

    def pump(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            self.messages.append(fields)

    def wait(self, key: str, value: str | None = None, after: int = 0, timeout: float = 10) -> int:
        """Index of the first message from ``after`` on carrying ``key`` (= ``value``)."""

        def find() -> int | None:
            self.pump()
            for i, m in enumerate(self.messages[after:], after):
                if key in m and (value is None or re.fullmatch(value, m[key])):
                    return i + 1  # so that index 0 is truthy
            return None

        return wait_until(find, timeout, f"sd_notify {key}={value}") - 1


@pytest.mark.parametrize("abstract", [True, False], ids=["abstract", "path"])
def test_sd_notify_ready_status_watchdog_reload_stopping(tmp_path, abstract) -> None:
    listener = NotifyListener(abstract, tmp_path)
    config = write(tmp_path, ssh_config(delay=5.0) + NO_HISTORY)
    t = Tarry(
        ["serve", "-c", config],
        env={"NOTIFY_SOCKET": listener.env, "WATCHDOG_USEC": "300000"},
    )
    try:
        port = t.port()
        ready = listener.wait("READY", "1")
        assert listener.messages[ready]["STATUS"] == "holding 0 clients on 1 listeners"
        s1, s2 = connect(port), connect(port)
        listener.wait("STATUS", "holding 2 clients on 1 listeners", ready, timeout=5)
        # the watchdog is fed at half the interval, from the event loop
        start = len(listener.messages)
        first = listener.wait("WATCHDOG", "1", start, timeout=2)
        listener.wait("WATCHDOG", "1", first + 1, timeout=2)
        # reload: RELOADING=1 with the monotonic clock, then READY=1 again
        mark = len(listener.messages)
        t.signal(signal.SIGHUP)
        reloading = listener.wait("RELOADING", "1", mark)
        usec = int(listener.messages[reloading]["MONOTONIC_USEC"])
        assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 30
        listener.wait("READY", "1", reloading + 1)
        mark = len(listener.messages)
        t.signal(signal.SIGTERM)
        stopping = listener.wait("STOPPING", "1", mark)
        assert "releasing 2 clients" in listener.messages[stopping]["STATUS"]
        assert t.proc.wait(10) == 0
        assert t.count(r" CLOSE .*reason=shutdown") == 2
        s1.close()
        s2.close()
    finally:
        t.stop()
        listener.sock.close()


def test_no_notify_socket_means_no_messages_and_no_errors(tmp_path) -> None:
    config = write(tmp_path, ssh_config(delay=0.05) + NO_HISTORY)
    env = {k: "" for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    t = Tarry(["serve", "-c", config], env=env)
    try:
        assert len(read_lines(connect(t.port()), 2)) == 2
    finally:
        assert t.stop() == 0
    assert not [e for e in t.err if "Traceback" in e]


# ---- privilege drop -----------------------------------------------------------


def free_low_port() -> int:
    for port in range(700, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise AssertionError("no free port below 1024")


def proc_ids(pid: int) -> dict[str, list[int]]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                out[key] = [int(x) for x in rest.split()]
    return out


@pytest.fixture
def open_state_home():
    """A state home the target user can reach (pytest's tmp_path is root-only)."""
    home = tempfile.mkdtemp(prefix="tarry-drop-")
    os.chmod(home, 0o755)
    yield home
    subprocess.run(["rm", "-rf", home], check=False)


def root_only() -> None:
    if not ROOT:
        if IN_CI:
            pytest.fail("CI must run the privilege tests as root")
        pytest.skip("needs root")


def test_root_binds_a_low_port_then_runs_as_nobody(open_state_home) -> None:
    root_only()
    import pwd

    nobody = pwd.getpwnam("nobody")
    port = free_low_port()
    config = ssh_config(delay=0.05).replace("127.0.0.1:0", f"127.0.0.1:{port}")
    config += '[privileges]\nuser = "nobody"\ngroup = "nogroup"\n'
    t = start_tarry(config, env={"XDG_STATE_HOME": open_state_home})
    try:
        assert t.port() == port
        s = connect(port)
        t.wait_for(r" ACCEPT ")
        assert len(read_lines(s, 3)) == 3
        ids = proc_ids(t.proc.pid)
        assert ids["Uid"] == [nobody.pw_uid] * 4, ids
        assert ids["Gid"] == [nobody.pw_gid] * 4, ids
        assert set(ids["Groups"]) <= {nobody.pw_gid}, ids
        assert any("switched to user nobody" in e for e in t.err)
        state = Path(open_state_home) / "tarry"
        assert state.stat().st_uid == nobody.pw_uid
        # the history store is written by the unprivileged process
        s.close()
        t.wait_for(r" CLOSE ")
        db = state / "history.sqlite3"
        wait_until(db.exists, 5, "the history store")
        assert db.stat().st_uid == nobody.pw_uid
    finally:
        t.stop()


def test_state_dir_left_to_root_is_taken_over(open_state_home) -> None:
    root_only()
    state = Path(open_state_home) / "tarry"
    state.mkdir(mode=0o700)
    (state / "old.txt").write_text("from a run as root")
    config = ssh_config() + "[privileges]\n"
    t = start_tarry(config, env={"XDG_STATE_HOME": open_state_home})
    try:
        t.port()
        assert state.stat().st_uid != 0 and (state / "old.txt").stat().st_uid != 0
    finally:
        t.stop()


def test_unwritable_state_dir_is_one_clear_line(open_state_home) -> None:
    root_only()
    closed = Path(open_state_home) / "closed"
    closed.mkdir(mode=0o700)
    config = ssh_config() + f'[privileges]\n[history]\npath = "{closed}/h.sqlite3"\n'
    t = start_tarry(config, env={"XDG_STATE_HOME": open_state_home})
    assert t.proc.wait(15) == 1
    t.stop()
    assert len(t.err) == 1, t.err
    assert "not writable by nobody:nogroup" in t.err[0] and str(closed) in t.err[0]


@pytest.mark.parametrize(
    ("privileges", "message"),
    [
        ('user = "root"', "refusing to run as root"),
        ('user = "0"', "refusing to run as root"),
        ('user = "no-such-user-tarry"', "no user named 'no-such-user-tarry'"),
        ('group = "no-such-group-tarry"', "no group named 'no-such-group-tarry'"),
    ],
)
def test_bad_privileges_stop_before_serving(open_state_home, privileges, message) -> None:
    root_only()
    config = ssh_config() + f"[privileges]\n{privileges}\n"
    t = start_tarry(config, env={"XDG_STATE_HOME": open_state_home})
    assert t.proc.wait(15) == 1
    t.stop()
    assert len(t.err) == 1 and message in t.err[0], t.err
    assert t.count(r" ACCEPT ") == 0


def test_allow_root_keeps_root(open_state_home) -> None:
    root_only()
    config = ssh_config() + "[privileges]\nallow_root = true\n"
    t = start_tarry(config, env={"XDG_STATE_HOME": open_state_home})
    try:
        t.port()
        assert proc_ids(t.proc.pid)["Uid"] == [0, 0, 0, 0]
        assert any("running as root" in e for e in t.err)
    finally:
        t.stop()


# ---- the event loop -------------------------------------------------------------


def test_uvloop_runs_the_engine(tmp_path) -> None:
    need_module("uvloop")
    config = ssh_config(delay=0.05) + '[engine]\nloop = "uvloop"\n' + NO_HISTORY
    t = start_tarry(config)
    try:
        port = t.port()
        socks = [connect(port) for _ in range(5)]
        wait_until(lambda: t.count(r" ACCEPT ") == 5, 5, "5 accepts")
        started = time.monotonic()
        for s in socks:
            read_lines(s, 10)
        assert time.monotonic() - started < 3
        # the loop really is uvloop's
        maps = Path(f"/proc/{t.proc.pid}/maps").read_text()
        assert "uvloop" in maps
        socks[0].close()
        t.wait_for(r" CLOSE ")
        t.signal(signal.SIGHUP)
        wait_until(lambda: any("reloaded" in e for e in t.err), 5, "the reload")
        for s in socks[1:]:
            s.close()
        wait_until(lambda: t.count(r" CLOSE ") == 5, 5, "5 closes")
    finally:
        assert t.stop() == 0
