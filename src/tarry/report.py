"""``tarry report``: what the history store says, in the terminal.

Reads the SQLite history (read-only, so it is safe while tarry runs), or a
fleet's shared PostgreSQL history (``--db postgresql://...``), and prints the
attackers' time wasted, sessions, unique addresses, the tarry hosts, the top
addresses, countries and client software, a histogram of hold durations and
activity per hour or day, as a table, JSON or CSV. Times are UTC.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sqlite3
import sys
import time
from calendar import timegm
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from .bait import shown
from .history import SCHEMA_VERSION, SESSIONS_VIEW, default_path
from .pghistory import is_url, redact
from .software import family
from .stats import DURATION_BUCKETS

PROG = "tarry report"
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SPAN_DAYS = 36500  # the longest span back from now: 100 years, past any history
STREAM_BATCH = 1000  # rows fetched at a time by an export
TOP_MAX = 100_000  # rows in a top list; far more than a terminal shows, far less than SQL's int64
_FORMATS = (
    "%Y-%m-%d",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
)


class ReportError(Exception):
    """Bad input; the text is the one line the user sees."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, no usage dump
        raise ReportError(message)


SLOTS = {
    "minute": (60, "%Y-%m-%d %H:%M"),
    "hour": (3600, "%Y-%m-%d %H:00"),
    "day": (86400, "%Y-%m-%d"),
}
# top lists read from the notes: section, the note, its label (tarry.baits.http, .smtp)
NOTE_TOPS = (
    ("top_paths", "path", "path"),
    ("top_senders", "mail_from", "sender"),
    ("top_recipients", "rcpt_to", "recipient"),
    ("top_commands", "command", "command"),  # a session's last command (redis, ...)
)
SESSION_COLUMNS = (
    "start", "end", "host", "proto", "listener", "ip", "port", "duration", "sent",
    "received", "reason", "country", "software", "notes",
)  # fmt: skip
# notes an export's CSV also gives a column of their own, for a spreadsheet's filters
CSV_NOTES = ("path", "mail_from", "rcpt_to", "auth_user", "auth_pass")
_SOFTWARE_KEY = {"ssh": "ssh_id", "http": "user_agent", "smtp": "ehlo"}
_SOFTWARE_KEY.update(dict.fromkeys(("redis", "mysql", "postgresql"), "client"))


def _by_family(rows: Sequence[Sequence[Any]], top: int) -> list[dict[str, Any]]:
    """Sessions and seconds per (protocol, client family), most seconds first: what
    each kind of tool was made to waste, whatever version string it sent."""
    sums: dict[tuple[str, str], list[float]] = {}
    for proto, sw, n, secs in rows:
        fam = family(_SOFTWARE_KEY.get(proto, ""), sw or "") or "none"
        acc = sums.setdefault((proto, fam), [0, 0.0])
        acc[0] += n
        acc[1] += secs
    ranked = sorted(sums.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))[:top]
    return [
        {"proto": p, "family": f, "sessions": int(n), "seconds": round(secs, 3)}
        for (p, f), (n, secs) in ranked
    ]


def parse_when(text: str, now: float) -> float:
    """An absolute UTC date/time or a span back from now (``7d``, ``24h``, ``30m``)."""
    t = text.strip()
    m = _RELATIVE.match(t)
    if m:
        span = float(m.group(1)) * _UNITS[m.group(2)]  # "9" * 400 reads as inf
        if not span <= SPAN_DAYS * 86400:
            raise ValueError(f"{shown(text)} is too long a span: at most {SPAN_DAYS}d (100 years)")
        return now - span
    if t.endswith("Z"):
        t = t[:-1]
    for fmt in _FORMATS:
        try:
            return float(timegm(time.strptime(t, fmt)))
        except ValueError:
            continue
    raise ValueError(
        f"cannot read {shown(text)} (use 2026-11-01, 2026-11-01T10:00, or 7d, 24h, 30m)"
    )


