"""Property tests (hypothesis) for every parser that reads outside input: tarry's
config, endlessh's config, PROXY v1/v2, HTTP request heads, SMTP commands, and
the per-IP counter's table. A parser may accept or refuse; it never raises
anything else, and what it accepts it reads right."""

from __future__ import annotations

import ipaddress
import random
import re
import string
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tarry import proxy
from tarry.bait import STATE_MAX, TarpitSpec
from tarry.baits import http as H
from tarry.baits import smtp
from tarry.config import (
    DEFAULT_CONFIG,
    ConfigError,
    EndlesshConfig,
    EndlesshError,
    load_endlessh,
    parse,
)
from tarry.limits import IPCounter

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- tarry's config -------------------------------------------------------------------

KEYS = [
    "protocol",
    "listen",
    "delay",
    "max_clients",
    "max_clients_per_ip",
    "per_ip_action",
    "proxy_protocol",
    "proxy_timeout",
    "jitter",
    "name",
    "line_length",
    "strategy",
    "bogus",
]
scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(string.printable.replace('"', "").replace("\\", ""), max_size=20),
    st.sampled_from(["ssh", "http", "smtp", "close", "backlog", "127.0.0.1:0", "*:22"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3))


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, str):
        return '"' + v.replace("\n", " ").replace("\r", " ") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


tables = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)
sections = st.dictionaries(
    st.sampled_from(["engine", "limits", "privileges", "log", "bogus"]),
    st.dictionaries(
        st.sampled_from(
            ["loop", "write_timeout", "max_clients", "user", "group", "allow_root", "level", "x"]
        ),
        scalars,
        max_size=3,
    ),
    max_size=3,
)


def one_line_error(text: str) -> None:
    try:
        parse(text, "fuzz.toml")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("fuzz.toml") and message.count("\n") == 0, message


@FAST
@given(st.text(max_size=400))
def test_config_any_text_is_parsed_or_refused_in_one_line(text) -> None:
    one_line_error(text)


@FAST
@given(st.lists(tables, min_size=0, max_size=3), sections)
def test_config_any_tables_are_parsed_or_refused_in_one_line(tarpits, extra) -> None:
    out = []
    for name, table in extra.items():
        out.append(f"[{name}]")
        out += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    for table in tarpits:
        out.append("[[tarpit]]")
        out += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    one_line_error("\n".join(out) + "\n")


@FAST
@given(
    per_ip=st.integers(0, 65535),
    action=st.sampled_from(["close", "backlog"]),
    proxy_on=st.booleans(),
    timeout=st.floats(0.001, 3600),
    cap=st.integers(0, 10**9),
)
def test_config_valid_limits_are_read_back(per_ip, action, proxy_on, timeout, cap) -> None:
    cfg = parse(
        '[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:0"]\n'
        f'max_clients_per_ip = {per_ip}\nper_ip_action = "{action}"\n'
        f"proxy_protocol = {str(proxy_on).lower()}\nproxy_timeout = {timeout!r}\n"
        f"[limits]\nmax_clients = {cap}\n"
    )
    spec = cfg.tarpits[0]
    assert (spec.max_clients_per_ip, spec.per_ip_action) == (per_ip, action)
    assert (spec.proxy_protocol, spec.proxy_timeout, cfg.max_clients) == (proxy_on, timeout, cap)


def test_default_config_parses_with_the_documented_defaults() -> None:
    cfg = parse(DEFAULT_CONFIG)
    assert all(s.max_clients_per_ip == 64 and s.per_ip_action == "close" for s in cfg.tarpits)
    assert (cfg.user, cfg.group, cfg.allow_root, cfg.max_clients) == ("nobody", "nogroup", False, 0)


# ---- endlessh's config ------------------------------------------------------------------

endlessh_keys = st.sampled_from(
    ["Port", "Delay", "MaxLineLength", "MaxClients", "BindFamily", "LogLevel", "Bogus", "#", ""]
)
endlessh_words = st.one_of(
    st.integers(-5, 70000).map(str), st.text(string.printable, max_size=8), st.just("")
)


