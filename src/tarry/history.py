"""The history store: one SQLite table of finished sessions.

Writes happen on a writer thread in batches (one transaction per batch), so the
event loop only appends to a deque. The database runs in WAL mode with
``synchronous=NORMAL``: a committed batch survives the process being killed
(the WAL is in the OS page cache), and a crash mid-batch rolls that batch back
instead of corrupting the file. So ``kill -9`` loses at most the events still
buffered: about one flush interval, or one batch.

Only close events are stored: a session is known once it ends (its duration,
bytes and what the client said). Clients still held at a ``kill -9`` are lost.

Each row names the tarry host that held the session (``[history] host``, the
machine's hostname by default), so that a report reads the same whether the
history is this file or a fleet's shared PostgreSQL (tarry.pghistory).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from .events import CLOSE, Event
from .paths import state_dir
from .sinks import ThreadedSink, _stderr
from .software import software

DEFAULT_NAME = "history.sqlite3"
PRUNE_EVERY = 3600.0  # seconds between two retention passes

# Each entry upgrades the schema from version i to i + 1 (PRAGMA user_version).
MIGRATIONS: list[str] = [
    """
    CREATE TABLE sessions (
        id        INTEGER PRIMARY KEY,
        start     REAL    NOT NULL,   -- epoch seconds, accept
        end       REAL    NOT NULL,   -- epoch seconds, close
        proto     TEXT    NOT NULL,
        listener  TEXT    NOT NULL,
        ip        TEXT    NOT NULL,   -- IPv4 shown as IPv4
        port      INTEGER NOT NULL,
        duration  REAL    NOT NULL,
        sent      INTEGER NOT NULL,
        received  INTEGER NOT NULL,
        reason    TEXT    NOT NULL,
        country   TEXT    NOT NULL DEFAULT '',
        software  TEXT    NOT NULL DEFAULT '',  -- ssh_id, user_agent or ehlo
        notes     TEXT    NOT NULL DEFAULT '{}' -- every note, as a JSON object
    );
    CREATE INDEX sessions_start ON sessions(start);
    CREATE INDEX sessions_end ON sessions(end);
    CREATE INDEX sessions_proto_start ON sessions(proto, start);
    CREATE INDEX sessions_ip ON sessions(ip);
    """,
    """
    ALTER TABLE sessions ADD COLUMN host TEXT NOT NULL DEFAULT '';  -- the tarry host
    CREATE INDEX sessions_host_start ON sessions(host, start);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class HistoryError(Exception):
    """The store cannot be used; the text is one line for the operator."""


def default_dir() -> Path:
    return state_dir()


def default_path() -> Path:
    return default_dir() / DEFAULT_NAME


def default_host() -> str:
    """The name each row carries when ``[history] host`` is not set."""
    return socket.gethostname() or "localhost"


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION; returns the version found."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise HistoryError(
            f"history schema version {found} is newer than this tarry knows ({SCHEMA_VERSION})"
        )
    for version in range(found, SCHEMA_VERSION):
        with conn:  # each step is one transaction: a crash leaves the old version
            conn.executescript(
                "BEGIN;" + MIGRATIONS[version] + f";PRAGMA user_version = {version + 1};"
            )
    return found


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating) the store for writing, in WAL mode, at the current schema."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise HistoryError(f"history: {path}: cannot use WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        raise HistoryError(f"history: {path}: {exc}") from exc
    except OSError as exc:
        raise HistoryError(f"history: {path}: {exc.strerror or exc}") from exc
    return conn


def row(event: Event, host: str = "") -> tuple[object, ...]:
    _key, soft = software(event)
    notes = json.dumps(dict(event.notes), ensure_ascii=False, separators=(",", ":"))
    return (
        host,
        event.time - event.duration,
        event.time,
        event.proto,
        event.listener,
        event.ip,
        event.port,
        event.duration,
        event.sent,
        event.received,
        event.reason,
        event.country,
        soft,
        notes,
    )


