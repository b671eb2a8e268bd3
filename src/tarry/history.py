"""The history store: one SQLite table of finished sessions.

Writes happen on a writer thread in batches (one transaction per batch), so the
event loop only appends to a deque. The database runs in WAL mode with
``synchronous=NORMAL``: a committed batch survives the process being killed
(the WAL is in the OS page cache), and a crash mid-batch rolls that batch back
instead of corrupting the file. So ``kill -9`` loses at most the events still
buffered: about one flush interval, or one batch.

A session's row is written when it is accepted (reason ``open``) and completed
when it closes. While clients are held, the writer checkpoints every flush
interval: one row of table ``runs`` says until when this run (this process) was
alive, and a held session's time is counted up to then, by ``tarry report``
and when the rows are closed. So a ``kill -9`` loses at most one flush interval
of any session, held or closed, at a cost that does not grow with the clients
held. The next start closes a dead run's open rows with reason ``crash`` at its
last checkpoint. Bytes of a held session are written only at close: a crash
loses those.

A write that fails for a reason that passes (another process holding the
database lock, a full disk) is retried with backoff, 0.1 s doubling to 5 s; the
events wait in the buffer meanwhile, and only what overflows it is dropped. The
trouble and the recovery are each said once on stderr.

Each row names the tarry host that held the session (``[history] host``, the
machine's hostname by default), so that a report reads the same whether the
history is this file or a fleet's shared PostgreSQL (tarry.pghistory).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .bait import LearnRow
from .events import ACCEPT, CLOSE, Event
from .paths import state_dir
from .sinks import ThreadedSink, _stderr
from .software import software

DEFAULT_NAME = "history.sqlite3"
PRUNE_EVERY = 3600.0  # seconds between two retention passes
RETRY_MIN, RETRY_MAX = 0.1, 5.0  # backoff of a write that failed for a passing reason, seconds
STALE_AFTER = 600.0  # seconds without a checkpoint after which another machine's run is dead
SWEEP_EVERY = 60.0  # seconds between two looks for other runs' stale open rows
# SQLite primary result codes that pass: locks, a full disk, I/O (e.g. ENOSPC on the WAL)
TRANSIENT = {5, 6, 8, 10, 13, 14, 15}  # BUSY LOCKED READONLY IOERR FULL CANTOPEN PROTOCOL
TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EROFS}

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
    """
    ALTER TABLE sessions ADD COLUMN run TEXT NOT NULL DEFAULT '';  -- machine/pid/random
    ALTER TABLE sessions ADD COLUMN fd INTEGER NOT NULL DEFAULT -1;
    -- rows of sessions still held (reason 'open'), completed at close
    CREATE INDEX sessions_open ON sessions(run, listener, ip, port, fd) WHERE reason = 'open';
    -- each run's last checkpoint: its open rows are held at least until ``alive``
    CREATE TABLE runs (
        run     TEXT PRIMARY KEY,
        host    TEXT NOT NULL,
        started REAL NOT NULL,
        alive   REAL NOT NULL
    );
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


