"""What the SSH adaptive mode learns about an address outlives a restart when
the history is on (and stays in memory, bounded, when it is off)."""

from __future__ import annotations

import re
import signal
import socket
import time

from support import Tarry, grab_banner, start_tarry, wait_until
from tarry.baits.ssh import DRIP, KEX, PatienceStore
from tarry.events import CLOSE, Event


def close_event(ip: str, duration: float, **notes: str) -> Event:
    return Event(
        CLOSE, 0.0, "ssh", "*:22", ip, 4242, 7, duration=duration, reason="closed",
        notes=tuple(notes.items()),
    )  # fmt: skip


def test_lessons_from_history_rows_equal_lessons_from_close_events() -> None:
    sessions = [
        ("198.51.100.1", 0.4, {"mode": "kex", "pace": "10", "start": "10"}),
        ("198.51.100.2", 14.0, {"mode": "kex", "pace": "10", "start": "10", "hassh": "x"}),
        ("198.51.100.2", 13.9, {"mode": "kex", "pace": "2", "start": "10", "hassh": "x"}),
        ("198.51.100.3", 300.0, {"mode": "drip", "pace": "1", "start": "0"}),
        ("198.51.100.4", 1.0, {}),  # a banner listener: nothing to learn
        ("198.51.100.5", 1.0, {"mode": "kex", "pace": "nan", "start": "10"}),  # hostile row
    ]
    live = PatienceStore()
    live.enabled = True
    for ip, d, notes in sessions:
        live.emit(close_event(ip, d, **notes))
    seeded = PatienceStore()
    assert seeded.learn([(ip, d, "closed", n) for ip, d, n in sessions]) == 3
    for ip in ("198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5"):
        assert seeded.advice(ip) == live.advice(ip)
        assert seeded.visits(ip) == live.visits(ip)
    assert seeded.advice("198.51.100.1") == (DRIP, 100)


def test_merge_keeps_newer_advice_and_adds_visits() -> None:
    store = PatienceStore()
    store.enabled = True
    store.emit(close_event("203.0.113.1", 300.0, mode="drip", pace="1", start="0"))  # -> kex
    assert store.advice("203.0.113.1") == (KEX, 10)
    grab = [("203.0.113.1", 0.4, "closed", {"mode": "kex", "pace": "10", "start": "10"})]
    store.learn(grab)  # older than what this process saw: its advice stays
    assert store.advice("203.0.113.1") == (KEX, 10)
    assert store.visits("203.0.113.1") == 2
    store.learn(grab, newer=True)  # another host saw it since: that advice wins
    assert store.advice("203.0.113.1") == (DRIP, 100)
    assert store.visits("203.0.113.1") == 3


def test_seeding_is_bounded_by_the_store_cap() -> None:
    store = PatienceStore(cap=100)
    rows = [(f"10.0.0.{i}", 0.4, "closed", {"mode": "kex", "pace": "5", "start": "1"})
            for i in range(250)]  # fmt: skip
    assert store.learn(rows) == 100
    assert len(store) == 0  # merged by the loop thread, at its next advice or emit
    assert store.advice("10.0.0.249") == (DRIP, 50)
    assert store.advice("10.0.0.0") is None and len(store) == 100


def adaptive(history: str) -> str:
    return f"""
[admin]
listen = ""
[geo]
enabled = false
[metrics]
enabled = false
{history}
[[tarpit]]
protocol = "ssh"
listen = ["127.0.0.1:0"]
delay = 1.0
mode = "adaptive"
ident_wait = 0.3
"""


def mode_of_visit(t: Tarry, port: int, source: str) -> str:
    with socket.socket() as s:
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")
        mine = s.getsockname()[1]
        time.sleep(0.8)  # the client's behaviour: says its version, waits a while, gone
    m = t.wait_for(rf"CLOSE host={re.escape(source)} port={mine} .*mode=(\w+)", 10)
    return m.group(1)


def run_twice(config: str) -> tuple[str, str, list[str]]:
    """Grab the banner as 127.0.0.5, restart tarry, visit again: both modes, and
    what the second run said on stderr."""
    first = start_tarry(config)
    try:
        grab_banner(first.port(), "127.0.0.5")
        m = first.wait_for(r"CLOSE host=127\.0\.0\.5 .*mode=(\w+)", 10)
    finally:
        assert first.stop() == 0
    second = Tarry(["serve", "-c", first.config_path])  # type: ignore[attr-defined]
    try:
        port = second.port()
        if "[history]\nenabled = false" not in config:
            wait_until(lambda: any("adaptive: learned" in e for e in second.err), 10, "the seed")
        return m.group(1), mode_of_visit(second, port, "127.0.0.5"), list(second.err)
    finally:
        assert second.stop() == 0


def test_what_adaptive_learned_survives_a_restart(tmp_path) -> None:
    path = tmp_path / "h.sqlite3"
    before, after, err = run_twice(adaptive(f'[history]\npath = "{path}"\nflush_interval = 0.2'))
    assert before == "kex"  # new: a client that identified itself gets a version
    assert after == "drip"  # remembered as a banner grabber: no version this time
    assert any("learned 1 addresses from 1 sessions" in e for e in err), err


def test_without_the_history_a_restart_forgets() -> None:
    before, after, _ = run_twice(adaptive("[history]\nenabled = false"))
    assert (before, after) == ("kex", "kex")


def test_a_reload_that_turns_adaptive_on_seeds_from_the_history(tmp_path) -> None:
    history = f'[history]\npath = "{tmp_path / "h.sqlite3"}"\nflush_interval = 0.2'
    first = start_tarry(adaptive(history))
    try:
        grab_banner(first.port(), "127.0.0.6")
        first.wait_for(r"CLOSE host=127\.0\.0\.6 .*mode=kex", 10)
    finally:
        assert first.stop() == 0
    banner = adaptive(history).replace('mode = "adaptive"', 'mode = "banner"')
    second = start_tarry(banner)
    try:
        second.port()
        assert not any("adaptive: learned" in e for e in second.err)  # off: nothing read
        with open(second.config_path, "w") as f:  # type: ignore[attr-defined]
            f.write(adaptive(history))
        second.signal(signal.SIGHUP)
        wait_until(lambda: any("adaptive: learned 1 addresses" in e for e in second.err), 10)
        port = second.port(index=-1)
        assert mode_of_visit(second, port, "127.0.0.6") == "drip"
    finally:
        assert second.stop() == 0
