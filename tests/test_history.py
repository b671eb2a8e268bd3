"""The history store: batching, flush on close, migrations, retention, kill -9."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import hold_then_kill_9, start_tarry, wait_until
from tarry.events import ACCEPT, CLOSE, Event
from tarry.history import SCHEMA_VERSION, HistoryError, HistoryStore, connect

SRC = str(Path(__file__).resolve().parents[1] / "src")


def close_event(i: int, t: float | None = None, **kw) -> Event:
    fields = dict(
        kind=CLOSE,
        time=t if t is not None else time.time(),
        proto="ssh",
        listener="127.0.0.1:2222",
        host="::ffff:192.0.2.1",
        port=i,
        duration=12.5,
        sent=100,
        received=20,
        reason="closed",
        notes=(("ssh_id", "SSH-2.0-libssh_0.9.6"),),
    )
    fields.update(kw)
    return Event(**fields)


def test_close_flushes_every_event_and_stores_ipv4(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3", interval=5.0)
    store.start()
    store.emit(Event(kind=ACCEPT, time=time.time(), host="::ffff:192.0.2.1", port=1))
    for i in range(2500):
        store.emit(close_event(i))
    store.close()
    conn = sqlite3.connect(tmp_path / "h.sqlite3")
    assert conn.execute(
        "select count(*), min(port), max(port) from sessions where reason = 'closed'"
    ).fetchone() == (2500, 0, 2499)
    # the accepted session that never closed is a row still open
    assert conn.execute(
        "select port, reason from sessions where reason <> 'closed'"
    ).fetchall() == [(1, "open")]
    ip, soft, notes = conn.execute("select ip, software, notes from sessions limit 1").fetchone()
    assert ip == "192.0.2.1"
    assert soft == "SSH-2.0-libssh_0.9.6"
    assert '"ssh_id"' in notes
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert conn.execute("pragma user_version").fetchone()[0] == SCHEMA_VERSION


def test_writes_within_the_interval_without_close(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3", interval=0.2)
    store.start()
    for i in range(10):
        store.emit(close_event(i))
    conn = sqlite3.connect(tmp_path / "h.sqlite3")
    deadline = time.monotonic() + 5
    while conn.execute("select count(*) from sessions").fetchone()[0] < 10:
        assert time.monotonic() < deadline, "batch not written within 5 s"
        time.sleep(0.02)
    store.close()


def test_retention_prunes_old_sessions(tmp_path):
    now = time.time()
    store = HistoryStore(tmp_path / "h.sqlite3", retention_days=1)
    store.start()
    store.emit(close_event(1, t=now - 3 * 86400))
    store.emit(close_event(2, t=now - 3600))
    store.close()
    store2 = HistoryStore(tmp_path / "h.sqlite3", retention_days=1)
    assert store2.maybe_prune() == 1
    ports = [r[0] for r in store2.conn.execute("select port from sessions")]
    assert ports == [2]
    store2.close()


def test_refuses_a_newer_schema(tmp_path):
    path = tmp_path / "h.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"pragma user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(HistoryError, match="newer"):
        connect(path)


def test_unusable_path_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HistoryError, match="history: "):
        HistoryStore(blocker / "sub" / "h.sqlite3")
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(HistoryError, match="not a database"):
        HistoryStore(garbage)


CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from tarry.events import Event, CLOSE
from tarry.history import HistoryStore
path, rate, batch, interval = sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
store = HistoryStore(path, batch=batch, interval=interval)
store.start()
i = 0
start = time.monotonic()
while True:
    t = time.time()
    store.emit(Event(kind=CLOSE, time=t, proto="ssh", listener="l", host="192.0.2.9",
                     port=i, duration=1.0, reason="closed"))
    i += 1
    if i % 10 == 0:
        print(i, t, flush=True)
    if rate:
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
"""