def _top(text: str) -> int:
    """--top's type: bounded here, as SQLite overflows past 2**63 with a traceback."""
    try:
        value = int(text)
    except ValueError:  # not a number, or 4,300 digits and more
        value = None
    if value is None or not 1 <= value <= TOP_MAX:
        raise argparse.ArgumentTypeError(
            f"must be an integer from 1 to {TOP_MAX}, not {shown(text)}"
        )
    return value


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description=(
            "Summarise the tarpit's history store: sessions, time wasted, bytes sent,\n"
            "the tarry hosts, the top addresses, countries and client software, and\n"
            "activity over time. The store is read-only here; tarry serve may keep\n"
            "writing to it. A fleet's shared PostgreSQL history is read with\n"
            "--db postgresql://..."
        ),
        epilog=(
            "exit status:\n  0 success; 2 no store, a bad store or a bad option (one line)\n\n"
            "examples:\n  tarry report --since 7d\n"
            "  tarry report --proto ssh,smtp --since 2026-11-01 --format json\n"
            "  tarry report --db /var/lib/tarry/history.sqlite3 --by hour --since 24h\n"
            "  tarry report --db postgresql://tarry@db/tarry --host edge-1,edge-2"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--db",
        help=f"the history: a SQLite file or a postgresql:// URL (default: {default_path()})",
    )
    p.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="take the history from this tarry.toml's [history] url or path (when --db is not given)",
    )
    p.add_argument(
        "--since",
        help="start of the range: 2026-11-01[T10:00] (UTC) or 7d, 24h, 30m (at most 36500d)",
    )
    p.add_argument("--until", help="end of the range (exclusive), same forms; default: now")
    p.add_argument(
        "--proto",
        action="append",
        default=[],
        help="only this protocol (ssh, http, smtp, ...); repeat or separate with commas",
    )
    p.add_argument(
        "--host",
        action="append",
        default=[],
        help="only this tarry host (a shared history); repeat or separate with commas",
    )
    p.add_argument(
        "--format",
        choices=("table", "json", "csv", "html"),
        help="table (default), json, csv, or html: one self-contained page with the charts"
        " (the dashboard extra); with --sessions: csv (default) or json (one object a line)",
    )
    p.add_argument(
        "--sessions",
        action="store_true",
        help="export every session in the range, one row each, instead of the summary",
    )
    p.add_argument(
        "--top", type=_top, default=10, help=f"rows in each top list, 1 to {TOP_MAX} (default 10)"
    )
    p.add_argument(
        "--by",
        choices=tuple(SLOTS),
        default="day",
        help="activity per minute, hour or day (default day)",
    )
    return p


class Db:
    """A history to read: its connection, its SQL dialect and its table."""

    def __init__(self, conn: Any, table: str, pg: bool = False, host_column: str = "host") -> None:
        self.conn = conn
        self.table = table
        self.pg = pg
        self.host = host_column
        self.errors: tuple[type[BaseException], ...] = (sqlite3.DatabaseError,)

    def rows(self, sql: str, args: Sequence[Any]) -> list[Any]:
        """``sql`` written with ``?`` placeholders and ``{t}`` for the table."""
        sql = sql.replace("{t}", self.table)
        if self.pg:
            sql = sql.replace("%", "%%").replace("?", "%s")
        return self.conn.execute(sql, list(args)).fetchall()

    def slot(self, width: int) -> str:
        """The start time's slot of ``width`` seconds, as an integer."""
        if self.pg:
            return f"CAST(floor(start / {width}) AS BIGINT)"
        return f"CAST(start / {width} AS INTEGER)"

    def note(self, key: str) -> str:
        """One note of a session as text (NULL when the session has none); ``key``
        is one of ours, never a peer's."""
        if self.pg:
            return f"(notes->>'{key}')"
        return f"json_extract(notes, '$.{key}')"

    def stream(self, sql: str, args: Sequence[Any]) -> Iterator[Any]:
        """Like ``rows``, a batch at a time: an export of millions of rows stays small."""
        sql = sql.replace("{t}", self.table)
        if self.pg:
            sql = sql.replace("%", "%%").replace("?", "%s")
        cur = self.conn.execute(sql, list(args))
        while batch := cur.fetchmany(STREAM_BATCH):
            yield from batch

    def close(self) -> None:
        self.conn.close()