@FAST
@given(st.lists(st.tuples(endlessh_keys, endlessh_words, endlessh_words), max_size=10))
def test_endlessh_config_lines(lines) -> None:
    text = "\n".join(" ".join(t) for t in lines)
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
        f.write(text)
        f.flush()
        warnings: list[str] = []
        soft = EndlesshConfig()
        load_endlessh(soft, f.name, hard=False, warn=warnings.append)  # never raises
        assert all("\n" not in w for w in warnings)
        assert 1 <= soft.port <= 65535 and 3 <= soft.max_line_length <= 255
        assert soft.bind_family in (0, 4, 6) and soft.delay >= 1 and soft.max_clients >= 1
        hard = EndlesshConfig()
        try:
            load_endlessh(hard, f.name, hard=True, warn=lambda m: None)
        except EndlesshError as exc:
            assert "\n" not in str(exc)
        else:
            assert hard == soft  # nothing fatal: the same settings either way


@FAST
@given(st.binary(max_size=600))
def test_endlessh_config_any_bytes(data) -> None:
    with tempfile.NamedTemporaryFile("wb", suffix=".conf") as f:
        f.write(data)
        f.flush()
        load_endlessh(EndlesshConfig(), f.name, hard=False, warn=lambda m: None)
        try:
            load_endlessh(EndlesshConfig(), f.name, hard=True, warn=lambda m: None)
        except EndlesshError:
            pass


@FAST
@given(
    port=st.integers(1, 65535),
    delay=st.integers(1, 2**31 - 1),
    length=st.integers(3, 255),
    clients=st.integers(1, 2**31 - 1),
    family=st.sampled_from(["0", "4", "6"]),
)
def test_endlessh_config_valid_values_are_read(port, delay, length, clients, family) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
        f.write(
            f"# comment\nPort {port}\nDelay {delay}  # trailing\nMaxLineLength {length}\n"
            f"MaxClients {clients}\r\nBindFamily {family}\n"
        )
        f.flush()
        cfg = EndlesshConfig()
        load_endlessh(cfg, f.name, hard=True, warn=pytest.fail)
    assert (cfg.port, cfg.delay, cfg.max_line_length, cfg.max_clients) == (
        port,
        delay,
        length,
        clients,
    )
    assert cfg.bind_family == int(family)


# ---- PROXY v1 / v2 ----------------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


def same_ip(a: str, b: str) -> bool:
    return ipaddress.ip_address(a) == ipaddress.ip_address(b)


@FAST
@given(
    st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)), ports, ports, st.binary(max_size=50)
)
def test_proxy_v1_round_trip_and_every_prefix_waits(addrs, sport, dport, rest) -> None:
    src, dst = addrs
    header = proxy.v1(src, sport, dst, dport)
    got = proxy.parse(header + rest)
    assert got is not None and got.version == 1 and got.length == len(header)
    assert same_ip(got.src, src) and same_ip(got.dst, dst)
    assert (got.src_port, got.dst_port) == (sport, dport)
    for cut in range(len(header)):
        assert proxy.parse(header[:cut]) is None


@FAST
@given(
    st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)),
    ports,
    ports,
    st.binary(max_size=300),
    st.binary(max_size=50),
)
def test_proxy_v2_round_trip_with_tlvs(addrs, sport, dport, tlvs, rest) -> None:
    src, dst = addrs
    header = proxy.v2(src, sport, dst, dport, tlvs=tlvs)
    got = proxy.parse(header + rest)
    assert got is not None and got.version == 2 and got.length == len(header)
    assert same_ip(got.src, src) and same_ip(got.dst, dst)
    assert (got.src_port, got.dst_port) == (sport, dport)
    for cut in range(0, len(header), 7):
        assert proxy.parse(header[:cut]) is None