def run_and_kill(path: Path, rate: float, batch: int, interval: float, until: int):
    """Run a writer child, SIGKILL it once it emitted ``until`` events; return what it said."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, SRC, str(path), str(rate), str(batch), str(interval)],
        stdout=subprocess.PIPE,
        text=True,
    )
    said: list[tuple[int, float]] = []
    deadline = time.monotonic() + 60
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            n, t = line.split()
            said.append((int(n), float(t)))
            if said[-1][0] >= until:
                break
            assert time.monotonic() < deadline
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    return said, killed_at


def check_file(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    ports = [r[0] for r in conn.execute("select port from sessions order by port")]
    conn.close()
    # no holes: what was committed is a prefix of what was emitted
    assert ports == list(range(len(ports)))
    return ports


def test_kill_9_loses_at_most_the_last_batch(tmp_path):
    path = tmp_path / "h.sqlite3"
    rate, interval = 400.0, 1.0
    said, killed_at = run_and_kill(path, rate, batch=100000, interval=interval, until=1600)
    rows = len(check_file(path))
    emitted = said[-1][0]
    assert rows <= emitted + 10
    # Everything emitted more than one interval (plus scheduling slack) before the kill is on disk.
    old_enough = max((n for n, t in said if t < killed_at - interval - 1.0), default=0)
    assert rows >= old_enough, (rows, old_enough, emitted)
    assert emitted - rows <= rate * (interval + 1.0) + 10


def test_kill_9_during_constant_writes_never_corrupts(tmp_path):
    written = []
    for k, until in enumerate((5000, 20000, 40000)):  # kill at different points of the cycle
        path = tmp_path / f"h{k}.sqlite3"
        run_and_kill(path, 0.0, batch=200, interval=0.01, until=until)
        written.append(len(check_file(path)))
    # on a loaded machine the earliest kill may come before the first commit
    assert max(written) > 0, written


def count(path: Path | str, where: str = "1") -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(f"select count(*) from sessions where {where}").fetchone()[0]
    finally:
        conn.close()


def test_a_lock_held_past_the_busy_timeout_loses_only_what_overflows(tmp_path):
    """Another process holds the write lock for longer than the 5 s busy
    timeout: the batch in hand and the buffer wait, only the overflow drops."""
    path = tmp_path / "h.sqlite3"
    said: list[str] = []
    store = HistoryStore(path, retention_days=0, capacity=200, interval=0.1, report=said.append)
    store.start()
    assert store.warm.wait(10)  # its first write at start is not what this test locks out
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    release = time.monotonic() + 7.0  # the busy timeout is 5 s
    try:
        for i in range(150):  # the writer takes these as one batch, then waits for the lock
            store.emit(close_event(i))
        wait_until(lambda: not store._buf, 10, "the batch taken")
        for i in range(150, 450):  # 200 fit in the buffer, 100 overflow
            store.emit(close_event(i))
        time.sleep(max(0.0, release - time.monotonic()))  # the other process's transaction
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    wait_until(lambda: count(path) >= 350, 15, "the sessions written")
    store.close()
    assert (count(path), store.dropped, store.failed) == (350, 100, 0)
    assert sum("cannot write" in m for m in said) == 1, said
    (back,) = [m for m in said if "writing again" in m]
    assert back.endswith("; 350 events waited, 100 dropped"), back


FULL_DISK = """
[[tarpit]]
protocol = "ssh"
listen = ["127.0.0.1:0"]
delay = 60
[history]
path = "{path}"
flush_interval = 0.2
[admin]
listen = ""
"""


def test_a_full_disk_keeps_the_sessions_and_writes_them_when_space_returns(tmp_path):
    """A real tarry whose history is on a 2 MB tmpfs (in a mount namespace of
    its own): the disk fills, 200 clients come and go, then space returns."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to mount a tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = 'mount -t tmpfs -o size=2m tmpfs "$0" && exec "$@"'
    prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c", mount, str(disk)]
    t = start_tarry(FULL_DISK.format(path=disk / "h.sqlite3"), prefix=prefix)
    try:
        port = t.port()
        # the tmpfs, as tarry sees it
        seen = Path(f"/proc/{t.proc.pid}/root") / str(disk).lstrip("/")
        db_in = disk / "h.sqlite3"
        filler = seen / "filler"
        with open(filler, "wb") as f:  # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        for k in range(4):  # 50 from each of 4 addresses: under the per-IP cap (64)
            src = (f"127.0.0.{k + 2}", 0)
            clients = [socket.create_connection(("127.0.0.1", port), 5, src) for _ in range(50)]
            for c in clients:
                c.close()
        wait_until(lambda: t.count(" CLOSE ") == 200, 10, "200 closes")
        time.sleep(1.0)  # five flush intervals with the disk full
        filler.unlink()

        def rows(where: str = "1") -> int:  # SQLite resolves /proc/PID/root: read from inside
            script = f"import sys; sys.path[:0] = {sys.path!r}; import test_history as h; "
            script += f"print(h.count({str(db_in)!r}, {where!r}))"
            nsenter = ["nsenter", "-t", str(t.proc.pid), "-m", sys.executable, "-c", script]
            return int(subprocess.run(nsenter, capture_output=True, text=True, check=True).stdout)

        wait_until(lambda: rows("reason <> 'open'") == 200, 10, "200 sessions written")
        assert rows() == 200
        wait_until(lambda: any("writing again" in e for e in t.err), 5, "the recovery said")
    finally:
        t.stop()
    assert sum("cannot write (database or disk is full)" in e for e in t.err) == 1, t.err


