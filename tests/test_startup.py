"""What a real ``tarry serve`` says at start and on a reload (issue 16)."""

from __future__ import annotations

import os
import signal
import urllib.request

import pytest

from support import start_tarry, wait_until
from tarry.changes import changes
from tarry.config import parse

SSH = '[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:0"]\ndelay = {delay}\n'
HTTP = '[[tarpit]]\nprotocol = "http"\nlisten = ["127.0.0.1:0"]\ndelay = 1.0\n'
SMTP = '[[tarpit]]\nprotocol = "smtp"\nlisten = ["127.0.0.1:0"]\ndelay = 1.0\n'


def test_one_line_names_the_history_and_the_admin_url(tmp_path):
    db = tmp_path / "h.sqlite3"
    t = start_tarry(
        f'[history]\npath = "{db}"\n[admin]\nlisten = "127.0.0.1:0"\n' + SSH.format(delay=1.0)
    )
    try:
        m = t.wait_for(r" OBSERVE history=(\S+) admin=(\S+)$", timeout=10)
        assert m.group(1) == str(db)
        url = m.group(2)
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/summary", timeout=5) as r:  # the URL works
            assert r.status == 200
    finally:
        t.stop()


def test_history_and_admin_off_are_said_too():
    t = start_tarry('[history]\nenabled = false\n[admin]\nlisten = ""\n' + SSH.format(delay=1.0))
    try:
        t.wait_for(r" OBSERVE history=off admin=off$", timeout=10)
    finally:
        t.stop()


def test_a_reload_prints_one_line_per_change(tmp_path):
    t = start_tarry(SSH.format(delay=2.0) + HTTP + '[admin]\nlisten = ""\n')
    try:
        t.port("http")
        with open(t.config_path, "w") as f:  # type: ignore[attr-defined]
            f.write(
                SSH.format(delay=0.5)
                + SMTP
                + '[admin]\nlisten = ""\n[history]\nretention_days = 7\n'
                + "[privileges]\nallow_root = true\n"
            )
        t.signal(signal.SIGHUP)
        wait_until(lambda: any("reloaded" in e for e in t.err), 10, "the reload")
        t.port("smtp")
        said = [e.split("reload: ", 1)[1] for e in t.err if "reload: " in e]
        assert sorted(said) == [
            "[history] changed: applies at the next start",
            "listener added: smtp 127.0.0.1:0",
            "listener removed: http 127.0.0.1:0",
            "ssh 127.0.0.1:0: delay 2.0 -> 0.5",
        ], t.err
        assert any("reloaded" in e and "4 change(s)" in e for e in t.err)
        t.signal(signal.SIGHUP)  # the same file again: nothing changed, and it says so
        wait_until(lambda: any("no change(s)" in e for e in t.err), 10, "the second reload")
    finally:
        t.stop()


def test_changes_between_two_configs():
    old = parse(SSH.format(delay=10.0) + "[engine]\nwrite_timeout = 300.0\n")
    new = parse(
        SSH.format(delay=10.0).replace("127.0.0.1:0", '127.0.0.1:0", "127.0.0.2:0')
        + 'mode = "kex"\nmax_clients = 7\n'
        + "[engine]\nwrite_timeout = 30.0\nworkers = 2\n"
    )
    assert changes(old, new) == [
        "listener added: ssh 127.0.0.2:0",
        "ssh 127.0.0.1:0: max_clients 4096 -> 7",
        "ssh 127.0.0.1:0: mode 'banner' -> 'kex'",
        "write_timeout 300.0 -> 30.0",
        "workers changed: applies at the next start",
    ]
    assert changes(old, old) == []


def _libraries(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


@pytest.mark.skipif(os.geteuid() != 0, reason="the preload happens before a switch from root")
def test_a_config_loads_only_the_libraries_it_uses():
    """As root, tarry loads before the switch what its config needs, and nothing
    more: with the dashboard and the history off, no aiohttp and no SQLite are
    mapped; with them on, both are (loaded while still root)."""
    off = start_tarry(
        '[history]\nenabled = false\n[admin]\nlisten = ""\n[privileges]\nuser = "nobody"\n'
        'group = "nogroup"\n' + SSH.format(delay=1.0)
    )
    on = start_tarry(
        '[admin]\nlisten = "127.0.0.1:0"\n[privileges]\nuser = "nobody"\ngroup = "nogroup"\n'
        + SSH.format(delay=1.0)
    )
    try:
        off.wait_for(r" OBSERVE ", timeout=10)
        on.wait_for(r" OBSERVE ", timeout=10)
        maps_off, maps_on = _libraries(off.proc.pid), _libraries(on.proc.pid)
        assert "aiohttp" not in maps_off and "_sqlite3" not in maps_off
        assert "aiohttp" in maps_on and "_sqlite3" in maps_on
    finally:
        off.stop()
        on.stop()
