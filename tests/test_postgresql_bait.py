"""The PostgreSQL bait as a sans-I/O machine: startup, undecided auth, bounds."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baitsim import Sim, fuzz
from tarry.bait import TarpitSpec
from tarry.baits import _drip, postgresql, registry
from tarry.config import ConfigError, check_value

PG = postgresql


def spec(delay: float = 10.0, **opts: object) -> TarpitSpec:
    options = {k: o.default for k, o in PG.OPTIONS.items()}
    options.update(opts)
    return TarpitSpec("postgresql", ["127.0.0.1:0"], delay, 16, 0.0, options)


def untyped(code: int, body: bytes = b"") -> bytes:
    return struct.pack("!II", len(body) + 8, code) + body


def startup(**params: bytes) -> bytes:
    body = b"".join(k.encode() + b"\x00" + v + b"\x00" for k, v in params.items()) + b"\x00"
    return untyped(196608, body)


def started(bait: PG.PostgresqlBait | None = None, **params: bytes) -> tuple[Sim, bytes]:
    sim = Sim(bait or PG.make(spec()))
    sim.feed(untyped(PG.SSL_REQUEST))
    assert sim.segments() == [b"N"]
    sim.feed(startup(**(params or {"user": b"admin", "database": b"prod"})))
    return sim, b"".join(sim.segments())


def test_module_shape():
    assert registry()["postgresql"] is PG.BAIT
    assert PG.BAIT.default_listen == ("*:5432",)
    assert PG.OPTIONS["record_credentials"].default is True
    with pytest.raises(ConfigError, match="auth"):
        check_value("", "auth", "trust", PG.OPTIONS["auth"])


def test_cleartext_login_recorded_and_refused_slowly():
    sim, request = started(user=b"admin", database=b"prod", application_name=b"psql")
    assert request == b"R\x00\x00\x00\x08\x00\x00\x00\x03"  # AuthenticationCleartextPassword
    assert sim.notes == {
        "auth_user": "admin",
        "database": "prod",
        "application_name": "psql",
        "client": "psql",
    }
    before = sim.now
    sim.feed(b"p" + struct.pack("!I", 4 + 8) + b"s3cret!\x00")
    parts = sim.segments()
    err = b"".join(parts)
    assert parts[0].startswith(b"E") and parts[0].endswith(b"C28P01\x00")  # code whole
    assert b'Mpassword authentication failed for user "admin"\x00' in err
    assert struct.unpack("!I", err[1:5])[0] == len(err) - 1
    assert sim.notes["auth_pass"] == "s3cret!" and sim.closed
    assert sim.now - before >= 600  # psql, which has no deadline, waits 10 minutes


def test_gssenc_then_md5():
    sim = Sim(PG.make(spec(auth="md5")))
    sim.feed(untyped(PG.GSS_REQUEST))
    assert sim.segments() == [b"N"]
    sim.feed(startup(user=b"postgres"))
    request = b"".join(sim.segments())
    assert request[:9] == b"R\x00\x00\x00\x0c\x00\x00\x00\x05" and len(request) == 13
    assert sim.notes["database"] == "postgres"  # libpq's default: the user name
    sim.feed(b"p" + struct.pack("!I", 4 + 36) + b"md5" + b"0" * 32 + b"\x00")
    sim.segments()
    assert sim.notes["auth_hash"] == "md5" + "0" * 32 and "auth_pass" not in sim.notes


def test_scram_first_round():
    sim, request = started(PG.make(spec(auth="scram-sha-256")))
    assert request[5:9] == b"\x00\x00\x00\x0a" and b"SCRAM-SHA-256\x00\x00" in request
    first = b"n,,n=,r=clientnonce123"
    body = b"SCRAM-SHA-256\x00" + struct.pack("!I", len(first)) + first
    sim.feed(b"p" + struct.pack("!I", 4 + len(body)) + body)
    cont = b"".join(sim.segments())
    assert cont[5:9] == b"\x00\x00\x00\x0b" and cont[9:].startswith(b"r=clientnonce123")
    assert b",s=" in cont and cont.endswith(b",i=4096")
    final = b"c=biws,r=clientnonce123x,p=AAAA"
    sim.feed(b"p" + struct.pack("!I", 4 + len(final)) + final)
    assert b"28P01" in b"".join(sim.segments()) and sim.closed


def test_no_password_recorded_without_record_credentials():
    sim, _ = started(PG.make(spec(record_credentials=False)))
    sim.feed(b"p" + struct.pack("!I", 4 + 3) + b"pw\x00")
    sim.segments()
    assert "auth_pass" not in sim.notes and sim.notes["auth_user"] == "admin"


def test_cancel_and_terminate_close():
    sim = Sim(PG.make(spec()))
    sim.feed(untyped(PG.CANCEL_REQUEST, b"\x00" * 8))
    assert sim.closed
    sim, _ = started()
    sim.feed(b"X\x00\x00\x00\x04")
    assert sim.closed


def test_old_protocol_refused():
    sim = Sim(PG.make(spec()))
    sim.feed(untyped(2 << 16, b"\x00"))
    err = b"".join(sim.segments())
    assert b"C0A000\x00" in err and b"unsupported frontend protocol" in err and sim.closed


@pytest.mark.parametrize("size", [3, _drip.INPUT_MAX, 2**31])
def test_bad_lengths_close(size):
    sim = Sim(PG.make(spec()))
    sim.feed(struct.pack("!I", size) + b"\x00" * 4)
    assert sim.closed and sim.sent == 0


def test_startup_in_pieces_and_hostile_names():
    sim = Sim(PG.make(spec()))
    data = startup(user=b'x"\nCLOSE', application_name=b"\x1b[2J" * 50)
    for i in range(len(data)):
        sim.feed(data[i : i + 1])
    assert b"".join(sim.segments())[:1] == b"R"
    assert sim.notes["auth_user"] == 'x"\\x0aCLOSE'
    assert all(v.isprintable() and len(v) <= 256 for v in sim.notes.values())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=10))
def test_fuzz(chunks):
    fuzz(PG.make(spec()), chunks, _drip.INPUT_MAX)


@pytest.mark.parametrize("auth", PG.AUTHS)
def test_password_sent_inside_a_10s_connect_timeout(auth):
    """patator's libpq connect_timeout is 10 s in all: N and the request go
    within a second each, so its password is recorded before it leaves."""
    sim, request = started(PG.make(spec(auth=auth)), user=b"postgres")
    assert request[:1] == b"R" and sim.now <= 2 * PG.QUICK
    assert PG.DEFAULTS["delay"] > 2 * PG.QUICK  # what the quick steps save
