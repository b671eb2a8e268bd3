"""The shared history: a fleet of tarry hosts writing one PostgreSQL table.

``[history] url = "postgresql://..."`` puts the history here instead of in the
local SQLite file: the same columns, one table ``tarry_sessions`` whose rows
each name the host that held the session, so that ``tarry report --db URL``
sees the whole fleet and the SSH adaptive mode learns from every host.

Writing is batched and off the event loop, as for SQLite: the loop only
appends to a bounded deque, and a writer thread inserts batches with psycopg 3
(one transaction and one pipelined round trip per batch).

The database may go away (a restart, a failover, the network). Then the
writer keeps the batch it holds and the deque keeps filling up to ``buffer``
events; it reconnects with backoff and writes everything in order once the
server answers. The same holds when the server answers but refuses a batch
for a reason that passes (a full disk, a lock or statement timeout, a standby
after a failover, too many connections): the batch is kept and sent again.
Only when the deque is full are events dropped: counted in
``dropped`` (the ``tarry_sink_dropped_events_total`` metric) and logged once
per outage, with the total when the database is back. Each row carries a
unique id (``uid``: this run's random id and a sequence number) and is
inserted with ``ON CONFLICT DO NOTHING``, so a batch whose COMMIT reached the
server but whose answer did not is not stored twice when it is sent again.

Held sessions are rows with reason ``open``, checkpointed by one row of
``tarry_runs`` per run, as in the SQLite history (tarry.history): a ``kill -9``
loses at most one flush interval of any session while the database answers.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .events import ACCEPT, CLOSE, Event
from .history import (
    PRUNE_EVERY,
    STALE_AFTER,
    SWEEP_EVERY,
    HistoryError,
    LearnRow,
    _alive,
    default_host,
    learn_rows,
    row,
)
from .sinks import REPORT_EVERY, ThreadedSink, _stderr

SCHEMES = ("postgresql://", "postgres://")
TABLE = "tarry_sessions"
CONNECT_TIMEOUT = 5  # seconds; libpq's connect_timeout
RETRY_MIN, RETRY_MAX = 0.2, 10.0  # reconnect backoff, seconds
FLEET_WINDOW = 120.0  # seconds of stored rows each fleet read looks back over
SCHEMA_LOCK = 7_270_104_101  # pg_advisory_xact_lock key: one migrator at a time

# Each entry upgrades the schema from version i to i + 1 (tarry_meta.schema_version).
MIGRATIONS: list[str] = [
    f"""
    CREATE TABLE {TABLE} (
        id        BIGSERIAL PRIMARY KEY,
        uid       TEXT      NOT NULL UNIQUE,  -- run id and sequence: a retry is not a new row
        host      TEXT      NOT NULL,         -- the tarry host that held the session
        start     DOUBLE PRECISION NOT NULL,  -- epoch seconds, accept
        "end"     DOUBLE PRECISION NOT NULL,  -- epoch seconds, close
        proto     TEXT      NOT NULL,
        listener  TEXT      NOT NULL,
        ip        TEXT      NOT NULL,         -- IPv4 shown as IPv4
        port      INTEGER   NOT NULL,
        duration  DOUBLE PRECISION NOT NULL,
        sent      BIGINT    NOT NULL,
        received  BIGINT    NOT NULL,
        reason    TEXT      NOT NULL,
        country   TEXT      NOT NULL DEFAULT '',
        software  TEXT      NOT NULL DEFAULT '',
        notes     JSONB     NOT NULL DEFAULT '{{}}',
        stored    DOUBLE PRECISION NOT NULL DEFAULT extract(epoch FROM clock_timestamp())
    );
    CREATE INDEX {TABLE}_start ON {TABLE} (start);
    CREATE INDEX {TABLE}_end ON {TABLE} ("end");
    CREATE INDEX {TABLE}_proto_start ON {TABLE} (proto, start);
    CREATE INDEX {TABLE}_ip ON {TABLE} (ip);
    CREATE INDEX {TABLE}_host_start ON {TABLE} (host, start);
    CREATE INDEX {TABLE}_stored ON {TABLE} (stored);
    """,
    f"""
    ALTER TABLE {TABLE} ADD COLUMN run TEXT NOT NULL DEFAULT '';  -- machine/pid/random
    ALTER TABLE {TABLE} ADD COLUMN fd INTEGER NOT NULL DEFAULT -1;
    CREATE INDEX {TABLE}_open ON {TABLE} (run, listener, ip, port, fd) WHERE reason = 'open';
    CREATE TABLE tarry_runs (
        run     TEXT PRIMARY KEY,
        host    TEXT NOT NULL,
        started DOUBLE PRECISION NOT NULL,
        alive   DOUBLE PRECISION NOT NULL   -- the last checkpoint: open rows held until then
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = (
    'uid, host, start, "end", proto, listener, ip, port, duration, sent, received, reason,'
    " country, software, notes, run, fd"
)
INSERT = (
    f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
    " ON CONFLICT (uid) DO NOTHING"
)
_OPEN_KEY = "run = %s AND listener = %s AND ip = %s AND port = %s AND fd = %s AND reason = 'open'"
# A close whose open row is not there is inserted whole; the others complete it,
# taking the close's uid, so that a batch sent again changes nothing.
INSERT_UNLESS_OPEN = (
    f"INSERT INTO {TABLE} ({_COLUMNS}) SELECT %s,%s,%s::float8,%s::float8,%s,%s,%s,%s::int,"
    "%s::float8,%s::bigint,%s::bigint,%s,%s,%s,%s::jsonb,%s,%s::int"
    f" WHERE NOT EXISTS (SELECT 1 FROM {TABLE} WHERE {_OPEN_KEY}) ON CONFLICT (uid) DO NOTHING"
)
COMPLETE = (
    f'UPDATE {TABLE} SET uid = %s, start = %s, "end" = %s, duration = %s, sent = %s,'
    " received = %s, reason = %s, country = %s, software = %s, notes = %s,"
    f" stored = extract(epoch FROM clock_timestamp()) WHERE {_OPEN_KEY}"
)
LOST = f"UPDATE {TABLE} SET reason = 'lost' WHERE {_OPEN_KEY}"
CHECKPOINT = "UPDATE tarry_runs SET alive = greatest(alive, %s) WHERE run = %s"
CRASH = (
    f'UPDATE {TABLE} SET reason = \'crash\', "end" = greatest("end", %(alive)s),'
    ' duration = greatest("end", %(alive)s) - start,'
    " stored = extract(epoch FROM clock_timestamp()) WHERE run = %(run)s AND reason = 'open'"
)
# The sessions as ``tarry report`` reads them: an open row counts up to its run's
# last checkpoint.
_UNTIL = (
    'greatest(s."end", coalesce((SELECT alive FROM tarry_runs r WHERE r.run = s.run), s."end"))'
)
SESSIONS_VIEW = (
    "(SELECT host, start, proto, listener, ip, port, sent, received, reason, country, software,"
    f' notes, CASE WHEN reason = \'open\' THEN {_UNTIL} ELSE s."end" END AS "end",'
    f" CASE WHEN reason = 'open' THEN {_UNTIL} - start ELSE duration END AS duration"
    f" FROM {TABLE} s) AS sessions"
)
_LEARN_WHERE = (
    "proto = 'ssh' AND reason IN ('closed', 'reset') AND notes->>'mode' IN ('drip', 'kex')"
)


def is_url(text: str) -> bool:
    return text.startswith(SCHEMES)


def redact(url: str) -> str:
    """The URL without its password (in the user part or the query), for log lines."""
    out = re.sub(r"^([a-z]+://[^/@?#:]*:)[^/@?#]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", out)


def driver() -> Any:
    """psycopg, or a one-line error naming the extra."""
    try:
        import psycopg
    except ImportError:
        raise HistoryError(
            "history.url: PostgreSQL needs the 'postgres' extra (pip install 'tarry[postgres]')"
        ) from None
    return psycopg


def check_url(url: str) -> str | None:
    """An error text for a URL libpq would not accept, else None."""
    if not is_url(url):
        return 'must start with "postgresql://" (or be "" for the SQLite file)'
    try:
        psycopg = driver()
    except HistoryError:
        return None  # said once the store is built, with the extra to install
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        return f"not a PostgreSQL URL: {str(exc).strip()}"
    return None


def connect(url: str, timeout: float = CONNECT_TIMEOUT) -> Any:
    """An autocommit connection; TCP keepalives notice a vanished server."""
    psycopg = driver()
    return psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=max(1, round(timeout)),
        application_name="tarry",
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    )


