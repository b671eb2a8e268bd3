"""``tarry report``: what the history store says, in the terminal.

Reads the SQLite history (read-only, so it is safe while tarry runs) and
prints the attackers' time wasted, sessions, unique addresses, the top
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .history import SCHEMA_VERSION, default_path
from .stats import DURATION_BUCKETS

PROG = "tarry report"
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
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


def parse_when(text: str, now: float) -> float:
    """An absolute UTC date/time or a span back from now (``7d``, ``24h``, ``30m``)."""
    t = text.strip()
    m = _RELATIVE.match(t)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    if t.endswith("Z"):
        t = t[:-1]
    for fmt in _FORMATS:
        try:
            return float(timegm(time.strptime(t, fmt)))
        except ValueError:
            continue
    raise ValueError(f"cannot read {text!r} (use 2026-11-01, 2026-11-01T10:00, or 7d, 24h, 30m)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description=(
            "Summarise the tarpit's history store: sessions, time wasted, bytes sent,\n"
            "the top addresses, countries and client software, and activity over time.\n"
            "The store is read-only here; tarry serve may keep writing to it."
        ),
        epilog=(
            "exit status:\n  0 success; 2 no store, a bad store or a bad option (one line)\n\n"
            "examples:\n  tarry report --since 7d\n"
            "  tarry report --proto ssh,smtp --since 2026-11-01 --format json\n"
            "  tarry report --db /var/lib/tarry/history.sqlite3 --by hour --since 24h"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--db", help=f"the history database (default: {default_path()})")
    p.add_argument("--since", help="start of the range: 2026-11-01[T10:00] (UTC) or 7d, 24h, 30m")
    p.add_argument("--until", help="end of the range (exclusive), same forms; default: now")
    p.add_argument(
        "--proto",
        action="append",
        default=[],
        help="only this protocol (ssh, http, smtp, ...); repeat or separate with commas",
    )
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--top", type=int, default=10, help="rows in each top list (default 10)")
    p.add_argument(
        "--by", choices=("hour", "day"), default="day", help="activity per hour or per day"
    )
    return p


def open_db(path: Path) -> sqlite3.Connection:
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
    return conn


def _bucket_sql() -> str:
    parts = [
        f"WHEN duration < {le!r} THEN {i}" for i, (le, _label) in enumerate(DURATION_BUCKETS[:-1])
    ]
    return "CASE " + " ".join(parts) + f" ELSE {len(DURATION_BUCKETS) - 1} END"


def collect(
    conn: sqlite3.Connection,
    since: float | None,
    until: float | None,
    protos: Sequence[str],
    top: int,
    by: str,
) -> dict[str, Any]:
    """Every section of the report as plain data."""
    where, args = ["1"], []  # type: ignore[var-annotated]
    if since is not None:
        where.append("start >= ?")
        args.append(since)
    if until is not None:
        where.append("start < ?")
        args.append(until)
    if protos:
        where.append("proto IN (" + ",".join("?" * len(protos)) + ")")
        args.extend(protos)
    w = " AND ".join(where)

    def q(sql: str, extra: Sequence[Any] = ()) -> list[Any]:
        return conn.execute(sql.format(w=w), [*args, *extra]).fetchall()

    n, ips, secs, sent, first, last = q(
        "SELECT count(*), count(DISTINCT ip), total(duration), total(sent), min(start), max(start)"
        " FROM sessions WHERE {w}"
    )[0]
    out: dict[str, Any] = {
        "range": {
            "since": _iso(since) if since is not None else None,
            "until": _iso(until) if until is not None else None,
            "protocols": list(protos) or "all",
        },
        "summary": {
            "sessions": n,
            "unique_ips": ips,
            "time_wasted_seconds": round(secs, 3),
            "bytes_sent": int(sent),
            "first": _iso(first) if first is not None else None,
            "last": _iso(last) if last is not None else None,
        },
    }
    out["top_ips"] = [
        {"ip": ip, "country": cc, "sessions": k, "seconds": round(s, 3)}
        for ip, cc, k, s in q(
            "SELECT ip, max(country), count(*) AS k, total(duration) AS s FROM sessions"
            " WHERE {w} GROUP BY ip ORDER BY s DESC, k DESC, ip LIMIT ?",
            (top,),
        )
    ]
    out["top_countries"] = [
        {"country": cc or "??", "sessions": k, "unique_ips": u, "seconds": round(s, 3)}
        for cc, k, u, s in q(
            "SELECT country, count(*) AS k, count(DISTINCT ip), total(duration) AS s"
            " FROM sessions WHERE {w} GROUP BY country ORDER BY k DESC, s DESC, country LIMIT ?",
            (top,),
        )
    ]
    out["top_software"] = [
        {"proto": p, "software": sw, "sessions": k, "seconds": round(s, 3)}
        for p, sw, k, s in q(
            "SELECT proto, software, count(*) AS k, total(duration) AS s FROM sessions"
            " WHERE {w} AND software != '' GROUP BY proto, software"
            " ORDER BY k DESC, s DESC, software LIMIT ?",
            (top,),
        )
    ]
    counts = dict(q(f"SELECT {_bucket_sql()} AS b, count(*) FROM sessions WHERE {{w}} GROUP BY b"))
    out["durations"] = [
        {"bucket": label, "sessions": counts.get(i, 0)}
        for i, (_le, label) in enumerate(DURATION_BUCKETS)
    ]
    fmt = "%Y-%m-%d %H:00" if by == "hour" else "%Y-%m-%d"
    width = 3600 if by == "hour" else 86400
    out["activity"] = [
        {
            by: time.strftime(fmt, time.gmtime(slot * width)),
            "sessions": k,
            "unique_ips": u,
            "seconds": round(s, 3),
        }
        for slot, k, u, s in q(
            f"SELECT CAST(start / {width} AS INTEGER) AS slot, count(*), count(DISTINCT ip),"
            " total(duration) FROM sessions WHERE {w} GROUP BY slot ORDER BY slot"
        )
    ]
    return out


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
    w = out.write
    w(f"tarry report: {span}, protocols: {protos}\n\n")
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
    key = "hour" if act and "hour" in act[0] else "day"
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


def write_csv(data: dict[str, Any], out: TextIO) -> None:
    """One flat table: section, proto, key, sessions, seconds (empty where not meaningful)."""
    wr = csv.writer(out, lineterminator="\n")
    wr.writerow(["section", "proto", "key", "sessions", "seconds"])
    s = data["summary"]
    wr.writerow(["summary", "", "sessions", s["sessions"], ""])
    wr.writerow(["summary", "", "unique_ips", s["unique_ips"], ""])
    wr.writerow(["summary", "", "time_wasted", "", s["time_wasted_seconds"]])
    wr.writerow(["summary", "", "bytes_sent", s["bytes_sent"], ""])
    for r in data["top_ips"]:
        wr.writerow(["top_ips", "", r["ip"], r["sessions"], r["seconds"]])
    for r in data["top_countries"]:
        wr.writerow(["top_countries", "", r["country"], r["sessions"], r["seconds"]])
    for r in data["top_software"]:
        wr.writerow(["top_software", r["proto"], r["software"], r["sessions"], r["seconds"]])
    for r in data["durations"]:
        wr.writerow(["durations", "", r["bucket"], r["sessions"], ""])
    for r in data["activity"]:
        key = r.get("hour") or r.get("day")
        wr.writerow(["activity", "", key, r["sessions"], r["seconds"]])


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
        if args.top < 1:
            raise ReportError("--top must be at least 1")
        protos = [p.strip() for item in args.proto for p in item.split(",") if p.strip()]
        conn = open_db(Path(args.db) if args.db else default_path())
        try:
            data = collect(conn, since, until, protos, args.top, args.by)
        except sqlite3.DatabaseError as exc:
            raise ReportError(f"reading the history: {exc}") from exc
        finally:
            conn.close()
        buf = io.StringIO()
        if args.format == "json":
            json.dump(data, buf, indent=2)
            buf.write("\n")
        elif args.format == "csv":
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