INSERT = (
    "INSERT INTO sessions (host, start, end, proto, listener, ip, port, duration, sent, received,"
    " reason, country, software, notes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)

# What the SSH adaptive mode learns from (tarry.baits.ssh.PatienceStore.learn):
# departures by the client from a drip or kex session.
LearnRow = tuple[str, float, str, dict[str, str]]  # ip, duration, reason, notes
LEARN_SQL = (
    "SELECT ip, duration, reason, notes FROM sessions WHERE end >= ? AND proto = 'ssh'"
    " AND reason IN ('closed', 'reset') AND json_extract(notes, '$.mode') IN ('drip', 'kex')"
    " ORDER BY end DESC LIMIT ?"
)


def learn_rows(raw: list[tuple[str, float, str, object]]) -> list[LearnRow]:
    """Rows newest first, as the learner wants them: oldest first, notes a dict."""
    out: list[LearnRow] = []
    for ip, duration, reason, notes in reversed(raw):
        if isinstance(notes, str):
            try:
                notes = json.loads(notes)
            except ValueError:
                continue
        if isinstance(notes, dict):
            out.append((ip, float(duration), reason, {str(k): str(v) for k, v in notes.items()}))
    return out


class HistoryStore(ThreadedSink):
    """The sink that records close events, batched off the loop thread.

    The file is opened (and migrated) in the constructor so that a bad path is
    reported at start-up; the writer thread then owns the connection.
    """

    linger = True  # one transaction per flush interval, not per event

    name = "history"
    join_timeout = 15.0

    def __init__(
        self,
        path: str | Path,
        host: str = "",
        retention_days: float = 90,
        capacity: int = 100000,
        batch: int = 1000,
        interval: float = 1.0,
        report: Callable[[str], None] = _stderr,
    ) -> None:
        super().__init__(capacity=capacity, batch=batch, interval=interval, report=report)
        self.path = Path(path)
        self.host = host or default_host()
        self.retention_days = retention_days
        self.conn = connect(self.path)
        self._prune_at = 0.0

    def emit(self, event: Event) -> None:
        if event.kind == CLOSE:
            super().emit(event)

    def write(self, batch: list[Event]) -> None:
        conn = self.conn
        conn.execute("BEGIN")
        try:
            conn.executemany(INSERT, [row(e, self.host) for e in batch])
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self.maybe_prune()

    def maybe_prune(self, now: float | None = None) -> int:
        """Delete sessions older than the retention; at most once an hour."""
        mono = time.monotonic()
        if self.retention_days <= 0 or mono < self._prune_at:
            return 0
        self._prune_at = mono + PRUNE_EVERY
        cutoff = (now if now is not None else time.time()) - self.retention_days * 86400
        with self.conn:
            cur = self.conn.execute("DELETE FROM sessions WHERE end < ?", (cutoff,))
        return cur.rowcount

    def _run(self) -> None:
        try:
            self.maybe_prune()
        except sqlite3.Error as exc:
            self._writer_error(exc)
        super()._run()

    def finish(self) -> None:
        try:
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self.conn.close()
        except sqlite3.Error:
            pass

    def totals(self) -> tuple[int, float]:
        """(sessions, seconds held) recorded so far, for the dashboard's all-time figure."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            n, secs = conn.execute("SELECT count(*), total(duration) FROM sessions").fetchone()
        finally:
            conn.close()
        return int(n), float(secs)

    def per_minute(self, since: float) -> list[tuple[int, str, int]]:
        """Sessions started per (epoch minute, proto) since ``since``, to seed the dashboard."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return conn.execute(
                "SELECT CAST(start / 60 AS INTEGER) AS m, proto, count(*) FROM sessions"
                " WHERE start >= ? GROUP BY m, proto",
                (since,),
            ).fetchall()
        finally:
            conn.close()

    def learning_rows(self, since: float, limit: int) -> list[LearnRow]:
        """The newest ``limit`` SSH departures that ended after ``since``, oldest
        first: what the adaptive mode seeds its memory with at start."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return learn_rows(conn.execute(LEARN_SQL, (since, limit)).fetchall())
        finally:
            conn.close()
