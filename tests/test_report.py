"""``tarry report`` against a history of known sessions."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from calendar import timegm

import pytest

from tarry.events import CLOSE, Event
from tarry.history import HistoryStore
from tarry.report import report_main

DAY1 = timegm((2026, 11, 1, 10, 0, 0))  # 2026-11-01T10:00:00Z
DAY2 = DAY1 + 86400

# (start, proto, ip, country, duration, note)
SESSIONS = [
    (DAY1 + 0, "ssh", "192.0.2.1", "CN", 100.0, ("ssh_id", "SSH-2.0-libssh_0.9.6")),
    (DAY1 + 60, "ssh", "192.0.2.1", "CN", 3600.5, ("ssh_id", "SSH-2.0-libssh_0.9.6")),
    (DAY1 + 3600, "ssh", "192.0.2.2", "US", 5.0, ("ssh_id", "SSH-2.0-Go")),
    (DAY1 + 3700, "http", "192.0.2.3", "US", 0.5, ("user_agent", "curl/8.5.0")),
    (DAY2 + 10, "smtp", "2001:db8::7", "", 20000.0, ("ehlo", "User")),
    (DAY2 + 20, "http", "192.0.2.3", "US", 40.0, ("user_agent", "curl/8.5.0")),
]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "h.sqlite3"
    store = HistoryStore(path, retention_days=0)
    store.start()
    for i, (start, proto, ip, cc, dur, note) in enumerate(SESSIONS):
        store.emit(
            Event(
                kind=CLOSE,
                time=start + dur,
                proto=proto,
                listener="[::]:1",
                host=ip if ":" in ip else "::ffff:" + ip,
                port=40000 + i,
                duration=dur,
                sent=10 * (i + 1),
                received=1,
                reason="closed",
                notes=(note,),
                country=cc,
            )
        )
    store.close()
    return str(path)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = report_main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_json_matches_the_known_sessions(db):
    code, out, err = run("--db", db, "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    s = data["summary"]
    assert s["sessions"] == 6
    assert s["unique_ips"] == 4
    assert s["time_wasted_seconds"] == pytest.approx(100 + 3600.5 + 5 + 0.5 + 20000 + 40)
    assert s["bytes_sent"] == 10 + 20 + 30 + 40 + 50 + 60
    assert data["top_ips"][0] == {
        "ip": "2001:db8::7",
        "country": "",
        "sessions": 1,
        "seconds": 20000.0,
    }
    assert data["top_ips"][1]["ip"] == "192.0.2.1"  # IPv4 shown as IPv4
    assert data["top_ips"][1]["sessions"] == 2
    countries = {r["country"]: r["sessions"] for r in data["top_countries"]}
    assert countries == {"US": 3, "CN": 2, "??": 1}
    software = {(r["proto"], r["software"]): r["sessions"] for r in data["top_software"]}
    assert software == {
        ("ssh", "SSH-2.0-libssh_0.9.6"): 2,
        ("ssh", "SSH-2.0-Go"): 1,
        ("http", "curl/8.5.0"): 2,
        ("smtp", "User"): 1,
    }
    hist = {r["bucket"]: r["sessions"] for r in data["durations"]}
    assert hist == {
        "<1s": 1,
        "1-10s": 1,
        "10s-1m": 1,
        "1-5m": 1,
        "5-15m": 0,
        "15m-1h": 0,
        "1-4h": 1,
        "4h-1d": 1,
        ">1d": 0,
    }
    assert [(r["day"], r["sessions"]) for r in data["activity"]] == [
        ("2026-11-01", 4),
        ("2026-11-02", 2),
    ]


def test_filters_by_time_and_protocol(db):
    code, out, _ = run(
        "--db",
        db,
        "--format",
        "json",
        "--since",
        "2026-11-01T10:30",
        "--until",
        "2026-11-02",
        "--by",
        "hour",
    )
    assert code == 0
    data = json.loads(out)
    assert data["summary"]["sessions"] == 2  # the two sessions at 11:00 and 11:01
    assert [(r["hour"], r["sessions"]) for r in data["activity"]] == [("2026-11-01 11:00", 2)]
    code, out, _ = run("--db", db, "--format", "json", "--proto", "ssh,smtp")
    data = json.loads(out)
    assert data["summary"]["sessions"] == 4
    code, out, _ = run("--db", db, "--format", "json", "--proto", "http", "--proto", "smtp")
    assert json.loads(out)["summary"]["sessions"] == 3


def test_csv_rows(db):
    code, out, _ = run("--db", db, "--format", "csv", "--top", "2")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {
        "section": "summary",
        "proto": "",
        "key": "sessions",
        "sessions": "6",
        "seconds": "",
    } in rows
    top = [r["key"] for r in rows if r["section"] == "top_ips"]
    assert top == ["2001:db8::7", "192.0.2.1"]


def test_table_has_every_section(db):
    code, out, _ = run("--db", db)
    assert code == 0
    for title in (
        "time wasted",
        "sessions",
        "unique IPs",
        "Top IPs",
        "Top countries",
        "Top client software",
        "Hold durations",
        "Activity per day",
    ):
        assert title in out
    assert "6h 35m 46s (23746 s)" in out
    assert "SSH-2.0-libssh_0.9.6" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--db", "/nonexistent/h.sqlite3"], "no history database"),
        (["--since", "yesterday"], "--since: cannot read 'yesterday'"),
        (["--until", "2026-13-45"], "--until: cannot read"),
        (["--since", "2026-11-02", "--until", "2026-11-01"], "--since must be before --until"),
        (["--format", "xml"], "invalid choice"),
        (["--top", "0"], "--top: must be an integer from 1 to"),
        (["--top", "many"], "--top: must be an integer from 1 to 100000, not 'many'"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line(db, argv, needle):
    if "--db" not in argv:
        argv = ["--db", db, *argv]
    code, out, err = run(*argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and needle in err, err
    assert "Traceback" not in err


def test_not_a_history_database(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"x" * 4096)
    code, _, err = run("--db", str(junk))
    assert code == 2 and "not a database" in err and err.count("\n") == 1
    other = tmp_path / "other.sqlite3"
    sqlite3.connect(other).execute("create table t (x)").connection.commit()
    code, _, err = run("--db", str(other))
    assert code == 2 and "not a tarry history database" in err


def test_empty_history(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    store.close()
    code, out, err = run("--db", str(tmp_path / "h.sqlite3"))
    assert code == 0, err
    assert "sessions       0" in out and "(none)" in out


def test_hosts_section_and_host_filter(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path, host="edge-1")
    store.start()
    for i in range(3):
        store.emit(
            Event(kind=CLOSE, time=DAY1 + i, proto="ssh", host="192.0.2.9", port=i, duration=2.0)
        )
    store.close()
    code, out, err = run("--db", str(path), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["hosts"] == [
        {
            "host": "edge-1",
            "sessions": 3,
            "unique_ips": 1,
            "seconds": 6.0,
            "bytes_sent": 0,
            "last": "2026-11-01T10:00:00Z",
        }
    ]
    _, out, _ = run("--db", str(path), "--format", "json", "--host", "edge-2")
    assert json.loads(out)["summary"]["sessions"] == 0
    _, out, _ = run("--db", str(path))
    assert "By host" in out and "edge-1" in out


def test_a_schema_1_file_reads_as_one_unnamed_host_and_migrates(tmp_path):
    from tarry.history import MIGRATIONS, SCHEMA_VERSION, connect

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + ";PRAGMA user_version = 1;")
    conn.execute(
        "INSERT INTO sessions (start, end, proto, listener, ip, port, duration, sent, received,"
        " reason) VALUES (?,?,'ssh','l','192.0.2.1',1,5.0,10,0,'closed')",
        (DAY1, DAY1 + 5),
    )
    conn.commit()
    conn.close()
    code, out, err = run("--db", str(path), "--format", "json")  # read-only: stays at 1
    assert code == 0, err
    assert [(h["host"], h["sessions"]) for h in json.loads(out)["hosts"]] == [("", 1)]
    connect(path).close()  # a tarry start migrates it
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT host, port FROM sessions").fetchall() == [("", 1)]
    _, out, _ = run("--db", str(path))
    assert "(unnamed)" in out


def test_the_history_named_by_a_config_file(db, tmp_path):
    cfg = tmp_path / "tarry.toml"
    cfg.write_text(
        f'[history]\npath = "{db}"\n[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:0"]\n'
    )
    code, out, err = run("-c", str(cfg), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["summary"]["sessions"] == 6
    bad = tmp_path / "bad.toml"
    bad.write_text("[history]\nretention_days = 'x'\n")
    code, out, err = run("-c", str(bad))
    assert code == 2 and err.count("\n") == 1 and "retention_days" in err


HUGE = "100000000000000000000"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["report", "--top", HUGE], "--top: must be an integer from 1 to 100000"),
        (["report", "--top", "-" + HUGE], "--top: must be an integer from 1 to 100000"),
        (["report", "--top", "100001"], "--top: must be an integer from 1 to 100000"),
        (["report", "--top", "-1"], "--top: must be an integer from 1 to 100000"),
        (["report", "--top", "1e3"], "--top: must be an integer from 1 to 100000, not '1e3'"),
        (["report", "--top", "nan"], "not 'nan'"),
        (["report", "--top", "9" * 5000], "--top: must be an integer from 1 to"),
        (["report", "--since", "99999999999999999999d"], "--since: '99999999999999999999d' is too"),
        (["report", "--since", "36501d"], "at most 36500d"),
        (["report", "--since", "9" * 400 + "w"], "--since: '9999"),
        (["report", "--until", HUGE + "s"], "--until: "),
        (["report", "--since=-5d"], "--since: cannot read '-5d'"),
        (["report", "--since", "infd"], "--since: cannot read 'infd'"),
        (["report", "--until", "10000-01-01"], "--until: cannot read"),
    ],
)
def test_huge_negative_and_non_numbers_on_the_command_line(db, argv, needle):
    """``--top 1e20`` and ``--since 99999999999999999999d`` printed a traceback and
    exited 1 (an SQLite integer overflow, and a year out of range). The real
    command, as a user runs it: one line, status 2."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "tarry", *argv, "--db", db],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tarry report: error: "), result.stderr
    assert needle in lines[0], lines[0]
    assert len(lines[0]) < 200  # the input is cut short, not echoed 5,000 digits long