HELD = """
[[tarpit]]
protocol = "ssh"
listen = ["127.0.0.1:0"]
delay = 1
[history]
path = "{path}"
flush_interval = {interval}
[admin]
listen = ""
"""


def test_kill_9_loses_at_most_one_flush_interval_of_held_sessions(tmp_path):
    """50 clients held for 4 s, then ``kill -9``: ``tarry report`` counts each
    with the time it had reached, less at most one flush interval; a restart
    closes the rows with reason ``crash`` and keeps that time."""
    interval, n = 1.0, 50
    path = tmp_path / "h.sqlite3"
    config = HELD.format(path=path, interval=interval)
    t = start_tarry(config)
    # killed at any point of the flush cycle
    held, most = hold_then_kill_9(t, n, 4.0 + random.uniform(0.0, interval))
    slack = 0.5  # the time one write takes on a loaded machine, and the client's clock

    def report() -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "tarry", "report", "--db", str(path), "--format", "json"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": SRC},
            check=True,
        ).stdout
        return json.loads(out)["summary"]

    summary = report()
    assert summary["sessions"] == n
    wasted = summary["time_wasted_seconds"]
    assert sum(held.values()) - n * (interval + slack) <= wasted <= sum(most.values()), (
        wasted,
        sum(held.values()),
    )

    again = start_tarry(config)  # a restart closes the dead run's rows
    try:
        again.port()
        conn = sqlite3.connect(path)
        rows = dict(conn.execute("select port, duration from sessions where reason = 'crash'"))
        conn.close()
    finally:
        again.stop()
    assert set(rows) == set(held)
    for p, d in rows.items():  # each session, not only the sum
        assert held[p] - interval - slack <= d <= most[p], (p, d, held[p], most[p])
    assert report() == summary


def test_open_rows_of_a_gone_run_are_closed_as_crash_and_a_live_ones_kept(tmp_path):
    """Another machine's run that stopped checkpointing 10 minutes ago is gone;
    one that checkpointed a minute ago, or a live process here, is not."""
    from tarry.history import STALE_AFTER

    path = tmp_path / "h.sqlite3"
    now = time.time()
    conn = connect(path)
    with conn:
        for run, alive in (
            ("elsewhere/1/old", now - STALE_AFTER - 5),
            ("elsewhere/2/recent", now - 60),
            (f"{socket.gethostname()}/{os.getppid()}/live", now - STALE_AFTER + 60),
        ):
            conn.execute("INSERT INTO runs VALUES (?, 'h', ?, ?)", (run, alive - 100, alive))
            conn.execute(
                "INSERT INTO sessions (host, start, end, proto, listener, ip, port, duration,"
                " sent, received, reason, run, fd) VALUES"
                " ('h', ?, ?, 'ssh', 'l', '192.0.2.1', 1, 0, 0, 0, 'open', ?, 3)",
                (alive - 50, alive - 50, run),
            )
    conn.close()
    store = HistoryStore(path)
    assert store.crashed == 1
    rows = store.conn.execute("SELECT run, reason, end - start FROM sessions ORDER BY run")
    assert [(r, why, round(d)) for r, why, d in rows] == [
        ("elsewhere/1/old", "crash", 50),  # held until its last checkpoint
        ("elsewhere/2/recent", "open", 0),
        (f"{socket.gethostname()}/{os.getppid()}/live", "open", 0),
    ]
    store.close()
