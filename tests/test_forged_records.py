"""Peer text can never forge a log record (issue 17 items 3 and 12, issue 18).

A peer chooses its SSH identification, its User-Agent, Host header and path, and
its EHLO name. tarry logs them on the endlessh line, and fail2ban and CrowdSec
search that line for ``ACCEPT host=`` and ``CLOSE host=``. So a value must never
hold a space, a quote or an ``=``: then no record, and no ``host=``, can appear
inside one. The tests run a real ``tarry serve``, real peers that send crafted
values, the real ``fail2ban-regex`` with the endlessh filters people deploy and
the filters in contrib/fail2ban, and CrowdSec's endlessh grok patterns; each may
extract only the addresses the peers really came from.
"""

from __future__ import annotations

import codecs
import json
import re
import shutil
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import IN_CI, need, start_tarry, wait_until
from tarry.bait import NOTE_MAX, note_text, sanitise
from tarry.events import CLOSE, Event, endlessh_line, logfmt

CONTRIB = Path(__file__).resolve().parent.parent / "contrib" / "fail2ban"

# ---- the encoder ------------------------------------------------------------

RECORDS = (" host=", " peer=", "ACCEPT host=", "CLOSE host=")
# logfmt's grammar (go-logfmt): a key is one or more bytes above space other than
# '=' and '"'; a value is a bare run of the same, or a quoted string
LOGFMT = re.compile(r'([^\s="]+)=("(?:[^"\\]|\\.)*"|[^\s="]*)')
BARE = re.compile(r'[^\s="]+|""')


def decode(value: str) -> bytes:
    """The bytes a line value stands for: every backslash starts an escape."""
    return codecs.decode(value, "unicode_escape").encode("latin-1")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_no_encoded_peer_value_holds_a_record(raw: bytes) -> None:
    enc = logfmt(sanitise(raw))
    assert BARE.fullmatch(enc), enc
    for record in RECORDS:
        assert record not in enc
    # and it is exact: the bytes come back, cut at a whole escape
    back = decode(enc) if enc != '""' else b""
    assert raw.startswith(back)
    assert len(back) == len(raw) or len(sanitise(raw[: len(back) + 1], 10**6)) > NOTE_MAX


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_text_notes_are_encoded_alike(text: str) -> None:
    """A str note (what HTTP and SMTP hand over) takes the same path as bytes."""
    enc = logfmt(note_text(text))
    assert BARE.fullmatch(enc), enc
    assert not any(record in enc for record in RECORDS)


def test_the_encoding_is_documented_byte_for_byte() -> None:
    raw = b'SSH-2.0-x ACCEPT host=10.66.66.66 "q" \\ \xc3\t'
    assert logfmt(sanitise(raw)) == (
        r"SSH-2.0-x\x20ACCEPT\x20host\x3d10.66.66.66\x20\x22q\x22\x20\\\x20\xc3\x09"
    )
    assert logfmt("") == '""' and logfmt("SSH-2.0-OpenSSH_9.6") == "SSH-2.0-OpenSSH_9.6"


def test_a_bound_never_cuts_an_escape_in_half() -> None:
    """Cut mid-escape, a value ends in a lone backslash, which then escapes
    whatever a reader puts after it."""
    for pad in range(NOTE_MAX - 8, NOTE_MAX + 1):
        out = sanitise(b"a" * pad + b"\xc3\\\xc3")
        assert len(out) <= NOTE_MAX
        assert re.fullmatch(r"a*(?:\\xc3|\\\\)*", out), out[-8:]
        # a bait's text already sanitised (SMTP's joined recipients) is cut alike
        out = note_text("a" * pad + "\\xc3\\\\\\xc3")
        assert len(out) <= NOTE_MAX
        assert re.fullmatch(r"a*(?:\\xc3|\\\\)*", out), out[-8:]