def open_db(target: str | Path) -> Db:
    if isinstance(target, str) and is_url(target):
        return open_pg(target)
    path = Path(target)
    if not path.exists():
        raise ReportError(f"no history database at {path} (is [history] enabled? pass --db PATH)")
    if path.is_dir():
        raise ReportError(f"{path} is a directory, not a history database")
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        has_table = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sessions'"
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise ReportError(f"{path}: {exc}") from exc
    if version > SCHEMA_VERSION:
        raise ReportError(
            f"{path}: history schema version {version} is newer than this tarry reads "
            f"({SCHEMA_VERSION}); upgrade tarry"
        )
    if version < 1 or not has_table:
        raise ReportError(f"{path}: not a tarry history database")
    # a file not yet opened by a tarry that names hosts (schema 1): one unnamed host;
    # from schema 3 on, a session still open counts up to its run's last checkpoint
    table = SESSIONS_VIEW if version >= 3 else "sessions"
    return Db(conn, table, host_column="host" if version >= 2 else "''")


def open_pg(url: str) -> Db:
    from .history import HistoryError
    from .pghistory import SCHEMA_VERSION as PG_VERSION
    from .pghistory import SESSIONS_VIEW, TABLE, connect, driver

    where = redact(url)
    try:
        psycopg = driver()
        conn = connect(url)
    except HistoryError as exc:
        raise ReportError(str(exc)) from exc
    except Exception as exc:  # psycopg.Error: unreachable, refused, no such database
        raise ReportError(f"{where}: {' '.join(str(exc).split())}") from exc
    try:
        conn.read_only = True
        got = conn.execute(
            "SELECT value FROM tarry_meta WHERE key = 'schema_version'"
            if conn.execute("SELECT to_regclass('tarry_meta')").fetchone()[0]
            else "SELECT NULL"
        ).fetchone()
    except psycopg.Error as exc:
        conn.close()
        raise ReportError(f"{where}: {' '.join(str(exc).split())}") from exc
    version = int(got[0]) if got and got[0] is not None else 0
    if version > PG_VERSION:
        conn.close()
        raise ReportError(
            f"{where}: history schema version {version} is newer than this tarry reads "
            f"({PG_VERSION}); upgrade tarry"
        )
    if version < 1:
        conn.close()
        raise ReportError(f"{where}: no tarry history in this database")
    # from schema 2 on, a session still open counts up to its run's last checkpoint
    db = Db(conn, SESSIONS_VIEW if version >= 2 else TABLE, pg=True)
    db.errors = (psycopg.Error,)
    return db


def _bucket_sql() -> str:
    parts = [
        f"WHEN duration < {le!r} THEN {i}" for i, (le, _label) in enumerate(DURATION_BUCKETS[:-1])
    ]
    return "CASE " + " ".join(parts) + f" ELSE {len(DURATION_BUCKETS) - 1} END"


def _where(
    db: Db,
    since: float | None,
    until: float | None,
    protos: Sequence[str],
    hosts: Sequence[str],
) -> tuple[str, list[Any]]:
    """The WHERE clause of a range and its arguments."""
    where: list[str] = ["1 = 1"]
    args: list[Any] = []
    if since is not None:
        where.append("start >= ?")
        args.append(since)
    if until is not None:
        where.append("start < ?")
        args.append(until)
    if protos:
        where.append("proto IN (" + ",".join("?" * len(protos)) + ")")
        args.extend(protos)
    if hosts:
        where.append(f"{db.host} IN (" + ",".join("?" * len(hosts)) + ")")
        args.extend(hosts)
    return " AND ".join(where), args