def migrate(conn: Any) -> int:
    """Bring the schema to SCHEMA_VERSION (hosts starting together take turns);
    returns the version found."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS tarry_meta (key TEXT PRIMARY KEY, value TEXT)")
        got = conn.execute("SELECT value FROM tarry_meta WHERE key = 'schema_version'").fetchone()
        found = int(got[0]) if got else 0
        if found > SCHEMA_VERSION:
            raise HistoryError(
                f"history schema version {found} is newer than this tarry knows ({SCHEMA_VERSION})"
            )
        for version in range(found, SCHEMA_VERSION):
            conn.execute(MIGRATIONS[version])
        if found < SCHEMA_VERSION:
            conn.execute(
                "INSERT INTO tarry_meta VALUES ('schema_version', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
    return found


# SQLSTATE classes and codes of a refusal that may pass: connection (08), a
# rollback for serialization or deadlock (40), insufficient resources such as a
# full disk (53), operator intervention (57), system error (58); a lock timeout
# (55P03) and a read-only transaction (25006: a standby after a failover).
PASSING_CLASSES = ("08", "40", "53", "57", "58")
PASSING_CODES = ("55P03", "25006")


def passing(exc: BaseException) -> bool:
    """Whether the server refused for a reason that may pass: send again later."""
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in PASSING_CLASSES or state in PASSING_CODES


def _clean(value: object) -> object:
    """PostgreSQL text cannot hold NUL; notes are sanitised already, this is a backstop."""
    return value.replace("\x00", "") if isinstance(value, str) else value


class PgHistoryStore(ThreadedSink):
    """The history sink for a shared PostgreSQL; see the module docstring."""

    name = "history"
    join_timeout = 15.0

    def __init__(
        self,
        url: str,
        host: str = "",
        retention_days: float = 90,
        capacity: int = 100000,
        batch: int = 1000,
        interval: float = 1.0,
        report: Callable[[str], None] = _stderr,
    ) -> None:
        super().__init__(capacity=capacity, batch=batch, interval=interval, report=report)
        self.psycopg = driver()
        problem = check_url(url)
        if problem:
            raise HistoryError(f"history.url: {problem}")
        self.url = url
        self.where = redact(url)
        self.host = host or default_host()
        self.retention_days = retention_days
        self.run = os.urandom(6).hex()
        self.run_id = f"{socket.gethostname()}/{os.getpid()}/{self.run}"
        """This run in ``tarry_runs``: a dead process's open rows can be told."""
        self.seq = 0
        self.retried = 0
        """Batches sent again after the database went away."""
        self.held = 0
        """This run's open rows (about): whether checkpoints are needed."""
        # rows to write, in order: ("a", open row), ("c", a close completing an
        # open row of an earlier batch) or ("i", a whole row); and their events
        self._pending: list[tuple[str, tuple[object, ...]]] = []
        self._pending_events = 0
        self._pending_opens: dict[tuple[object, ...], int] = {}
        self._ckpt_at = 0.0
        self._sweep_at = 0.0
        self._conn: Any = None
        self._down_since: float | None = None
        self._down_dropped = 0
        self._retry_at = 0.0
        self._backoff = RETRY_MIN
        self._prune_at = 0.0
        self._learn_conn: Any = None
        self._fleet_mark: float | None = None
        self._fleet_seen: dict[int, float] = {}
        try:
            # said at start-up when the database is away; the writer goes on trying
            self._conn = self._open()
        except self.psycopg.OperationalError as exc:
            self._went_down(exc)
        except self.psycopg.Error as exc:  # it answered, and said no (rights, schema)
            raise HistoryError(f"history: {self.where}: {' '.join(str(exc).split())}") from exc

    # -- loop thread --

    def emit(self, event: Event) -> None:
        if event.kind != CLOSE and event.kind != ACCEPT:
            return
        buf = self._buf
        n = len(buf)
        if n < self.capacity and not self._stop:
            buf.append(event)
            if n == 0 or n + 1 == self.batch:
                self._wake.set()
            return
        self.dropped += 1
        if self._down_since is not None:
            self._down_dropped += 1
            if self._down_dropped == 1:  # once per outage; the count comes when it ends
                self.report(
                    f"tarry: history: the buffer of {self.capacity} events is full: dropping "
                    f"events until {self.where} is back"
                )
        else:
            now = time.monotonic()
            if now >= self._report_at:
                self._report_at = now + REPORT_EVERY
                self.report(
                    f"tarry: history: {self.where} is not keeping up: {self.dropped} events "
                    f"dropped in all (buffer of {self.capacity} full)"
                )

    # -- writer thread --

    def _open(self) -> Any:
        conn = connect(self.url)
        try:
            migrate(conn)
            now = time.time()
            conn.execute(
                "INSERT INTO tarry_runs VALUES (%s, %s, %s, %s) ON CONFLICT (run)"
                " DO UPDATE SET alive = greatest(tarry_runs.alive, excluded.alive)",
                (self.run_id, self.host, now, now),
            )
            self._sweep(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _sweep(self, conn: Any) -> int:
        """Close the open rows of runs that are gone (reason ``crash``, at their
        last checkpoint): a run of this machine whose process is dead, or any
        run of the fleet not checkpointed for STALE_AFTER seconds."""
        self._sweep_at = time.monotonic() + SWEEP_EVERY
        stale = time.time() - STALE_AFTER
        closed = 0
        runs = conn.execute(
            "SELECT run, alive FROM tarry_runs WHERE run <> %s", (self.run_id,)
        ).fetchall()
        for run, alive in runs:
            if alive < stale or not _alive(run):
                with conn.transaction():
                    closed += conn.execute(CRASH, {"alive": alive, "run": run}).rowcount
                    conn.execute("DELETE FROM tarry_runs WHERE run = %s", (run,))
        return closed

    def _went_down(self, exc: BaseException, what: str = "unreachable") -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(RETRY_MAX, self._backoff * 2)
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._down_dropped = 0
            why = " ".join(str(exc).split()) or type(exc).__name__
            self.report(
                f"tarry: history: {self.where} {what} ({why}); buffering up to "
                f"{self.capacity} events and retrying"
            )

    def _came_back(self) -> None:
        assert self._down_since is not None
        took = time.monotonic() - self._down_since
        self._down_since = None
        self._backoff = RETRY_MIN
        lost = f", {self._down_dropped} events dropped" if self._down_dropped else ""
        self.report(f"tarry: history: {self.where} is back after {took:.1f} s{lost}")

    def _ready(self) -> bool:
        """A live connection, or False while waiting to retry."""
        if self._conn is not None and not self._conn.closed:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            self._conn = self._open()
        except self.psycopg.Error as exc:
            self._went_down(exc)
            return False
        except HistoryError as exc:  # a newer schema appeared: keep trying, say why
            self._went_down(exc)
            return False
        return True

    def _row(self, event: Event) -> tuple[object, ...]:
        self.seq += 1
        uid = f"{self.run}-{self.seq}"
        if event.kind == ACCEPT:
            t = event.time
            return (
                uid, self.host, t, t, event.proto, _clean(event.listener), _clean(event.ip),
                event.port, 0.0, 0, 0, "open", event.country, "", "{}", self.run_id, event.fd,
            )  # fmt: skip
        r = row(event, self.host)
        notes = json.loads(r[-1])  # type: ignore[arg-type]
        notes = {str(_clean(k)): _clean(v) for k, v in notes.items()}
        return (
            uid,
            *(_clean(v) for v in r[:-1]),
            json.dumps(notes, ensure_ascii=True, separators=(",", ":")),
            self.run_id,
            event.fd,
        )

    def _take(self, event: Event) -> None:
        """Add an event to the pending rows; a session accepted and closed
        within them becomes one finished row."""
        r = self._row(event)
        key = (r[5], r[6], r[7], r[16])  # listener, ip, port, fd
        opens = self._pending_opens
        i = opens.pop(key, None)
        if event.kind == ACCEPT:
            if i is not None:  # the close of that one was dropped (buffer full)
                k, old = self._pending[i]
                self._pending[i] = (k, (*old[:11], "lost", *old[12:]))
            opens[key] = len(self._pending)
            self._pending.append(("a", r))
        elif i is not None:
            self._pending[i] = ("i", r)
        else:
            self._pending.append(("c", r))
        self._pending_events += 1

    def _drain(self) -> None:
        buf = self._buf
        while True:
            if not self._pending:
                if not buf:
                    if self.held and time.monotonic() >= self._ckpt_at and self._ready():
                        try:
                            self._insert([])  # a checkpoint alone
                        except self.psycopg.Error as exc:
                            self._went_down(exc)
                        else:
                            if self._down_since is not None:
                                self._came_back()
                    return
                self._pending_opens.clear()
                self._pending_events = 0
                while buf and self._pending_events < self.batch:
                    event = buf.popleft()
                    try:
                        self._take(event)
                    except Exception as exc:  # a bug must not end the writer
                        self.failed += 1
                        self._writer_error(exc)
                if not self._pending:
                    continue
            if not self._ready():
                return
            try:
                try:
                    self._insert(self._pending)
                except self.psycopg.Error as exc:
                    if self._conn is None or self._conn.broken or self._conn.closed:
                        raise
                    if passing(exc):
                        raise
                    # the server refused some row, not the connection: store the rest
                    self._insert_each(self._pending)
            except self.psycopg.Error as exc:
                self.retried += 1
                gone = self._conn is None or self._conn.broken or self._conn.closed
                self._went_down(exc, "unreachable" if gone else "cannot write")
                return
            self.written += self._pending_events
            self._pending = []
            self._pending_events = 0
            if self._down_since is not None:
                self._came_back()
            self._maybe_prune()
            if time.monotonic() >= self._sweep_at:
                try:
                    self._sweep(self._conn)
                except self.psycopg.Error as exc:
                    self._writer_error(exc)

    def _insert(self, items: list[tuple[str, tuple[object, ...]]]) -> None:
        """One transaction: closes of earlier batches, then new rows, then this
        run's checkpoint. Sent again after a lost answer, it changes nothing."""
        closes = [r for k, r in items if k == "c"]
        opens = [r for k, r in items if k == "a"]
        rows = [r for k, r in items if k != "c"]
        run = self.run_id
        with self._conn.transaction(), self._conn.cursor() as cur:
            if closes:
                cur.executemany(INSERT_UNLESS_OPEN, [(*r, run, *r[5:8], r[16]) for r in closes])
                cur.executemany(
                    COMPLETE,
                    [(r[0], *r[2:4], *r[8:15], run, *r[5:8], r[16]) for r in closes],
                )
            if opens:
                cur.executemany(LOST, [(run, *r[5:8], r[16]) for r in opens])
            if rows:
                cur.executemany(INSERT, rows)
            held = self.held + len(opens) - len(closes)
            if held <= 0 and (closes or self.held):  # a close without its open row: count
                cur.execute(
                    f"SELECT count(*) FROM {TABLE} WHERE run = %s AND reason = 'open'", (run,)
                )
                held = cur.fetchone()[0]
            cur.execute(CHECKPOINT, (time.time(), run))
        self.held = held
        self._ckpt_at = time.monotonic() + self.interval

    def _insert_each(self, items: list[tuple[str, tuple[object, ...]]]) -> None:
        """Row by row; the refused ones are counted as failed and left out."""
        for item in items:
            try:
                self._insert([item])
            except self.psycopg.Error as exc:
                if self._conn.broken or self._conn.closed or passing(exc):
                    raise  # the connection went, or may work later: keep the whole batch
                self.failed += 1
                self._pending_events -= 1
                self._writer_error(exc)

    def _maybe_prune(self) -> None:
        """Delete this host's sessions older than its retention; at most once an hour."""
        mono = time.monotonic()
        if self.retention_days <= 0 or mono < self._prune_at or self._conn is None:
            return
        self._prune_at = mono + PRUNE_EVERY
        cutoff = time.time() - self.retention_days * 86400
        try:
            self._conn.execute(
                f'DELETE FROM {TABLE} WHERE host = %s AND "end" < %s', (self.host, cutoff)
            )
        except self.psycopg.Error as exc:
            self._writer_error(exc)

    def _run(self) -> None:
        if self._conn is not None:
            # a first write (a checkpoint) at start: this thread's malloc arena and
            # the driver's buffers are allocated now, not once clients are held
            try:
                self._insert([])
            except self.psycopg.Error as exc:
                self._went_down(exc)
        while True:
            if self._down_since is not None and (self._pending or self._buf or self.held):
                # away: sleep until the next try (events still come in meanwhile)
                self._wake.wait(max(0.0, self._retry_at - time.monotonic()))
                self._wake.clear()
            elif not self._stop and not self._pending and not self._buf:
                self._idle(self._ckpt_at if self.held else None)
            self._drain()
            if self._stop and not self._buf and not self._pending:
                return

    def close(self) -> None:
        super().close()
        if self._pending or self._buf:
            self.report(
                f"tarry: history: {self.where} unreachable at shutdown: "
                f"{len(self._pending) + len(self._buf)} events not written"
            )

    def finish(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return  # still trying; the process is going away anyway
        if self._conn is not None:
            try:
                self._conn.execute(  # a run that closed every session leaves nothing to sweep
                    f"DELETE FROM tarry_runs WHERE run = %s AND NOT EXISTS (SELECT 1 FROM {TABLE}"
                    " WHERE run = %s AND reason = 'open')",
                    (self.run_id, self.run_id),
                )
            except Exception:
                pass
            try:
                self._conn.close()
            except Exception:
                pass

    # -- readers (other threads) --

    @contextmanager
    def _reader(self) -> Iterator[Any]:
        conn = connect(self.url, timeout=3)
        try:
            yield conn
        finally:
            conn.close()

    def totals(self) -> tuple[int, float]:
        """(sessions, seconds held) this host recorded, for the dashboard's all-time figure."""
        with self._reader() as conn:
            n, secs = conn.execute(
                f"SELECT count(*), coalesce(sum(duration), 0) FROM {TABLE} WHERE host = %s",
                (self.host,),
            ).fetchone()
        return int(n), float(secs)

    def per_minute(self, since: float) -> list[tuple[int, str, int]]:
        """Sessions this host started per (epoch minute, proto) since ``since``."""
        with self._reader() as conn:
            rows = conn.execute(
                f"SELECT CAST(floor(start / 60) AS BIGINT) AS m, proto, count(*) FROM {TABLE}"
                " WHERE host = %s AND start >= %s GROUP BY m, proto",
                (self.host, since),
            ).fetchall()
        return [(int(m), p, int(k)) for m, p, k in rows]

    def _learner_conn(self) -> Any:
        conn = self._learn_conn
        if conn is None or conn.closed or conn.broken:
            self._learn_conn = conn = connect(self.url)
        return conn

    shared = True  # the fleet writes it: re-read for what other hosts learned

    def learning_done(self) -> None:
        """The learner thread is ending: it closes the connection it used."""
        conn, self._learn_conn = self._learn_conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def learning_rows(self, since: float, limit: int) -> list[LearnRow]:
        """The fleet's newest ``limit`` SSH departures that ended after ``since``,
        oldest first; also sets the mark ``fleet_rows`` reads on from."""
        try:
            conn = self._learner_conn()
            now = float(conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])
            raw = conn.execute(
                f"SELECT id, stored, ip, duration, reason, notes FROM {TABLE}"
                f' WHERE "end" >= %s AND {_LEARN_WHERE} ORDER BY "end" DESC LIMIT %s',
                (since, limit),
            ).fetchall()
        except self.psycopg.Error:
            self._learn_conn = None
            raise
        self._fleet_mark = now
        self._fleet_seen = {i: st for i, st, *_ in raw if st > now - FLEET_WINDOW}
        return learn_rows([r[2:] for r in raw])

    def fleet_rows(self, limit: int) -> list[LearnRow]:
        """SSH departures the other hosts stored since the last read, oldest first.

        Rows are read by the server's time of storing, over a window reaching
        FLEET_WINDOW back, and rows already seen are skipped: a batch that
        commits later than rows stored after it is still read once.
        """
        try:
            conn = self._learner_conn()
            now = float(conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])
            mark = self._fleet_mark if self._fleet_mark is not None else now
            raw = conn.execute(
                f"SELECT id, stored, ip, duration, reason, notes FROM {TABLE}"
                f" WHERE stored > %s AND host <> %s AND {_LEARN_WHERE} ORDER BY stored LIMIT %s",
                (mark - FLEET_WINDOW, self.host, limit),
            ).fetchall()
        except self.psycopg.Error:
            self._learn_conn = None
            raise
        seen = self._fleet_seen
        fresh = [r for r in raw if r[0] not in seen]
        for i, st, *_ in fresh:
            seen[i] = st
        # a full read goes on from its last row next time, not from now
        self._fleet_mark = raw[-1][1] + FLEET_WINDOW if len(raw) >= limit else now
        for i in [i for i, st in seen.items() if st <= now - FLEET_WINDOW]:
            del seen[i]
        return learn_rows([r[2:] for r in reversed(fresh)])