@FAST
@given(st.binary(max_size=3000))
def test_proxy_any_bytes_parse_or_refuse(data) -> None:
    try:
        got = proxy.parse(data)
    except proxy.ProxyError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 200
        return
    if got is None:
        # waiting for more is only ever a proper prefix of a header, within bounds
        assert len(data) < proxy.V2_FIXED + proxy.V2_MAX
    else:
        assert 0 < got.length <= len(data)


@FAST
@given(st.binary(min_size=1, max_size=300))
def test_proxy_garbage_after_a_v1_keyword(tail) -> None:
    data = b"PROXY " + tail
    try:
        got = proxy.parse(data)
    except proxy.ProxyError:
        return
    assert got is None or got.length <= min(len(data), proxy.V1_MAX)


def test_proxy_never_needs_more_than_its_bound() -> None:
    with pytest.raises(proxy.ProxyError):
        proxy.parse(b"PROXY TCP4 " + b"9" * 200)
    big = proxy.V2_SIGNATURE + b"\x21\x11" + (proxy.V2_MAX + 1).to_bytes(2, "big")
    with pytest.raises(proxy.ProxyError):
        proxy.parse(big)


# ---- HTTP request heads -------------------------------------------------------------------

token = st.text(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~", min_size=1, max_size=12)
path = st.text(string.ascii_letters + string.digits + "/-._~%?=&", min_size=0, max_size=60).map(
    lambda p: "/" + p
)
field = (
    st.text(string.ascii_letters + string.digits + " ;:/.,()-_=", min_size=1, max_size=60)
    .map(str.strip)
    .filter(bool)
)


def http_bait() -> H.HttpBait:
    opts = {k: o.default for k, o in H.OPTIONS.items()}
    spec = TarpitSpec("http", ["127.0.0.1:0"], 5.0, 100, 0.0, opts)
    return H.HttpBait(spec, rand=random.Random(1), clock=lambda: 1_700_000_000.0)


@FAST
@given(
    method=token,
    target=path,
    host=field,
    agent=field,
    extra=st.lists(st.tuples(token, field), max_size=5),
    cuts=st.lists(st.integers(0, 500), max_size=8),
    crlf=st.sampled_from([b"\r\n", b"\n"]),
)
def test_http_heads_are_read_right_however_split(method, target, host, agent, extra, cuts, crlf):
    assume(method.lower() not in ("host", "user-agent"))
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"User-Agent: {agent}"]
    lines += [f"X-{k}: {v}" for k, v in extra]
    head = crlf.join(line.encode() for line in lines) + crlf + crlf
    points = sorted({min(c, len(head)) for c in cuts})
    pieces = [head[a:b] for a, b in zip([0, *points], [*points, len(head)], strict=True)]
    bait = http_bait()
    step = bait.open("127.0.0.1")
    state, obj, notes = step.state, step.obj, {}
    for piece in pieces:
        step = bait.feed(state, obj, piece, 0.1)
        assert 0 <= step.state <= STATE_MAX
        assert step.obj is None or len(step.obj) <= H.HEAD_MAX
        state, obj = step.state, step.obj
        notes.update(step.notes or ())
    assert notes.get("method") == method and notes.get("path") == target
    assert notes.get("version") == "HTTP/1.1"
    assert notes.get("host_header") == host and notes.get("user_agent") == agent
    assert obj is None  # the head was read: nothing kept per client any more


# ---- SMTP commands ------------------------------------------------------------------------