def transient(exc: BaseException) -> bool:
    """Whether a failed write may work later: a lock, a full disk, an I/O error."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:  # no code: judge by the message SQLite gives
            text = str(exc)
            return any(w in text for w in ("locked", "busy", "full", "disk I/O"))
        return code & 0xFF in TRANSIENT
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def _alive(run: str) -> bool:
    """Whether the run that wrote some open rows may still be running: it is
    known dead only when it ran on this machine and its process is gone."""
    machine, _, rest = run.partition("/")
    pid = rest.partition("/")[0]
    if machine != socket.gethostname() or not pid.isdigit():
        return True
    if int(pid) == os.getpid():
        return False  # an earlier run that had our pid (PID 1 in a container)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # another user's process
    return True


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
    " reason, country, software, notes, run, fd) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_OPEN_KEY = "run = ? AND listener = ? AND ip = ? AND port = ? AND fd = ? AND reason = 'open'"
# A close whose open row is not there (its ACCEPT was dropped, or written by an
# older tarry) is inserted whole; the others complete their open row.
INSERT_UNLESS_OPEN = (
    "INSERT INTO sessions (host, start, end, proto, listener, ip, port, duration, sent, received,"
    " reason, country, software, notes, run, fd) SELECT ?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?"
    f" WHERE NOT EXISTS (SELECT 1 FROM sessions WHERE {_OPEN_KEY})"
)
COMPLETE = (
    "UPDATE sessions SET start = ?, end = ?, duration = ?, sent = ?, received = ?, reason = ?,"
    f" country = ?, software = ?, notes = ? WHERE {_OPEN_KEY}"
)
# an open row left by a close that was dropped (buffer full): its key is taken again
LOST = f"UPDATE sessions SET reason = 'lost' WHERE {_OPEN_KEY}"
CHECKPOINT = "UPDATE runs SET alive = max(alive, ?) WHERE run = ?"
# a dead run's open rows: held until its last checkpoint
CRASH = (
    "UPDATE sessions SET reason = 'crash', end = max(end, ?1), duration = max(end, ?1) - start"
    " WHERE run = ?2 AND reason = 'open'"
)
# The sessions as ``tarry report`` reads them: an open row counts up to its run's
# last checkpoint (the subquery runs for open rows only).
_ALIVE = "(SELECT alive FROM runs WHERE runs.run = sessions.run)"
_UNTIL = f"max(end, coalesce({_ALIVE}, end))"
SESSIONS_VIEW = (
    "(SELECT host, start, proto, listener, ip, port, sent, received, reason, country, software,"
    f" notes, CASE WHEN reason = 'open' THEN {_UNTIL} ELSE end END AS end,"
    f" CASE WHEN reason = 'open' THEN {_UNTIL} - start ELSE duration END AS duration"
    " FROM sessions)"
)

# What the SSH adaptive mode learns from (tarry.baits.ssh.PatienceStore.learn):
# departures by the client from a drip or kex session.
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
    """The sink that records sessions, batched off the loop thread.

    The file is opened (and migrated) in the constructor so that a bad path is
    reported at start-up; the writer thread then owns the connection. No state
    is kept per held client: open rows live in the file, keyed by this run,
    listener, peer and fd, and one row of ``runs`` checkpoints them all.
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
        self.run = f"{socket.gethostname()}/{os.getpid()}/{os.urandom(4).hex()}"
        self.held = 0
        """This run's open rows (about): whether checkpoints are needed."""
        self.checkpointed = 0.0
        """Wall-clock time of the last checkpoint written."""
        self.retried = 0
        """Writes tried again after a passing failure."""
        self._ckpt_at = 0.0  # monotonic time the next checkpoint is due
        self._prune_at = 0.0
        self._sweep_at = 0.0
        self._trouble_since: float | None = None
        self._trouble_dropped = 0
        self._give_up_at: float | None = None  # set by close(): retries end by then
        self.warm = threading.Event()  # the writer's first (rolled back) write is done
        self._nap = threading.Event()  # never set: an interruptible sleep for the backoff
        try:
            self.crashed = self.sweep()
            self.checkpointed = now = time.time()
            with self.conn:
                self.conn.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?)", (self.run, self.host, now, now)
                )
        except sqlite3.Error as exc:
            raise HistoryError(f"history: {self.path}: {exc}") from exc

    def _warm_up(self) -> None:
        """Write one session and roll it back, on the writer thread at start:
        its malloc arena, the statements and the pages they touch are
        allocated then, not once clients are held (whose memory stays flat)."""
        t = time.time()
        close = (*row(Event(CLOSE, t, "ssh", "", "192.0.2.0", reason="closed")), self.run, -2)
        key = (self.run, "", "192.0.2.0", 0, -2)
        conn = self.conn
        conn.execute("BEGIN")
        try:
            conn.execute(LOST, key)
            conn.execute(INSERT, (*close[:10], "open", *close[11:]))
            conn.execute(INSERT_UNLESS_OPEN, (*close, *key))
            conn.execute(COMPLETE, (*close[1:3], *close[7:14], *key))
            conn.execute(CHECKPOINT, (t, self.run))
        finally:
            conn.execute("ROLLBACK")

    def emit(self, event: Event) -> None:
        if event.kind == CLOSE or event.kind == ACCEPT:
            super().emit(event)

    # -- writer thread -------------------------------------------------------------

    def write(self, batch: list[Event]) -> None:
        """Store ``batch`` and this run's checkpoint in one transaction; a
        failure that passes is retried until it works."""
        self._retrying(lambda: self._store(batch), len(batch))
        try:
            self.maybe_prune()
            self.maybe_sweep()
        except sqlite3.Error as exc:  # the batch is stored: only report
            self._writer_error(exc)

    def _store(self, batch: list[Event]) -> None:
        host, run = self.host, self.run
        # a session accepted and closed within the batch becomes one finished row
        inserts: list[tuple[object, ...] | None] = []
        pending: dict[tuple[str, str, int, int], int] = {}
        closes: list[tuple[object, ...]] = []
        lost: list[tuple[object, ...]] = []
        opened = closed = 0
        for e in batch:
            key = (e.listener, e.ip, e.port, e.fd)
            if e.kind == ACCEPT:
                i = pending.pop(key, None)
                if i is not None:  # the close of that one was dropped (buffer full)
                    prev = inserts[i]
                    assert prev is not None  # only closed slots are None, and they left pending
                    inserts[i] = (*prev[:10], "lost", *prev[11:])
                else:
                    lost.append((run, *key))
                pending[key] = len(inserts)
                inserts.append(
                    (host, e.time, e.time, e.proto, e.listener, e.ip, e.port, 0.0, 0, 0, "open",
                     e.country, "", "{}", run, e.fd)
                )  # fmt: skip
                opened += 1
            else:
                r = (*row(e, host), run, e.fd)
                i = pending.pop(key, None)
                if i is not None:
                    inserts[i] = r
                    opened -= 1
                else:
                    closes.append(r)
                    closed += 1
        conn = self.conn
        conn.execute("BEGIN")
        try:
            if closes:
                conn.executemany(INSERT_UNLESS_OPEN, [(*r, run, *r[4:7], r[15]) for r in closes])
                conn.executemany(
                    COMPLETE, [(*r[1:3], *r[7:14], run, *r[4:7], r[15]) for r in closes]
                )
            if lost:
                conn.executemany(LOST, lost)
            rows = [r for r in inserts if r is not None]
            if rows:
                conn.executemany(INSERT, rows)
            held = self.held + opened - closed
            if held <= 0 and (closes or self.held):  # a close without its open row: count
                held = conn.execute(
                    "SELECT count(*) FROM sessions WHERE run = ? AND reason = 'open'", (run,)
                ).fetchone()[0]
            now = time.time()
            conn.execute(CHECKPOINT, (now, run))
            conn.execute("COMMIT")  # may fail too (SQLITE_FULL writing the WAL)
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        self.held = held
        self.checkpointed = now
        self._ckpt_at = time.monotonic() + self.interval

    def _retrying(self, attempt: Callable[[], None], events: int) -> None:
        """Run ``attempt`` until it works, backing off while its failure passes.

        The batch in hand waits here and new events wait in the buffer, which
        drops (and counts) only what overflows it. At shutdown the retries end
        shortly before ``close()`` stops waiting.
        """
        delay = RETRY_MIN
        began, dropped = time.monotonic(), self.dropped  # a busy wait may come first
        while True:
            try:
                attempt()
                break
            except (sqlite3.Error, OSError) as exc:
                give_up = self._give_up_at
                if not transient(exc) or (give_up is not None and time.monotonic() >= give_up):
                    raise
                if self._trouble_since is None:
                    self._trouble_since, self._trouble_dropped = began, dropped
                    self.report(
                        f"tarry: history: {self.path}: cannot write ({exc}); keeping events in "
                        f"the buffer ({self.capacity} at most) and retrying"
                    )
                self.retried += 1
                wait = delay
                if give_up is not None:
                    wait = min(wait, max(0.0, give_up - time.monotonic()))
                self._nap.wait(wait)
                delay = min(RETRY_MAX, delay * 2)
        if self._trouble_since is not None:
            took = time.monotonic() - self._trouble_since
            self._trouble_since = None
            self.report(
                f"tarry: history: writing again after {took:.1f} s; "
                f"{events + len(self._buf)} events waited, "
                f"{self.dropped - self._trouble_dropped} dropped"
            )

    def maybe_prune(self, now: float | None = None) -> int:
        """Delete sessions older than the retention; at most once an hour."""
        mono = time.monotonic()
        if self.retention_days <= 0 or mono < self._prune_at:
            return 0
        self._prune_at = mono + PRUNE_EVERY
        cutoff = (now if now is not None else time.time()) - self.retention_days * 86400
        with self.conn:
            cur = self.conn.execute(
                "DELETE FROM sessions WHERE end < ? AND reason <> 'open'", (cutoff,)
            )
        return cur.rowcount

    def maybe_sweep(self) -> int:
        mono = time.monotonic()
        if mono < self._sweep_at:
            return 0
        return self.sweep()

    def sweep(self) -> int:
        """Close the open rows of runs that are gone, with reason ``crash`` at
        their last checkpoint: a run of this machine whose process is dead, or
        any run not checkpointed for STALE_AFTER seconds. Returns the rows closed."""
        self._sweep_at = time.monotonic() + SWEEP_EVERY
        conn = self.conn
        stale = time.time() - STALE_AFTER
        runs = conn.execute("SELECT run, alive FROM runs WHERE run <> ?", (self.run,)).fetchall()
        closed = 0
        for run, alive in runs:
            if alive < stale or not _alive(run):
                with conn:
                    closed += conn.execute(CRASH, (alive, run)).rowcount
                    conn.execute("DELETE FROM runs WHERE run = ?", (run,))
        return closed

    def _run(self) -> None:
        try:
            self._warm_up()
            self.maybe_prune()
        except sqlite3.Error as exc:
            self._writer_error(exc)
        self.warm.set()
        while True:
            if not self._buf and not self._stop:
                # idle until an event or the checkpoint; a batch is one transaction
                self._idle(self._ckpt_at if self.held else None)
            self._drain()
            if self.held and time.monotonic() >= self._ckpt_at:
                try:
                    self.write([])
                except Exception as exc:
                    self._writer_error(exc)
            if self._stop and not self._buf:
                return

    def close(self) -> None:
        self._give_up_at = time.monotonic() + max(0.0, self.join_timeout - 2.0)
        super().close()

    def finish(self) -> None:
        try:
            with self.conn:  # a run that closed every session leaves nothing to sweep
                self.conn.execute(
                    "DELETE FROM runs WHERE run = ? AND NOT EXISTS (SELECT 1 FROM sessions"
                    " WHERE run = ? AND reason = 'open')",
                    (self.run, self.run),
                )
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

    shared = False  # one host writes it: nothing to refresh

    def fleet_rows(self, limit: int) -> list[LearnRow]:
        return []

    def learning_done(self) -> None:
        """Each read opens its own connection: nothing to let go of."""

    def learning_rows(self, since: float, limit: int) -> list[LearnRow]:
        """The newest ``limit`` SSH departures that ended after ``since``, oldest
        first: what the adaptive mode seeds its memory with at start."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return learn_rows(conn.execute(LEARN_SQL, (since, limit)).fetchall())
        finally:
            conn.close()
