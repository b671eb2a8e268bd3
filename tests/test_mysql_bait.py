"""The MySQL bait as a sans-I/O machine: the greeting, the stalled login, bounds."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baitsim import Sim, fuzz
from tarry.bait import TarpitSpec
from tarry.baits import _drip, mysql, registry
from tarry.config import ConfigError, check_value

M = mysql


def spec(delay: float = 5.0, **opts: object) -> TarpitSpec:
    options = {k: o.default for k, o in mysql.OPTIONS.items()}
    options.update(opts)
    return TarpitSpec("mysql", ["127.0.0.1:0"], delay, 16, 0.0, options)


def lenenc(b: bytes) -> bytes:
    if len(b) < 251:
        return bytes([len(b)]) + b
    return b"\xfc" + struct.pack("<H", len(b)) + b


def response(user: bytes, db: bytes = b"", attrs: dict[bytes, bytes] | None = None) -> bytes:
    """A HandshakeResponse41 as libmariadb sends one (packet 1)."""
    flags = (
        M.CLIENT_PROTOCOL_41
        | M.CLIENT_SECURE_CONNECTION
        | M.CLIENT_PLUGIN_AUTH
        | M.CLIENT_PLUGIN_AUTH_LENENC
    )
    if db:
        flags |= M.CLIENT_CONNECT_WITH_DB
    if attrs is not None:
        flags |= M.CLIENT_CONNECT_ATTRS
    body = struct.pack("<IIB", flags, 1 << 24, 45) + bytes(23) + user + b"\x00"
    body += lenenc(b"\x01" * 20)
    if db:
        body += db + b"\x00"
    body += b"mysql_native_password\x00"
    if attrs is not None:
        pairs = b"".join(lenenc(k) + lenenc(v) for k, v in attrs.items())
        body += lenenc(pairs)
    return M.packet(1, body)


def greeted(bait: mysql.MysqlBait | None = None) -> tuple[Sim, list[bytes]]:
    sim = Sim(bait or mysql.make(spec()))
    return sim, sim.segments()


def test_module_shape():
    assert registry()["mysql"] is mysql.BAIT
    assert mysql.BAIT.default_listen == ("*:3306",)
    assert mysql.OPTIONS["record_credentials"].default is True
    with pytest.raises(ConfigError, match="version"):
        check_value("", "version", "8.0\n", mysql.OPTIONS["version"])


def test_greeting_shape_and_pacing():
    sim, parts = greeted()
    assert parts[0] == b"\x4a\x00\x00\x00\x0a8.0.36\x00"  # header, protocol 10, version: whole
    assert sim.steps and all(len(p) == 1 for p in parts[1:])
    g = b"".join(parts)
    assert int.from_bytes(g[:3], "little") == len(g) - 4 and g[3] == 0
    p = g[4:]
    end = p.index(b"\x00", 1)
    caps_low, charset, status, caps_high = struct.unpack("<HBHH", p[end + 14 : end + 21])
    caps = caps_low | caps_high << 16
    for needed in (M.CLIENT_PROTOCOL_41, M.CLIENT_SECURE_CONNECTION, M.CLIENT_PLUGIN_AUTH):
        assert caps & needed
    assert not caps & M.CLIENT_SSL and not caps & M.CLIENT_COMPRESS
    assert charset == 0xFF and status == 2
    assert p.endswith(b"mysql_native_password\x00")
    assert sim.now <= M.GREET_FIRST + 5.0 * (len(parts) - 1) + 1e-9
    assert sim.now >= 5.0 * (len(parts) - 1) >= 300  # minutes for the greeting alone
    assert sim.obj is None  # a greeted client costs no object


def test_login_stalled_and_recorded():
    sim, _ = greeted()
    attrs = {
        b"_client_name": b"libmariadb",
        b"_client_version": b"3.3.8",
        b"program_name": b"mysql",
    }
    sim.feed(response(b"root", b"shop", attrs))
    switch = b"".join(sim.segments())
    assert switch == M.packet(2, b"\xfemysql_clear_password\x00")
    assert sim.notes["auth_user"] == "root" and sim.notes["database"] == "shop"
    assert sim.notes["client"] == "mysql/3.3.8"
    assert "program_name=mysql" in sim.notes["client_attrs"]
    before = sim.now
    sim.feed(M.packet(3, b"letmein\x00"))
    parts = sim.segments()
    err = b"".join(parts)
    assert parts[0] == err[:13] and err[4:7] == b"\xff\x15\x04" and err[7:13] == b"#28000"
    assert err[3] == 4 and b"Access denied for user 'root'@" in err
    assert sim.notes["auth_pass"] == "letmein" and sim.closed
    assert sim.now - before >= 5.0 * 60  # the denial drips for minutes


def test_no_password_asked_without_record_credentials():
    sim, _ = greeted(mysql.make(spec(record_credentials=False)))
    sim.feed(response(b"admin"))
    err = b"".join(sim.segments())
    assert err[3] == 2 and err[4:5] == b"\xff" and "auth_pass" not in sim.notes
    assert sim.closed


def test_response_during_greeting_is_kept():
    sim = Sim(mysql.make(spec()))
    sim.tick()
    sim.feed(response(b"early"))  # a client that does not wait (or a fuzzer)
    assert b"mysql_clear_password" in b"".join(sim.segments())
    assert sim.notes["auth_user"] == "early"


def test_hostile_attributes_sanitised():
    sim, _ = greeted()
    sim.feed(response(b"u\nCLOSE x", attrs={b"program_name": b"a b\x1b[31m" * 40}))
    sim.segments()
    assert sim.notes["auth_user"] == "u\\x0aCLOSE x"
    assert all(v.isprintable() and len(v) <= 256 for v in sim.notes.values())


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff\x01",  # a 16 MiB packet announced
        M.packet(1, b"\x00\x02\x00\x00" + b"\x01" * 40),  # protocol 41, no user name end
    ],
)
def test_bad_handshake_closes(data):
    sim, _ = greeted()
    sim.feed(data)
    err = b"".join(sim.segments())
    assert b"Bad handshake" in err and sim.closed


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=10))
def test_fuzz(chunks):
    fuzz(mysql.make(spec()), chunks, _drip.INPUT_MAX)
