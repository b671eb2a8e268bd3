"""A fleet of tarry hosts sharing one PostgreSQL history, for real.

A PostgreSQL server from Debian's packages is started by the fixture (see
pg_support), and two ``tarry serve`` processes with different host names write
to it. Locally these tests skip without the server binary; in CI they fail.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from pg_support import PgServer, need_pg
from support import Tarry, grab_banner, hold_then_kill_9, start_tarry, wait_until

CLOSE_PORT = re.compile(r"CLOSE host=\S+ port=(\d+) ")


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    server = PgServer(need_pg())
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


_dbs = iter(range(1000))


@pytest.fixture
def db(pg: PgServer) -> tuple[str, str]:
    name = f"fleet{next(_dbs)}"
    return name, pg.create_db(name)


def config(url: str, host: str, mode: str = "banner", delay: float = 1.0, **history: object) -> str:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in history.items())
    return f"""
[log]
level = "debug"
[admin]
listen = ""
[geo]
enabled = false
[history]
url = "{url}"
host = "{host}"
flush_interval = 0.2
{extra}
[[tarpit]]
protocol = "ssh"
listen = ["127.0.0.1:0"]
delay = {delay}
mode = "{mode}"
{"ident_wait = 0.3" if mode == "adaptive" else ""}
"""


def hit(port: int, source: str = "127.0.0.1") -> int:
    """Connect, and leave at once; returns the client port tarry will log."""
    with socket.socket() as s:
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        return s.getsockname()[1]


def closes(t: Tarry) -> list[int]:
    return [int(m.group(1)) for line in list(t.lines) if (m := CLOSE_PORT.search(line))]


def report(url: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "tarry", "report", "--db", url, "--format", "json", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def stop_all(*ts: Tarry) -> None:
    for t in ts:
        assert t.stop() == 0, t.err[-5:]


def test_two_hosts_one_history_and_the_fleet_report(pg: PgServer, db: tuple[str, str]) -> None:
    name, url = db
    alpha = start_tarry(config(url, "alpha"))
    beta = start_tarry(config(url, "beta"))
    try:
        pa, pb = alpha.port(), beta.port()
        for _ in range(12):
            hit(pa)
        for _ in range(7):
            hit(pb)
        wait_until(lambda: len(closes(alpha)) == 12 and len(closes(beta)) == 7, 20, "CLOSE lines")

        def stored() -> dict[str, int]:
            rows = pg.query(name, "SELECT host, count(*) FROM tarry_sessions GROUP BY host")
            return dict(rows)

        wait_until(lambda: stored() == {"alpha": 12, "beta": 7}, 20, "the rows of both hosts")
        data = report(url)
        assert data["summary"]["sessions"] == 19
        by_host = {h["host"]: h["sessions"] for h in data["hosts"]}
        assert by_host == {"alpha": 12, "beta": 7}
        assert all(h["unique_ips"] == 1 for h in data["hosts"])
        only = report(url, "--host", "beta")
        assert only["summary"]["sessions"] == 7
        assert [h["host"] for h in only["hosts"]] == ["beta"]
        table = subprocess.run(
            [sys.executable, "-m", "tarry", "report", "--db", url],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert re.search(r"By host\n.*\n.*\n\s+alpha\s+12\s", table), table
    finally:
        stop_all(alpha, beta)


def test_database_restart_under_load_loses_no_event(pg: PgServer, db: tuple[str, str]) -> None:
    """Stop PostgreSQL while clients come and go on two hosts, start it again:
    every session is in the database exactly once."""
    name, url = db
    hosts = {"alpha": start_tarry(config(url, "alpha")), "beta": start_tarry(config(url, "beta"))}
    ports = {h: t.port() for h, t in hosts.items()}
    made: dict[str, list[int]] = {h: [] for h in hosts}
    stop = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        try:
            deadline = time.monotonic() + 60  # bounded even if the test body fails
            while not stop.is_set() and time.monotonic() < deadline:
                for h, port in ports.items():
                    made[h].append(hit(port))
                time.sleep(0.02)
        except BaseException as exc:
            errors.append(exc)

    loader = threading.Thread(target=load)
    try:
        loader.start()
        wait_until(lambda: min(len(v) for v in made.values()) >= 30, 20, "load before the stop")
        before = {h: len(v) for h, v in made.items()}
        pg.stop()  # fast shutdown: the hosts' connections are cut
        wait_until(
            lambda: all(len(made[h]) >= before[h] + 40 for h in made),
            30,
            "load while the database is down",
        )
        pg.start()
        during = {h: len(v) for h, v in made.items()}
        wait_until(
            lambda: all(len(made[h]) >= during[h] + 40 for h in made), 30, "load after the restart"
        )
        stop.set()
        loader.join(30)
        assert not errors, errors
        for h, t in hosts.items():
            wait_until(lambda t=t, h=h: len(closes(t)) == len(made[h]), 30, f"{h}'s CLOSE lines")
    finally:
        stop.set()
        loader.join(30)
        stop_all(*hosts.values())  # SIGTERM flushes what is buffered
    for h, t in hosts.items():
        assert any("unreachable" in line for line in t.err), (h, t.err[-5:])
        assert any("is back after" in line for line in t.err), (h, t.err[-5:])
        assert not any("dropped" in line for line in t.err), (h, t.err[-5:])
        rows = pg.query(name, "SELECT port FROM tarry_sessions WHERE host = %s", (h,))
        assert Counter(p for (p,) in rows) == Counter(made[h]) == Counter(closes(t)), h
    (dupes,) = pg.query(name, "SELECT count(*) - count(DISTINCT uid) FROM tarry_sessions")[0]
    assert dupes == 0


def visit(t: Tarry, port: int, source: str, stay: float = 0.8) -> dict[str, str]:
    """Connect from ``source``, say a version and nothing more for a while; the
    CLOSE line's fields."""
    with socket.socket() as s:
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")
        mine = s.getsockname()[1]
        time.sleep(stay)  # the client's own behaviour: quiet for ``stay`` seconds
    m = t.wait_for(rf"CLOSE host={re.escape(source)} port={mine} .*", 10)
    return dict(re.findall(r"(\w+)=(\S+)", m.group(0)))