HOSTILE_NOTE = st.tuples(
    st.sampled_from(["ssh_id", "user_agent", "ehlo", "path", "host_header"]),
    st.one_of(
        st.binary(max_size=80),
        st.sampled_from(
            [
                b"x ACCEPT host=10.66.66.66 port=1 fd=1 n=1/4096",
                b'x" CLOSE host=10.66.66.67 port=1 fd=1 time=1.000 bytes=1 y="',
                b'\\" ACCEPT host=::ffff:10.66.66.68 ',
                b"/?host=10.66.66.69",
            ]
        ),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(HOSTILE_NOTE, max_size=5))
def test_a_whole_line_parses_back_to_its_fields(notes: list[tuple[str, bytes]]) -> None:
    stored = tuple((k, note_text(v)) for k, v in notes)
    event = Event(CLOSE, 1.0, "ssh", "127.0.0.1:22", "192.0.2.7", 5, 7, duration=1.0, notes=stored)
    line = endlessh_line(event, True)
    assert line.count("host=") == 1
    assert [m.start() for m in re.finditer(r"(?:ACCEPT|CLOSE) host=", line)] == [25]
    fields = LOGFMT.findall(line)
    # every space in the line separates two fields: nothing else is left over
    assert " ".join(f"{k}={v}" for k, v in fields) == line.split(" ", 2)[2]
    assert fields[0] == ("host", "192.0.2.7")
    if stored:
        assert fields[-len(stored) :] == [(k, logfmt(v)) for k, v in stored]


# ---- sanitised once, the same everywhere ------------------------------------


def test_a_str_note_is_not_escaped_twice() -> None:
    assert note_text(b"\xc3\\") == note_text(sanitise(b"\xc3\\")) == "\\xc3\\\\"
    assert note_text("caf\xe9") == "caf\\xc3\\xa9"  # not printable ASCII: its UTF-8 bytes


# ---- a real tarry, real peers -----------------------------------------------

CONFIG = """
[[tarpit]]
protocol = "ssh"
listen = ["127.0.0.1:0", "[::1]:0", "*:0"]
delay = 0.05

[[tarpit]]
protocol = "http"
listen = ["127.0.0.1:0"]
delay = 0.05

[[tarpit]]
protocol = "smtp"
listen = ["127.0.0.1:0"]
delay = 0.01

[log]
file = "{json}"
file_format = "json"

[history]
path = "{db}"

[metrics]
enabled = false

[admin]
listen = ""
"""

# The same bytes through every bait: a byte above 0x7F, a backslash, a quote,
# a space and an "=".
SAME = b'x\xc3\\y "z"=w'
SAME_STORED = 'x\\xc3\\\\y "z"=w'
SAME_LINE = r"x\xc3\\y\x20\x22z\x22\x3dw"

FORGED_SSH = [
    b"SSH-2.0-x ACCEPT host=10.66.66.66 port=1 fd=1 n=1/4096",
    b"SSH-2.0-y CLOSE host=10.66.66.67 port=1 fd=1 time=1.000 bytes=1",
    b"SSH-2.0-z\t2026-01-01T00:00:00.000Z ACCEPT host=::ffff:10.66.66.68 port=1 fd=1 n=1/4096",
    b'SSH-2.0-w" ACCEPT host=2001:db8::66 port=1 fd=1 n=1/4096 x="',
    b'SSH-2.0-v\\" ACCEPT host=10.66.66.69 port=1 fd=1 n=1/4096',
    # the whole end of an ACCEPT line, as contrib/fail2ban's filters anchor it
    b"SSH-2.0-u ACCEPT host=10.66.66.70 port=1 fd=1 n=1/4096 proto=ssh listener=x",
]
FORGED_HTTP = [  # (User-Agent, Host, path)
    (b"Mozilla/5.0 ACCEPT host=10.77.77.77 port=2 fd=2 n=1/4096", b"10.77.77.79", b"/"),
    (b'x" CLOSE host=10.77.77.78 port=2 fd=2 time=1.000 bytes=1 y="', b"h", b"/?host=10.77.77.80"),
]
FORGED_EHLO = [
    b"mx ACCEPT host=10.88.88.88 port=3 fd=3 n=1/4096",
    b"2026-01-01T00:00:00.000Z CLOSE host=10.88.88.89 port=3 fd=3 time=1.000 bytes=1",
]


@dataclass
class Run:
    log: Path
    """The endlessh lines ``tarry serve`` wrote on stdout, as ``> log`` keeps them."""
    json_log: Path
    db: Path
    ssh: set[str]
    http: set[str]
    smtp: set[str]
    same: dict[str, str]
    """protocol -> the peer address that sent SAME."""
    mapped: str = ""
    """The IPv4 peer of a dual-stack listener, logged IPv4-mapped."""

    @property
    def peers(self) -> set[str]:
        return self.ssh | self.http | self.smtp


def have(program: str) -> bool:
    """Whether a real client is here to be used too (CI must have it)."""
    return shutil.which(program) is not None or bool(IN_CI and need(program))


def talk(source: str, port: int, data: bytes, first: bytes = b"") -> None:
    """Connect from ``source``, wait for ``first``, send ``data``, then end our
    half and read until tarry closes: it has read all of ``data`` by then."""
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(30)
        s.bind((source, 0))
        s.connect(("::1" if ":" in source else "127.0.0.1", port))
        got = b""
        while first not in got:
            chunk = s.recv(4096)
            assert chunk, f"closed before {first!r}"
            got += chunk
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("forged")
    json_log, db = tmp / "tarry.json", tmp / "history.sqlite3"
    t = start_tarry(CONFIG.format(json=json_log, db=db))
    try:
        wait_until(lambda: t.count(" LISTEN ") == 5, 10, "five LISTEN lines")
        ssh, ssh6, dual = t.port("ssh"), t.port("ssh", 1), t.port("ssh", 2)
        http, smtp = t.port("http"), t.port("smtp")
        r = Run(tmp / "tarry.log", json_log, db, set(), set(), set(), {})
        n = iter(range(11, 250))

        def src(into: set[str]) -> str:
            ip = f"127.0.0.{next(n)}"
            into.add(ip)
            return ip

        for ident in FORGED_SSH:
            talk(src(r.ssh), ssh, ident + b"\r\n")
        talk("::1", ssh6, FORGED_SSH[0] + b"\r\n")
        r.ssh.add("::1")
        r.mapped = src(r.ssh)  # logged as host=::ffff:127.0.0.N
        talk(r.mapped, dual, FORGED_SSH[2] + b"\r\n")
        for agent, host, path in FORGED_HTTP:
            head = b"GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n\r\n" % (path, host, agent)
            talk(src(r.http), http, head, b"")
        for name in FORGED_EHLO:
            talk(src(r.smtp), smtp, b"EHLO " + name + b"\r\n", b"\r\n")
        # and the real clients an attacker would script, where installed
        if have("curl"):
            agent = "curl ACCEPT host=10.77.77.81 port=4 fd=4 n=1/4096"
            argv = [need("curl"), "-s", "-m", "1", "-A", agent, "-H", "Host: 10.77.77.82"]
            argv += ["--interface", src(r.http), f"http://127.0.0.1:{http}/?host=10.77.77.83"]
            assert subprocess.run(argv, timeout=30).returncode == 28  # held until -m
        if have("swaks"):
            argv = [need("swaks"), "-s", "127.0.0.1", "-p", str(smtp), "-li", src(r.smtp)]
            argv += ["--ehlo", "swaks CLOSE host=10.88.88.90 port=5 fd=5 time=1.000 bytes=1"]
            argv += ["--quit-after", "EHLO", "--to", "a@b.test", "--timeout", "30"]
            assert subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
        r.same["ssh"] = src(r.ssh)
        talk(r.same["ssh"], ssh, b"SSH-2.0-" + SAME + b"\r\n")
        r.same["http"] = src(r.http)
        talk(
            r.same["http"], http, b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: " + SAME + b"\r\n\r\n"
        )
        r.same["smtp"] = src(r.smtp)
        talk(r.same["smtp"], smtp, b"EHLO " + SAME + b"\r\n", b"\r\n")
        wait_until(lambda: t.count(" CLOSE ") == len(r.peers), 20, "every CLOSE line")
    finally:
        assert t.stop() == 0, t.err[-5:]
    r.log.write_text("".join(line + "\n" for line in t.lines))
    yield r


def by_peer(run: Run, proto: str, key: str) -> dict[str, str]:
    """``key``'s stored value per peer address, from the history."""
    with sqlite3.connect(run.db) as conn:
        rows = conn.execute("SELECT ip, notes FROM sessions WHERE proto = ?", (proto,)).fetchall()
    return {ip: json.loads(notes).get(key) for ip, notes in rows}


def test_the_same_bytes_are_stored_alike_by_every_bait(run: Run) -> None:
    """Issue 17 item 12: HTTP and SMTP stored a byte 0xC3 as ``\\\\xc3``, SSH as
    ``\\xc3``."""
    assert by_peer(run, "ssh", "ssh_id")[run.same["ssh"]] == "SSH-2.0-" + SAME_STORED
    assert by_peer(run, "http", "user_agent")[run.same["http"]] == SAME_STORED
    assert by_peer(run, "smtp", "ehlo")[run.same["smtp"]] == SAME_STORED
    events = [json.loads(line) for line in run.json_log.read_text().splitlines()]
    closes = {e["host"]: e["notes"] for e in events if e["event"] == "close"}
    assert closes[run.same["http"]]["user_agent"] == SAME_STORED  # the JSON log: full text
    assert closes[run.same["smtp"]]["ehlo"] == SAME_STORED
    text = run.log.read_text()
    for key, ip in (("ssh_id=SSH-2.0-", "ssh"), ("user_agent=", "http"), ("ehlo=", "smtp")):
        addr = f"{'host' if ip == 'ssh' else 'peer'}={run.same[ip]} "
        line = next(x for x in text.splitlines() if " CLOSE " in x and addr in x)
        assert f" {key}{SAME_LINE}" in line, line


def test_the_history_keeps_the_full_crafted_text(run: Run) -> None:
    ids = set(by_peer(run, "ssh", "ssh_id").values())
    assert "SSH-2.0-x ACCEPT host=10.66.66.66 port=1 fd=1 n=1/4096" in ids
    assert 'SSH-2.0-v\\\\" ACCEPT host=10.66.66.69 port=1 fd=1 n=1/4096' in ids


def test_every_peer_line_is_logfmt(run: Run) -> None:
    for line in run.log.read_text().splitlines():
        _stamp, word, fields = line.split(" ", 2)
        assert word in ("LISTEN", "ADMIN", "OBSERVE", "ACCEPT", "CLOSE", "TOTALS"), line
        assert " ".join(f"{k}={v}" for k, v in LOGFMT.findall(fields)) == fields, line


# ---- fail2ban ---------------------------------------------------------------

# The endlessh filters people deploy (fail2ban ships none), and variants that
# anchor less: a peer value holds no space and no "=", so none can match inside.
ENDLESSH_FILTERS = {
    # endlessh's own line, anchored on the fields that follow the address
    "endlessh": r"^.* ACCEPT host=<HOST> port=\d+ fd=\d+ n=\d+/\d+",
    # the shape of public endlessh-go jails: "^.*ACCEPT host=<HOST> port=\d+ ..."
    "endlessh-go": r"^.*ACCEPT host=<HOST> port=\d+",
    "accept": r"ACCEPT host=<HOST>",
    "close": r"CLOSE host=<HOST>",
    "close-anchored": r"^.*CLOSE host=<HOST> port=\d+ fd=\d+ time=\S+ bytes=\d+",
    # greedy: the last "host=" on the line wins, so no key may end in "host"
    "greedy-host": r"^.*host=<HOST>",
}


def fail2ban(log: Path, regex: str | Path) -> set[str]:
    """The failure ids (addresses, or host names: none resolved) fail2ban-regex finds."""
    out = subprocess.run(
        [need("fail2ban-regex"), "--usedns", "raw", "--out", "id", str(log), str(regex)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return set(out.stdout.split())


@pytest.mark.realclient
@pytest.mark.parametrize("name", list(ENDLESSH_FILTERS))
def test_endlessh_filters_extract_only_true_peers(run: Run, tmp_path: Path, name: str) -> None:
    """... and only SSH peers: HTTP and SMTP records name their protocol before
    the address, named ``peer=`` (issue 18 item 2): an endlessh jail never bans a
    web crawler or a mail sender."""
    conf = tmp_path / f"{name}.conf"
    conf.write_text(f"[Definition]\nfailregex = {ENDLESSH_FILTERS[name]}\n")
    assert run.http and run.smtp
    assert fail2ban(run.log, conf) == run.ssh


@pytest.mark.realclient
@pytest.mark.parametrize("proto", ["ssh", "http", "smtp"])
def test_contrib_filters_ban_their_protocol_only(run: Run, proto: str) -> None:
    conf = CONTRIB / "filter.d" / f"tarry-{proto}.conf"
    assert conf.is_file()  # fail2ban-regex would take a missing path for a regex
    assert fail2ban(run.log, conf) == getattr(run, proto)


@pytest.mark.realclient
def test_contrib_jails_pass_fail2bans_own_check(run: Run, tmp_path: Path) -> None:
    """The jails, enabled and pointed at a real log, load with the filters."""
    client = need("fail2ban-client")
    conf = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", conf)
    for old in (conf / "jail.d").iterdir():
        old.unlink()  # the distribution's own jails want logs this machine lacks
    for f in (CONTRIB / "filter.d").iterdir():
        shutil.copy(f, conf / "filter.d")
    jails = (CONTRIB / "jail.d" / "tarry.conf").read_text()
    assert jails.count("enabled = false") == 3
    jails = jails.replace("enabled = false", "enabled = true")
    (conf / "jail.d" / "tarry.conf").write_text(
        jails.replace("/var/log/tarry/tarry.log", str(run.log))
    )
    test = subprocess.run(
        [client, "-c", str(conf), "-t"], capture_output=True, text=True, timeout=60
    )
    assert test.returncode == 0, test.stdout + test.stderr
    dump = subprocess.run(
        [client, "-c", str(conf), "-d"], capture_output=True, text=True, timeout=60
    )
    for proto in ("ssh", "http", "smtp"):
        assert f"['add', 'tarry-{proto}', 'auto']" in dump.stdout
        assert f"['set', 'tarry-{proto}', 'addlogpath', '{run.log}', 'head']" in dump.stdout
        assert (
            f"proto={proto} listener=" in dump.stdout
            if proto == "ssh"
            else f"ACCEPT proto={proto} peer=" in dump.stdout
        )


@pytest.mark.realclient
def test_contrib_filters_also_read_syslog_lines(run: Run, tmp_path: Path) -> None:
    """Through syslog the line loses tarry's stamp and gains syslog's prefix."""
    syslog = tmp_path / "syslog"
    syslog.write_text(
        "".join(
            f"Dec  5 08:00:00 box tarry[42]: {line.split(' ', 1)[1]}\n"
            for line in run.log.read_text().splitlines()
        )
    )
    assert fail2ban(syslog, CONTRIB / "filter.d" / "tarry-ssh.conf") == run.ssh


# ---- CrowdSec ---------------------------------------------------------------

# Grok's base patterns, from the logstash grok-patterns file that CrowdSec ships.
TIMESTAMP_ISO8601 = (
    r"(?:\d\d){1,2}-(?:0?[1-9]|1[0-2])-(?:(?:0[1-9])|(?:[12][0-9])|(?:3[01])|[1-9])"
    r"[T ](?:2[0123]|[01]?[0-9]):?(?:[0-5][0-9])(?::?(?:(?:[0-5]?[0-9]|60)(?:[:.,][0-9]+)?))?"
    r"(?:Z|[+-](?:2[0123]|[01]?[0-9])(?::?(?:[0-5][0-9])))?"
)
_OCTET = r"(?:[0-1]?[0-9]{1,2}|2[0-4][0-9]|25[0-5])"
IPV4 = rf"(?<![0-9])(?:{_OCTET}[.]{_OCTET}[.]{_OCTET}[.]{_OCTET})(?![0-9])"
# grok's IPV6 is a long alternation; this is a superset of it, so it can only
# find more candidates than CrowdSec does, never fewer
IPV6 = r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*"

CROWDSEC = {
    # crowdsecurity/hub parsers/s01-parse/crowdsecurity/endlessh-logs.yaml, current:
    # ENDLESSH_ACCEPT_V4 "%{TIMESTAMP_ISO8601:timestamp} ACCEPT host=(::ffff:)?%{IPV4:source_ip} "
    "accept-v4": rf"{TIMESTAMP_ISO8601} ACCEPT host=(?:::ffff:)?(?P<ip>{IPV4}) ",
    # ... ENDLESSH_ACCEPT_V6 "%{TIMESTAMP_ISO8601:timestamp} ACCEPT host=%{IPV6:source_ip} "
    "accept-v6": rf"{TIMESTAMP_ISO8601} ACCEPT host=(?P<ip>{IPV6}) ",
    # the same file, earlier revision:
    # ENDLESSH_ACCEPT_V4 "%{TIMESTAMP_ISO8601:timestamp} ACCEPT host=%{IPV4:source_ip} "
    "accept-v4-old": rf"{TIMESTAMP_ISO8601} ACCEPT host=(?P<ip>{IPV4}) ",
    # ENDLESSH_ACCEPT_V6 "%{TIMESTAMP_ISO8601:timestamp} ACCEPT host=::ffff:%{IPV6:source_ip} "
    "accept-v6-old": rf"{TIMESTAMP_ISO8601} ACCEPT host=::ffff:(?P<ip>{IPV6}) ",
}


def test_crowdsec_endlessh_patterns_extract_only_true_peers(run: Run) -> None:
    """Grok searches the line (no anchor), as CrowdSec applies it to Line.Raw."""
    lines = run.log.read_text().splitlines()
    found: dict[str, set[str]] = {name: set() for name in CROWDSEC}
    for name, pattern in CROWDSEC.items():
        rx = re.compile(pattern)
        for line in lines:
            m = rx.search(line)
            if m:
                found[name].add(m["ip"])
    v4 = {ip for ip in run.ssh if "." in ip}  # SSH peers only: no crawler, no mail sender
    assert f"ACCEPT host=::ffff:{run.mapped} " in run.log.read_text()
    assert found["accept-v4"] == v4
    assert found["accept-v4-old"] == v4 - {run.mapped}  # it never read mapped ones
    # grok's IPV6 takes an IPv4-mapped address too: the same peer
    assert {ip.removeprefix("::ffff:") for ip in found["accept-v6"]} == {"::1", run.mapped}
    assert found["accept-v6-old"] == set()


# ---- contrib/crowdsec: tarry's own parser and scenarios -----------------------

CROWDSEC_CONTRIB = CONTRIB.parent / "crowdsec"
# Grok's base patterns, from the logstash grok-patterns file CrowdSec ships
# (/etc/crowdsec/patterns/): INT, WORD and NOTSPACE as written there, IP as its
# IPV6 | IPV4 alternation, with the IPV6 superset above.
GROK_BASE = {
    "TIMESTAMP_ISO8601": TIMESTAMP_ISO8601,
    "IPV4": IPV4,
    "IPV6": IPV6,
    "IP": rf"(?:{IPV6}|{IPV4})",
    "INT": r"(?:[+-]?(?:[0-9]+))",
    "WORD": r"\b\w+\b",
    "NOTSPACE": r"\S+",
}
GROK_REF = re.compile(r"%\{(\w+)(?::(\w+))?\}")


def grok(pattern: str, syntax: dict[str, str]) -> re.Pattern[str]:
    """A grok pattern as a Python regex: %{NAME:field} becomes a named group."""

    def expand(text: str) -> str:
        def one(m: re.Match[str]) -> str:
            name, field = m.group(1), m.group(2)
            body = GROK_BASE[name] if name in GROK_BASE else expand(syntax[name])
            return f"(?P<{field}>{body})" if field else f"(?:{body})"

        return GROK_REF.sub(one, text)

    return re.compile(expand(pattern))


def crowdsec_parse(lines: list[str]) -> list[dict[str, str]]:
    """What contrib/crowdsec's parser gives each line: the first node that
    matches, applied to the message as CrowdSec's file acquisition hands it on."""
    import yaml

    parser = yaml.safe_load((CROWDSEC_CONTRIB / "parsers" / "tarry-logs.yaml").read_text())
    syntax = parser["pattern_syntax"]
    nodes = [grok(syntax[n["grok"]["name"]], syntax) for n in parser["nodes"]]
    out = []
    for line in lines:
        for rx in nodes:
            m = rx.search(line)
            if m:
                out.append({k: v for k, v in m.groupdict().items() if v is not None})
                break
    return out


@pytest.mark.parametrize("syslog", [False, True])
def test_contrib_crowdsec_parser_extracts_only_true_peers(run: Run, syslog: bool) -> None:
    import yaml

    lines = run.log.read_text().splitlines()
    if syslog:  # the syslog parser took the stamp and the prefix off
        lines = [line.split(" ", 1)[1] for line in lines]
    parsed = crowdsec_parse(lines)
    assert parsed and all("source_ip" in p for p in parsed)
    for proto in ("ssh", "http", "smtp"):
        scenario = yaml.safe_load(
            (CROWDSEC_CONTRIB / "scenarios" / f"tarry-{proto}.yaml").read_text()
        )
        assert f"evt.Meta.proto == '{proto}'" in scenario["filter"]
        assert scenario["groupby"] == "evt.Meta.source_ip"
        ips = {p["source_ip"] for p in parsed if p["proto"] == proto}
        want = {ip.removeprefix("::ffff:") for ip in getattr(run, proto)}
        assert ips == want, (proto, ips, want)
    assert all(bool(p.get("timestamp")) != syslog for p in parsed)