domain = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){1,2}", fullmatch=True)
mailbox = st.builds(
    lambda u, d: f"{u}@{d}", st.from_regex(r"[a-z0-9._+-]{1,12}", fullmatch=True), domain
)
command = st.one_of(
    domain.map(lambda d: f"EHLO {d}"),
    domain.map(lambda d: f"HELO {d}"),
    mailbox.map(lambda m: f"MAIL FROM:<{m}>"),
    mailbox.map(lambda m: f"RCPT TO:<{m}>"),
    st.sampled_from(["RSET", "NOOP", "HELP", "VRFY postmaster", "EXPN staff", "MAIL FROM:<>"]),
    st.sampled_from(["mail from:<A@B.C>", "rcpt to:<x@y.z>", "ehlo lower.case"]),
    st.text(string.ascii_letters + string.digits + " :<>@.", min_size=1, max_size=40)
    .map(str.strip)
    .filter(
        lambda s: s and s.split()[0].upper() not in ("DATA", "QUIT", "AUTH", "STARTTLS", "BDAT")
    ),
)
REPLY = re.compile(rb"\d{3}[ -][\x20-\x7e]*\r\n")


class SmtpSession:
    """Plays the engine for one client of the SMTP bait, ticking replies out."""

    def __init__(self) -> None:
        options = {k: o.default for k, o in smtp.OPTIONS.items()}
        options["hostname"] = "mx.example.test"
        self.bait = smtp.make(TarpitSpec("smtp", ["127.0.0.1:0"], 0.0, 16, 0.0, options))
        self.out = b""
        self.notes: dict[str, str] = {}
        self.age = 0.0
        self.take(self.bait.open("127.0.0.1"))

    def take(self, step: Any) -> None:
        assert 0 <= step.state <= STATE_MAX and not step.close
        self.state, self.obj, self.delay = step.state, step.obj, step.delay
        self.out += step.out
        self.notes.update(step.notes or ())

    def replies(self) -> list[bytes]:
        return [line for line in REPLY.findall(self.out) if line[3:4] == b" "]

    def drain(self, finals: int) -> None:
        """Tick until ``finals`` final reply lines have gone out."""
        for _ in range(20000):
            if len(self.replies()) >= finals:
                return
            self.age += 1.0
            self.take(self.bait.tick(self.state, self.obj, self.age))
        raise AssertionError(f"only {len(self.replies())} of {finals} replies: {self.out[-200:]!r}")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(command, min_size=1, max_size=8), st.booleans())
def test_smtp_commands_each_get_one_well_formed_reply(commands, pipelined) -> None:
    s = SmtpSession()
    s.drain(1)  # the greeting
    if pipelined:
        s.take(s.bait.feed(s.state, s.obj, "".join(c + "\r\n" for c in commands).encode(), s.age))
        s.drain(1 + len(commands))
    else:
        for i, c in enumerate(commands):
            s.take(s.bait.feed(s.state, s.obj, (c + "\r\n").encode(), s.age))
            s.drain(2 + i)
    assert b"".join(REPLY.findall(s.out)) == s.out  # nothing but reply lines
    assert len(s.replies()) == 1 + len(commands)
    hellos = [c.split(None, 1)[1] for c in commands if c.upper().startswith(("EHLO ", "HELO "))]
    if hellos and "ehlo" in s.notes:
        assert s.notes["ehlo"] in hellos


# ---- the per-IP counter -----------------------------------------------------------------


@FAST
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.one_of(st.integers(1, 40), st.integers(1, 2**32 - 1), st.just(0)),
            st.one_of(st.none(), st.binary(min_size=8, max_size=8)),
        ),
        max_size=400,
    )
)
def test_ip_counter_matches_a_dict(ops) -> None:
    c, model = IPCounter(), {}
    for add, ip4, ip6 in ops:
        key = ("v6", ip6 or b"") if ip6 is not None or ip4 == 0 else ip4
        if add:
            c.add(ip4, ip6)
            model[key] = model.get(key, 0) + 1
        else:
            c.remove(ip4, ip6)
            if model.get(key):
                model[key] -= 1
                if not model[key]:
                    del model[key]
        assert c.count(ip4, ip6) == model.get(key, 0)
    assert len(c) == len(model)
    for key, n in model.items():
        if isinstance(key, tuple):
            assert c.count(0, key[1]) == n
        else:
            assert c.count(key) == n