def test_what_one_host_learns_paces_that_address_on_another(
    pg: PgServer, db: tuple[str, str]
) -> None:
    _name, url = db
    kw = {"learn_refresh": 0.3}
    alpha = start_tarry(config(url, "alpha", mode="adaptive", **kw))
    beta = start_tarry(config(url, "beta", mode="adaptive", **kw))
    try:
        pa, pb = alpha.port(), beta.port()
        for t in (alpha, beta):
            wait_until(lambda t=t: any("adaptive: learned" in e for e in t.err), 20, "the seed")
        # a client new to both hosts is answered with a version (kex)
        assert visit(beta, pb, "127.0.0.3")["mode"] == "kex"
        # 127.0.0.2 grabs alpha's banner and leaves: alpha learns it is a grabber
        grab_banner(pa, "127.0.0.2")
        alpha.wait_for(r"CLOSE host=127\.0\.0\.2 .*mode=kex", 10)
        wait_until(
            lambda: any("sessions of other hosts" in e for e in beta.err),
            20,
            "beta to read alpha's lesson",
        )
        # ... so beta, which never saw 127.0.0.2, gives it no version either (drip)
        fields = visit(beta, pb, "127.0.0.2")
        assert fields["mode"] == "drip", fields
        # an address alpha learned nothing about is still paced by its family on beta
        assert visit(beta, pb, "127.0.0.4")["mode"] == "kex"
    finally:
        stop_all(alpha, beta)


def test_unreachable_at_start_buffers_and_counts_drops(pg: PgServer) -> None:
    """A database that is away at start-up does not stop tarry; a full buffer
    drops, counts and says so once, and the rest is written when it is back."""
    from tarry.events import CLOSE, Event
    from tarry.pghistory import PgHistoryStore

    said: list[str] = []
    url = f"postgresql://postgres@127.0.0.1:{pg.port}/away"
    pg.create_db("away")
    pg.stop()
    try:
        store = PgHistoryStore(
            url, host="h", capacity=50, batch=10, interval=0.05, report=said.append
        )
        store.start()
        assert any("unreachable" in s for s in said), said
        for i in range(200):
            store.emit(Event(CLOSE, time.time(), "ssh", "l", "192.0.2.1", i, reason="closed"))
        assert store.dropped >= 140  # 50 buffered, at most one batch taken by the writer
        assert sum("buffer of 50 events is full" in s for s in said) == 1
    finally:
        pg.start()
    wait_until(lambda: any("is back after" in s for s in said), 30, "the reconnect")
    store.close()
    (n,) = pg.query("away", "SELECT count(*) FROM tarry_sessions")[0]
    assert n == store.written == 200 - store.dropped
    assert any(f"{store.dropped} events dropped" in s for s in said), said


def test_log_lines_never_show_the_password() -> None:
    from tarry.pghistory import redact

    assert redact("postgresql://tarry:s3cret@db.example:5432/tarry") == (
        "postgresql://tarry:***@db.example:5432/tarry"
    )
    assert redact("postgresql://tarry@db/tarry") == "postgresql://tarry@db/tarry"
    assert redact("postgresql:///tarry?host=/run/pg&password=s3cret") == (
        "postgresql:///tarry?host=/run/pg&password=***"
    )