def collect(
    db: Db,
    since: float | None,
    until: float | None,
    protos: Sequence[str],
    top: int,
    by: str,
    hosts: Sequence[str] = (),
) -> dict[str, Any]:
    """Every section of the report as plain data."""
    w, args = _where(db, since, until, protos, hosts)

    def q(sql: str, extra: Sequence[Any] = ()) -> list[Any]:
        return db.rows(sql.replace("{w}", w).replace("{host}", db.host), [*args, *extra])

    n, ips, secs, sent, first, last = q(
        "SELECT count(*), count(DISTINCT ip), coalesce(sum(duration), 0),"
        " coalesce(sum(sent), 0), min(start), max(start) FROM {t} WHERE {w}"
    )[0]
    out: dict[str, Any] = {
        "range": {
            "since": _iso(since) if since is not None else None,
            "until": _iso(until) if until is not None else None,
            "protocols": list(protos) or "all",
            "hosts": list(hosts) or "all",
        },
        "summary": {
            "sessions": n,
            "unique_ips": ips,
            "time_wasted_seconds": round(float(secs), 3),
            "bytes_sent": int(sent),
            "first": _iso(first) if first is not None else None,
            "last": _iso(last) if last is not None else None,
        },
    }
    out["hosts"] = [
        {
            "host": h,
            "sessions": k,
            "unique_ips": u,
            "seconds": round(float(s), 3),
            "bytes_sent": int(b),
            "last": _iso(lt),
        }
        for h, k, u, s, b, lt in q(
            "SELECT {host} AS h, count(*), count(DISTINCT ip), coalesce(sum(duration), 0),"
            " coalesce(sum(sent), 0), max(start) FROM {t} WHERE {w} GROUP BY h ORDER BY h"
        )
    ]
    out["top_ips"] = [
        {"ip": ip, "country": cc, "sessions": k, "seconds": round(s, 3)}
        for ip, cc, k, s in q(
            "SELECT ip, max(country), count(*) AS k, coalesce(sum(duration), 0) AS s FROM {t}"
            " WHERE {w} GROUP BY ip ORDER BY s DESC, k DESC, ip LIMIT ?",
            (top,),
        )
    ]
    out["top_countries"] = [
        {"country": cc or "??", "sessions": k, "unique_ips": u, "seconds": round(s, 3)}
        for cc, k, u, s in q(
            "SELECT country, count(*) AS k, count(DISTINCT ip), coalesce(sum(duration), 0) AS s"
            " FROM {t} WHERE {w} GROUP BY country ORDER BY k DESC, s DESC, country LIMIT ?",
            (top,),
        )
    ]
    out["top_software"] = [
        {"proto": p, "software": sw, "sessions": k, "seconds": round(s, 3)}
        for p, sw, k, s in q(
            "SELECT proto, software, count(*) AS k, coalesce(sum(duration), 0) AS s FROM {t}"
            " WHERE {w} AND software != '' GROUP BY proto, software"
            " ORDER BY k DESC, s DESC, software LIMIT ?",
            (top,),
        )
    ]
    out["by_family"] = _by_family(
        q(
            "SELECT proto, software, count(*), coalesce(sum(duration), 0) FROM {t}"
            " WHERE {w} GROUP BY proto, software"
        ),
        top,
    )
    counts = dict(q(f"SELECT {_bucket_sql()} AS b, count(*) FROM {{t}} WHERE {{w}} GROUP BY b"))
    out["durations"] = [
        {"bucket": label, "sessions": counts.get(i, 0)}
        for i, (_le, label) in enumerate(DURATION_BUCKETS)
    ]
    out["by_proto"] = [
        {
            "proto": p,
            "sessions": k,
            "unique_ips": u,
            "seconds": round(float(s), 3),
            "bytes_sent": int(b),
        }
        for p, k, u, s, b in q(
            "SELECT proto, count(*) AS k, count(DISTINCT ip), coalesce(sum(duration), 0) AS s,"
            " coalesce(sum(sent), 0) FROM {t} WHERE {w} GROUP BY proto ORDER BY s DESC, k DESC, proto"
        )
    ]
    out["reasons"] = [
        {"proto": p, "reason": r, "sessions": k, "seconds": round(float(s), 3)}
        for p, r, k, s in q(
            "SELECT proto, reason, count(*) AS k, coalesce(sum(duration), 0) AS s FROM {t}"
            " WHERE {w} GROUP BY proto, reason ORDER BY k DESC, s DESC, proto, reason LIMIT ?",
            (top,),
        )
    ]
    for section, key, label in NOTE_TOPS:
        rows = q(
            f"SELECT {db.note(key)} AS v, count(*), coalesce(sum(duration), 0) FROM {{t}}"
            f" WHERE {{w}} AND {db.note(key)} IS NOT NULL GROUP BY v"
        )
        out[section] = _ranked(label, rows, top, split=key == "rcpt_to")
    creds = q(
        f"SELECT proto, coalesce({db.note('auth_user')}, ''), coalesce({db.note('auth_pass')}, ''),"
        " count(*) AS k, coalesce(sum(duration), 0) AS s FROM {t}"
        f" WHERE {{w}} AND ({db.note('auth_user')} IS NOT NULL OR {db.note('auth_pass')} IS NOT NULL)"
        " GROUP BY 1, 2, 3 ORDER BY k DESC, s DESC, 1, 2, 3 LIMIT ?",
        (top,),
    )
    out["top_credentials"] = [
        {"proto": p, "user": u, "password": pw, "sessions": k, "seconds": round(float(s), 3)}
        for p, u, pw, k, s in creds
    ]
    width, fmt = SLOTS[by]
    out["activity"] = [
        {
            by: time.strftime(fmt, time.gmtime(slot * width)),
            "sessions": k,
            "unique_ips": u,
            "seconds": round(s, 3),
        }
        for slot, k, u, s in q(
            f"SELECT {db.slot(width)} AS slot, count(*), count(DISTINCT ip),"
            " coalesce(sum(duration), 0) FROM {t} WHERE {w} GROUP BY slot ORDER BY slot"
        )
    ]
    per_proto: dict[str, dict[str, int]] = {}
    for slot, p, k in q(
        f"SELECT {db.slot(width)} AS slot, proto, count(*) FROM {{t}} WHERE {{w}}"
        " GROUP BY slot, proto"
    ):
        per_proto.setdefault(time.strftime(fmt, time.gmtime(slot * width)), {})[p] = k
    for r in out["activity"]:
        r["protocols"] = dict(sorted(per_proto.get(r[by], {}).items()))
    by_bucket: dict[str, list[int]] = {}
    for p, b, k in q(
        f"SELECT proto, {_bucket_sql()} AS b, count(*) FROM {{t}} WHERE {{w}} GROUP BY proto, b"
    ):
        by_bucket.setdefault(p, [0] * len(DURATION_BUCKETS))[b] = k
    out["durations_by_proto"] = dict(sorted(by_bucket.items()))
    return out