def test_the_widest_bounds_still_report(db):
    code, out, err = run("--db", db, "--top", "100000", "--since", "36500d", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["summary"]["sessions"] == len(SESSIONS)


# ---- CSV formula injection (issue 17, item 6) ------------------------------------

FORMULAS = [
    "=cmd|' /C calc'!A0",
    "+1+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
]


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def assert_no_formula(rows: list[list[str]]) -> None:
    for row in rows:
        for value in row:
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), row


def curl_history(tmp_path, requests: list[list[str]]):
    """The history of a real tarry after one curl per request ([path, *curl args]),
    all at once, each given up after 1 s."""
    import subprocess

    from support import need, start_tarry, wait_until

    curl = need("curl")
    db = tmp_path / "h.sqlite3"
    t = start_tarry(
        f'[history]\npath = "{db}"\nflush_interval = 0.1\n[admin]\nlisten = ""\n'
        '[[tarpit]]\nprotocol = "http"\nlisten = ["127.0.0.1:0"]\ndelay = 0.2\n'
    )
    try:
        base = f"http://127.0.0.1:{t.port('http')}"
        clients = [
            subprocess.Popen(
                [curl, "-sS", "-o", "/dev/null", "--max-time", "1", *args, base + path],
                stderr=subprocess.DEVNULL,
            )
            for path, *args in requests
        ]
        for c in clients:
            c.wait(timeout=20)
        wait_until(lambda: t.count(r" CLOSE ") >= len(requests), 10, "a CLOSE per client")
    finally:
        t.stop()
    return db