def test_a_row_the_server_refuses_costs_only_that_row(pg: PgServer) -> None:
    from tarry.events import CLOSE, Event
    from tarry.pghistory import PgHistoryStore

    said: list[str] = []
    url = pg.create_db("refuse")
    store = PgHistoryStore(url, host="h", interval=0.05, report=said.append)
    store.start()
    for port in (1, 2**40, 3):  # the middle one does not fit the INTEGER column
        store.emit(Event(CLOSE, time.time(), "ssh", "l", "192.0.2.1", port, reason="closed"))
    store.close()
    rows = pg.query("refuse", "SELECT port FROM tarry_sessions ORDER BY port")
    assert rows == [(1,), (3,)]
    assert (store.written, store.failed) == (2, 1)
    assert any("out of range" in s for s in said), said


def check_config(cfg) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tarry", "check-config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_bad_url_and_missing_password_are_config_errors(tmp_path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        '[history]\nurl = "mysql://x"\n[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:0"]\n'
    )
    out = check_config(cfg)
    assert out.returncode != 0
    assert "history.url" in out.stderr and "postgresql://" in out.stderr
    cfg.write_text(
        '[history]\nurl = "postgresql://h/db"\npath = "/tmp/x.sqlite3"\n'
        '[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:0"]\n'
    )
    out = check_config(cfg)
    assert out.returncode != 0 and "not both" in out.stderr


def test_report_errors_on_postgresql_are_one_line(pg: PgServer) -> None:
    from pg_support import free_port

    empty = pg.create_db("empty")
    for url, needle in (
        (empty, "no tarry history in this database"),
        (f"postgresql://postgres@127.0.0.1:{free_port()}/x", "127.0.0.1"),
        (pg.url("missing"), 'database "missing" does not exist'),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "tarry", "report", "--db", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2, out
        assert out.stderr.count("\n") == 1 and needle in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


def test_a_lock_timeout_is_retried_not_dropped(pg: PgServer, db: tuple[str, str]) -> None:
    """The server refuses a batch for a reason that passes (here a lock held past
    the connection's lock_timeout): the batch waits and is written after, whole."""
    import psycopg

    from tarry.events import CLOSE, Event
    from tarry.pghistory import PgHistoryStore

    name, url = db
    said: list[str] = []
    store = PgHistoryStore(
        url + "?options=-c%20lock_timeout%3D200",
        host="h",
        batch=50,
        interval=0.05,
        report=said.append,
    )
    store.start()
    with psycopg.connect(url, autocommit=True) as locker, locker.transaction():
        locker.execute("LOCK TABLE tarry_sessions IN ACCESS EXCLUSIVE MODE")
        for i in range(100):
            store.emit(Event(CLOSE, time.time(), "ssh", "l", "192.0.2.1", i, reason="closed"))
        time.sleep(2.0)  # another transaction holds the table for 2 s: 10 lock timeouts
    wait_until(lambda: store.written + store.failed >= 100, 30, "every batch written")
    store.close()
    (n,) = pg.query(name, "SELECT count(*) FROM tarry_sessions")[0]
    assert (n, store.written, store.failed, store.dropped) == (100, 100, 0, 0), said
    assert sum("cannot write" in s for s in said) == 1, said
    assert sum("is back after" in s for s in said) == 1, said


def test_kill_9_loses_at_most_one_flush_interval_of_held_sessions(
    pg: PgServer, db: tuple[str, str]
) -> None:
    """20 clients held about 3 s by a host writing to PostgreSQL, then ``kill
    -9``: the report counts each with its time, less at most one flush
    interval; a restart closes the dead run's rows with reason ``crash``."""
    import random

    name, url = db
    interval, n, slack = 0.2, 20, 0.5  # config() sets flush_interval = 0.2
    cfg = config(url, "alpha")
    t = start_tarry(cfg)
    # killed at any point of the flush cycle
    held, most = hold_then_kill_9(t, n, 3.0 + random.uniform(0.0, interval))
    summary = report(url)["summary"]
    assert summary["sessions"] == n
    wasted = summary["time_wasted_seconds"]
    assert sum(held.values()) - n * (interval + slack) <= wasted <= sum(most.values())

    again = start_tarry(cfg)  # a restart closes the dead run's rows
    try:
        again.port()
        rows = dict(
            pg.query(name, "SELECT port, duration FROM tarry_sessions WHERE reason = 'crash'")
        )
    finally:
        again.stop()
    assert set(rows) == set(held)
    for p, d in rows.items():
        assert held[p] - interval - slack <= d <= most[p], (p, d, held[p], most[p])
    assert report(url)["summary"] == summary