def dashboard(target: str | Path, top: int = 10, recent: int = 20) -> dict[str, Any]:
    """All the history as the dashboard shows it: ``tarry report --format json
    --top 10`` and the ``recent`` newest sessions. Blocking: run it in a thread."""
    db = open_db(target)
    try:
        data = collect(db, None, None, (), top, "hour")
        data["recent"] = list(sessions(db, None, None, (), (), newest=recent))
    finally:
        db.close()
    return data


def known_protocols(db: Db) -> list[str]:
    """The protocols this tarry has baits for, and any other the history holds."""
    from .baits import registry

    held = {p for (p,) in db.rows("SELECT DISTINCT proto FROM {t}", [])}
    return sorted(set(registry()) | held)


def sessions(db: Db, since: float | None, until: float | None, protos: Sequence[str],
             hosts: Sequence[str], newest: int = 0) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Every session in the range, oldest first, as plain dicts (notes decoded);
    with ``newest``, only that many, newest first."""
    where, args = _where(db, since, until, protos, hosts)
    cols = ", ".join(f'"{c}"' if c == "end" else c for c in SESSION_COLUMNS)
    cols = cols.replace("host", f"{db.host} AS host", 1)
    order = "start, ip, port"
    if newest:
        order = "start DESC, ip, port LIMIT ?"
        args = [*args, newest]
    for r in db.stream(f"SELECT {cols} FROM {{t}} WHERE {where} ORDER BY {order}", args):
        row = dict(zip(SESSION_COLUMNS, r, strict=True))
        row["start"], row["end"] = _iso_ms(row["start"]), _iso_ms(row["end"])
        row["duration"] = round(float(row["duration"]), 3)
        notes = row["notes"]
        row["notes"] = notes if isinstance(notes, dict) else json.loads(notes or "{}")
        yield row


def _iso_ms(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def write_sessions(rows: Iterable[dict[str, Any]], fmt: str, out: TextIO) -> int:
    """The export: CSV (the notes in CSV_NOTES as columns, and all of them as one
    JSON cell) or JSON lines; returns the rows written."""
    n = 0
    if fmt == "json":
        for r in rows:
            out.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
            n += 1
        return n
    wr = _SafeWriter(out)
    wr.writerow([*SESSION_COLUMNS[:-1], *CSV_NOTES, "notes"])
    for r in rows:
        notes = json.dumps(r["notes"], ensure_ascii=False, separators=(",", ":"))
        said = [r["notes"].get(k, "") for k in CSV_NOTES]
        wr.writerow([*(r[c] for c in SESSION_COLUMNS[:-1]), *said, notes])
        n += 1
    return n


def _ranked(
    label: str, rows: Sequence[Sequence[Any]], top: int, split: bool = False
) -> list[dict[str, Any]]:
    """A top list from (value, sessions, seconds) rows, most sessions first; with
    ``split`` a value is a comma-joined list (the SMTP bait's recipients) and each
    item counts for the session."""
    sums: dict[str, list[float]] = {}
    for value, n, secs in rows:
        items = {v for v in str(value).split(",") if v} if split else {str(value)}
        for item in items:
            acc = sums.setdefault(item, [0, 0.0])
            acc[0] += n
            acc[1] += secs
    ranked = sorted(sums.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:top]
    return [{label: v, "sessions": int(n), "seconds": round(secs, 3)} for v, (n, secs) in ranked]


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def human(seconds: float) -> str:
    s = round(seconds)
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{d}d {h}h {m}m"
    if h:
        return f"{h}h {m}m {s}s"
    if m:
        return f"{m}m {s}s"
    return f"{s}s"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)]
        lines.append("  " + "  ".join(cells).rstrip())
        if j == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def write_table(data: dict[str, Any], out: TextIO) -> None:
    s = data["summary"]
    rng = data["range"]
    span = f"{rng['since'] or 'the beginning'} to {rng['until'] or 'now'}"
    protos = rng["protocols"] if isinstance(rng["protocols"], str) else ", ".join(rng["protocols"])
    hosts = rng["hosts"] if isinstance(rng["hosts"], str) else ", ".join(rng["hosts"])
    w = out.write
    w(f"tarry report: {span}, protocols: {protos}, hosts: {hosts}\n\n")
    w(f"  time wasted    {human(s['time_wasted_seconds'])} ({s['time_wasted_seconds']:.0f} s)\n")
    w(f"  sessions       {s['sessions']}\n")
    w(f"  unique IPs     {s['unique_ips']}\n")
    w(f"  bytes sent     {s['bytes_sent']}\n")
    if s["first"]:
        w(f"  first, last    {s['first']}, {s['last']}\n")

    def section(title: str, header: list[str], rows: list[list[str]], right: set[int]) -> None:
        w(f"\n{title}\n")
        if not rows:
            w("  (none)\n")
            return
        for line in _table([header, *rows], right):
            w(line + "\n")

    section(
        "By host",
        ["host", "sessions", "unique IPs", "time wasted", "bytes sent", "last"],
        [
            [
                r["host"] or "(unnamed)",
                str(r["sessions"]),
                str(r["unique_ips"]),
                human(r["seconds"]),
                str(r["bytes_sent"]),
                r["last"],
            ]
            for r in data["hosts"]
        ],
        {1, 2, 3, 4},
    )
    section(
        "By protocol",
        ["proto", "sessions", "unique IPs", "time wasted", "bytes sent"],
        [
            [
                r["proto"],
                str(r["sessions"]),
                str(r["unique_ips"]),
                human(r["seconds"]),
                str(r["bytes_sent"]),
            ]
            for r in data["by_proto"]
        ],
        {1, 2, 3, 4},
    )
    section(
        "Disconnect reasons",
        ["proto", "reason", "sessions", "time wasted"],
        [
            [r["proto"], r["reason"], str(r["sessions"]), human(r["seconds"])]
            for r in data["reasons"]
        ],
        {2, 3},
    )
    for key, title, label in (
        ("top_paths", "Top HTTP paths", "path"),
        ("top_senders", "Top SMTP senders", "sender"),
        ("top_recipients", "Top SMTP recipients", "recipient"),
        ("top_commands", "Top commands", "command"),
    ):
        section(
            title,
            [label, "sessions", "time wasted"],
            [[r[label], str(r["sessions"]), human(r["seconds"])] for r in data[key]],
            {1, 2},
        )
    section(
        "Top credentials tried",
        ["proto", "user", "password", "sessions"],
        [
            [r["proto"], r["user"], r["password"], str(r["sessions"])]
            for r in data["top_credentials"]
        ],
        {3},
    )
    section(
        "Top IPs (by time wasted)",
        ["ip", "country", "sessions", "time wasted"],
        [
            [r["ip"], r["country"] or "??", str(r["sessions"]), human(r["seconds"])]
            for r in data["top_ips"]
        ],
        {2, 3},
    )
    section(
        "Top countries",
        ["country", "sessions", "unique IPs", "time wasted"],
        [
            [r["country"], str(r["sessions"]), str(r["unique_ips"]), human(r["seconds"])]
            for r in data["top_countries"]
        ],
        {1, 2, 3},
    )
    section(
        "Top client software",
        ["proto", "software", "sessions", "time wasted"],
        [
            [r["proto"], r["software"], str(r["sessions"]), human(r["seconds"])]
            for r in data["top_software"]
        ],
        {2, 3},
    )
    section(
        "Seconds held by client family",
        ["proto", "family", "sessions", "time wasted"],
        [
            [r["proto"], r["family"], str(r["sessions"]), human(r["seconds"])]
            for r in data["by_family"]
        ],
        {2, 3},
    )
    peak = max([r["sessions"] for r in data["durations"]] + [1])
    section(
        "Hold durations",
        ["held", "sessions", ""],
        [
            [r["bucket"], str(r["sessions"]), "#" * round(40 * r["sessions"] / peak)]
            for r in data["durations"]
        ],
        {1},
    )
    act = data["activity"]
    key = next((k for k in SLOTS if act and k in act[0]), "day")
    peak = max([r["sessions"] for r in act] + [1])
    section(
        f"Activity per {key}",
        [key, "sessions", "unique IPs", "time wasted", ""],
        [
            [
                r[key],
                str(r["sessions"]),
                str(r["unique_ips"]),
                human(r["seconds"]),
                "#" * round(30 * r["sessions"] / peak),
            ]
            for r in act
        ],
        {1, 2, 3},
    )


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula gets a leading ``'``
    (OWASP, CSV injection): peers choose the software column (``=cmd|' /C calc'!A0``)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


class _SafeWriter:
    """``csv.writer`` with every cell through ``cell``. A row with a CR in it is
    quoted whole: with "\n" line ends the csv module leaves a bare CR unquoted,
    and readers then see a line break inside the field."""

    def __init__(self, out: TextIO) -> None:
        self._writer = csv.writer(out, lineterminator="\n")
        self._quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def writerow(self, row: Sequence[Any]) -> None:
        cells = [cell(v) for v in row]
        cr = any(isinstance(v, str) and "\r" in v for v in cells)
        (self._quoted if cr else self._writer).writerow(cells)


def write_csv(data: dict[str, Any], out: TextIO) -> None:
    """One flat table: section, proto, key, sessions, seconds (empty where not meaningful)."""
    wr = _SafeWriter(out)
    wr.writerow(["section", "proto", "key", "sessions", "seconds"])
    s = data["summary"]
    wr.writerow(["summary", "", "sessions", s["sessions"], ""])
    wr.writerow(["summary", "", "unique_ips", s["unique_ips"], ""])
    wr.writerow(["summary", "", "time_wasted", "", s["time_wasted_seconds"]])
    wr.writerow(["summary", "", "bytes_sent", s["bytes_sent"], ""])
    for r in data["hosts"]:
        wr.writerow(["hosts", "", r["host"], r["sessions"], r["seconds"]])
    for r in data["top_ips"]:
        wr.writerow(["top_ips", "", r["ip"], r["sessions"], r["seconds"]])
    for r in data["top_countries"]:
        wr.writerow(["top_countries", "", r["country"], r["sessions"], r["seconds"]])
    for r in data["top_software"]:
        wr.writerow(["top_software", r["proto"], r["software"], r["sessions"], r["seconds"]])
    for r in data["by_family"]:
        wr.writerow(["by_family", r["proto"], r["family"], r["sessions"], r["seconds"]])
    for r in data["by_proto"]:
        wr.writerow(["by_proto", r["proto"], "", r["sessions"], r["seconds"]])
    for r in data["reasons"]:
        wr.writerow(["reasons", r["proto"], r["reason"], r["sessions"], r["seconds"]])
    for section, _key, label in NOTE_TOPS:
        for r in data[section]:
            wr.writerow([section, "", r[label], r["sessions"], r["seconds"]])
    for r in data["top_credentials"]:
        key = f"{r['user']}:{r['password']}"
        wr.writerow(["top_credentials", r["proto"], key, r["sessions"], r["seconds"]])
    for r in data["durations"]:
        wr.writerow(["durations", "", r["bucket"], r["sessions"], ""])
    for r in data["activity"]:
        key = r.get("minute") or r.get("hour") or r.get("day")
        wr.writerow(["activity", "", key, r["sessions"], r["seconds"]])


def history_of(config: str | None) -> str:
    """The history a config file writes to ("" for the default)."""
    if not config:
        return ""
    from .config import ConfigError, load

    try:
        history = load(config).sections.get("history", {})
    except ConfigError as exc:
        raise ReportError(str(exc)) from None
    return str(history.get("url") or history.get("path") or "")


def report_main(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The ``report`` subcommand; returns the exit status (2 for bad input)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        try:
            args = parser().parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        now = time.time()
        since = until = None
        for opt, text in (("--since", args.since), ("--until", args.until)):
            if text:
                try:
                    value = parse_when(text, now)
                except ValueError as exc:
                    raise ReportError(f"{opt}: {exc}") from None
                if opt == "--since":
                    since = value
                else:
                    until = value
        if since is not None and until is not None and since >= until:
            raise ReportError("--since must be before --until")
        protos = [p.strip() for item in args.proto for p in item.split(",") if p.strip()]
        hosts = [h.strip() for item in args.host for h in item.split(",") if h.strip()]
        fmt = args.format or ("csv" if args.sessions else "table")
        if args.sessions and fmt not in ("csv", "json"):
            raise ReportError(f"--sessions writes csv or json, not {fmt}")
        db = open_db(args.db or history_of(args.config) or str(default_path()))
        try:
            known = known_protocols(db)
            unknown = [p for p in protos if p not in known]
            if unknown:
                raise ReportError(
                    f"--proto: unknown protocol {shown(unknown[0])} (known: {', '.join(known)})"
                )
            if args.sessions:
                write_sessions(sessions(db, since, until, protos, hosts), fmt, out)
                out.flush()
                return 0
            data = collect(db, since, until, protos, args.top, args.by, hosts)
        except db.errors as exc:
            raise ReportError(f"reading the history: {' '.join(str(exc).split())}") from exc
        finally:
            db.close()
        buf = io.StringIO()
        if fmt == "html":
            from .reporthtml import HtmlError, page

            try:
                buf.write(page(data))
            except HtmlError as exc:
                raise ReportError(str(exc)) from None
        elif fmt == "json":
            json.dump(data, buf, indent=2)
            buf.write("\n")
        elif fmt == "csv":
            write_csv(data, buf)
        else:
            write_table(data, buf)
        out.write(buf.getvalue())
        out.flush()
        return 0
    except ReportError as exc:
        err.write(f"{PROG}: error: {exc}\n")
        return 2
    except BrokenPipeError:
        return 0