def test_csv_neutralises_formulas_sent_by_a_real_client(tmp_path):
    """User-Agents a spreadsheet would run, sent by curl to a real tarry: in the
    CSV report each is a text cell starting with ', as OWASP advises."""
    import subprocess
    import sys

    db = curl_history(tmp_path, [["/", "-H", f"User-Agent: {ua}"] for ua in FORMULAS])
    result = subprocess.run(
        [sys.executable, "-m", "tarry", "report", "--db", str(db), "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    rows = csv_rows(result.stdout)
    software = {r[2] for r in rows if r[0] == "top_software"}
    assert software == {"'" + ua for ua in FORMULAS}, software
    assert_no_formula(rows)


def test_csv_neutralises_every_formula_start_in_every_column(tmp_path):
    """Through the history store's own API: a tab and a CR too (which a real
    client cannot put at the start of a header value), in a host name and a
    country as well as the software; other cells are left as they are."""
    nasty = ["=1+1", "+1", "-1", "@A1", "\t=1+1", "\r=1+1"]
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path, host="=HYPERLINK(1)", retention_days=0)
    store.start()
    for i, value in enumerate([*nasty, "curl/8.5.0"]):
        store.emit(
            Event(
                kind=CLOSE,
                time=DAY1 + i,
                proto="http",
                host="::ffff:192.0.2.1",
                port=i,
                duration=1.0,
                notes=(("user_agent", value),),
                country="-X" if i == 0 else "NL",
            )
        )
    store.close()
    code, out, err = run("--db", str(path), "--format", "csv", "--top", "100")
    assert code == 0, err
    rows = csv_rows(out)
    assert_no_formula(rows)
    software = {r[2] for r in rows if r[0] == "top_software"}
    assert software == {"'" + v for v in nasty} | {"curl/8.5.0"}
    assert {r[2] for r in rows if r[0] == "hosts"} == {"'=HYPERLINK(1)"}
    assert {r[2] for r in rows if r[0] == "top_countries"} == {"'-X", "NL"}
    assert {r[2] for r in rows if r[0] == "top_ips"} == {"192.0.2.1"}
    # JSON is not for spreadsheets: it keeps the text exact
    _, out, _ = run("--db", str(path), "--format", "json", "--top", "100")
    assert {r["software"] for r in json.loads(out)["top_software"]} == {*nasty, "curl/8.5.0"}


def test_seconds_held_by_client_family(db):
    """Versions fold into one family (libssh 0.9.6 sessions, both curls), most seconds first."""
    code, out, _ = run("--db", db, "--format", "json")
    assert code == 0
    fams = json.loads(out)["by_family"]
    assert fams[0] == {"proto": "smtp", "family": "User", "sessions": 1, "seconds": 20000.0}
    assert {"proto": "ssh", "family": "libssh", "sessions": 2, "seconds": 3700.5} in fams
    assert {"proto": "http", "family": "curl", "sessions": 2, "seconds": 40.5} in fams
    assert [f["seconds"] for f in fams] == sorted((f["seconds"] for f in fams), reverse=True)
    code, text, _ = run("--db", db)
    assert "Seconds held by client family" in text


# (start, proto, ip, duration, reason, notes): what the baits record (tarry.baits.*)
RICH = [
    (DAY1, "http", "192.0.2.10", 30.0, "closed", (("path", "/wp-login.php"),)),
    (DAY1 + 5, "http", "192.0.2.11", 10.0, "reset", (("path", "/wp-login.php"),)),
    (DAY1 + 70, "http", "192.0.2.11", 5.0, "timeout", (("path", "=cmd|' /C calc'!A0"),)),
    (
        DAY1 + 80,
        "smtp",
        "192.0.2.12",
        300.0,
        "closed",
        (
            ("mail_from", "spam@example.net"),
            ("rcpt_to", "a@example.org,b@example.org"),
            ("auth_user", "admin"),
            ("auth_pass", "123456"),
        ),
    ),
    (
        DAY1 + 200,
        "smtp",
        "192.0.2.13",
        100.0,
        "closed",
        (("mail_from", "spam@example.net"), ("rcpt_to", "a@example.org")),
    ),
    (
        DAY1 + 260,
        "ssh",
        "192.0.2.14",
        50.0,
        "closed",
        (("auth_user", "root"), ("auth_pass", "root")),
    ),
]


def stored(path, events) -> str:
    """A real SQLite history holding ``events``, written by the store tarry uses."""
    store = HistoryStore(path, retention_days=0)
    store.start()
    for event in events:
        store.emit(event)
    store.close()
    return str(path)


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    return stored(
        tmp_path_factory.mktemp("rich") / "h.sqlite3",
        [
            Event(
                kind=CLOSE,
                time=start + dur,
                proto=proto,
                host="::ffff:" + ip,
                port=50000 + i,
                duration=dur,
                sent=7,
                reason=reason,
                notes=notes,
                country="DE",
            )
            for i, (start, proto, ip, dur, reason, notes) in enumerate(RICH)
        ],
    )


def test_by_protocol_reasons_and_what_was_said(rich):
    code, out, err = run("--db", rich, "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert [(r["proto"], r["sessions"], r["seconds"]) for r in data["by_proto"]] == [
        ("smtp", 2, 400.0),
        ("ssh", 1, 50.0),
        ("http", 3, 45.0),
    ]
    reasons = {(r["proto"], r["reason"]): r["sessions"] for r in data["reasons"]}
    assert reasons == {
        ("smtp", "closed"): 2,
        ("ssh", "closed"): 1,
        ("http", "closed"): 1,
        ("http", "reset"): 1,
        ("http", "timeout"): 1,
    }
    assert data["top_paths"] == [
        {"path": "/wp-login.php", "sessions": 2, "seconds": 40.0},
        {"path": "=cmd|' /C calc'!A0", "sessions": 1, "seconds": 5.0},
    ]
    assert data["top_senders"] == [{"sender": "spam@example.net", "sessions": 2, "seconds": 400.0}]
    assert data["top_recipients"] == [
        {"recipient": "a@example.org", "sessions": 2, "seconds": 400.0},
        {"recipient": "b@example.org", "sessions": 1, "seconds": 300.0},
    ]
    creds = {(r["proto"], r["user"], r["password"]) for r in data["top_credentials"]}
    assert creds == {("smtp", "admin", "123456"), ("ssh", "root", "root")}
    _, table, _ = run("--db", rich)
    for title in ("By protocol", "Disconnect reasons", "Top HTTP paths", "Top SMTP recipients"):
        assert title in table
    assert "b@example.org" in table and "/wp-login.php" in table


def test_activity_per_minute_by_protocol(rich):
    code, out, _ = run("--db", rich, "--format", "json", "--by", "minute")
    assert code == 0
    act = [(r["minute"], r["sessions"], r["protocols"]) for r in json.loads(out)["activity"]]
    assert act == [
        ("2026-11-01 10:00", 2, {"http": 2}),
        ("2026-11-01 10:01", 2, {"http": 1, "smtp": 1}),
        ("2026-11-01 10:03", 1, {"smtp": 1}),
        ("2026-11-01 10:04", 1, {"ssh": 1}),
    ]


def test_sessions_export_csv_and_json_lines(rich):
    code, out, err = run("--db", rich, "--sessions", "--proto", "http")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["ip"], r["reason"], r["duration"]) for r in rows] == [
        ("192.0.2.10", "closed", "30.0"),
        ("192.0.2.11", "reset", "10.0"),
        ("192.0.2.11", "timeout", "5.0"),
    ]
    assert rows[0]["start"] == "2026-11-01T10:00:00.000Z"
    assert json.loads(rows[0]["notes"]) == {"path": "/wp-login.php"}
    # a peer's path cannot become a formula, in any cell of the export
    assert_no_formula(csv_rows(out))
    assert [r["path"] for r in rows] == ["/wp-login.php", "/wp-login.php", "'=cmd|' /C calc'!A0"]
    code, out, _ = run(
        "--db", rich, "--sessions", "--format", "json", "--since", "2026-11-01T10:01"
    )
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4
    first = json.loads(lines[0])
    assert first["proto"] == "http" and first["notes"]["path"] == "=cmd|' /C calc'!A0"
    assert json.loads(lines[1])["notes"]["rcpt_to"] == "a@example.org,b@example.org"
    code, _, err = run("--db", rich, "--sessions", "--format", "table")
    assert code == 2 and err.count("\n") == 1 and "--sessions writes csv or json" in err


def test_an_unknown_protocol_is_an_error_naming_the_known_ones(rich):
    from tarry.baits import registry

    code, out, err = run("--db", rich, "--proto", "ssh,nosuch")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "unknown protocol 'nosuch'" in err and f"(known: {', '.join(sorted(registry()))})" in err
    # a known protocol that held nobody in this history is an empty report, not an error
    code, out, _ = run("--db", rich, "--proto", "ssh", "--since", "2026-11-02", "--format", "json")
    assert code == 0 and json.loads(out)["summary"]["sessions"] == 0


def test_html_is_one_self_contained_page(rich, tmp_path):
    code, out, err = run("--db", rich, "--format", "html")
    assert code == 0, err
    assert out.startswith("<!doctype html>") and out.count("<svg") == 5
    # nothing to fetch: no script, stylesheet or image from elsewhere
    for needle in ("<script src", "<link", "<img", "@import", "url("):
        assert needle not in out
    assert '<span id="sessions">6</span>' in out
    assert "/wp-login.php" in out and "b@example.org" in out
    # a peer's text is escaped, never markup
    hostile = stored(
        tmp_path / "h.sqlite3",
        [
            Event(
                kind=CLOSE,
                time=DAY1,
                proto="http",
                host="::ffff:192.0.2.1",
                port=1,
                duration=1.0,
                notes=(("path", "/<script>alert(1)</script>"),),
            )
        ],
    )
    _, out, _ = run("--db", hostile, "--format", "html")
    assert "<script>alert" not in out and "&lt;script&gt;alert(1)" in out


def test_top_paths_sent_by_a_real_client(tmp_path):
    """curl asks a real tarry for a path; the report and the export name it."""
    db = curl_history(tmp_path, [["/.env"]])
    code, out, err = run("--db", str(db), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["top_paths"] == [
        {"path": "/.env", "sessions": 1, "seconds": json.loads(out)["top_paths"][0]["seconds"]}
    ]
    _, out, _ = run("--db", str(db), "--sessions", "--format", "json")
    assert json.loads(out)["notes"]["path"] == "/.env"


@pytest.mark.parametrize("peak", [0, 1, 3, 7, 12, 99, 101, 4321])
def test_count_axes_have_whole_number_ticks(peak):
    from tarry.charts import int_ticks

    ticks = int_ticks(peak)
    assert all(isinstance(t, int) for t in ticks) and ticks[0] == 0
    assert ticks == sorted(set(ticks)) and ticks[-1] >= peak and len(ticks) <= 7
