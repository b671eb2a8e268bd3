"""The TLS layer with real TLS clients: in-process SSLObject clients on memory
BIOs, and the standard library's smtplib over sockets through a test-only pump."""

from __future__ import annotations

import smtplib
import ssl
import stat
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baitsim import Sim, TlsClient
from pump import Pump
from tarry import tls
from tarry.bait import TarpitSpec
from tarry.baits import smtp

HOST = "mx.tarry.test"
READY = b"220 2.0.0 Ready to start TLS\r\n"


def spec(delay: float = 0.0, **opts: object) -> TarpitSpec:
    options = {k: o.default for k, o in smtp.OPTIONS.items()}
    options["hostname"] = HOST
    options.update(opts)
    return TarpitSpec("smtp", ["127.0.0.1:0"], delay, 16, 0.0, options)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def client_ctx(state_dir):
    cert, _ = tls.ensure_self_signed(HOST, state_dir)
    ctx = ssl.create_default_context(cafile=str(cert))  # verifies the generated certificate
    return ctx


def wrapped(state_dir, **opts: object) -> tls.TlsBait:
    s = spec(**opts)
    bait = tls.wrap(s, smtp.make(s), state_dir)
    assert isinstance(bait, tls.TlsBait)
    return bait


def test_plain_spec_is_not_wrapped(state_dir):
    s = spec(starttls=False)
    bait = smtp.make(s)
    assert tls.wrap(s, bait, state_dir) is bait


def test_generated_certificate_is_kept_and_reused(tmp_path):
    cert, key = tls.ensure_self_signed("a.example", tmp_path)
    pem = cert.read_bytes()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = tls.ensure_self_signed("a.example", tmp_path)
    assert again == (cert, key) and cert.read_bytes() == pem
    ctx = tls.server_context(str(cert), str(key))
    assert ctx.options & ssl.OP_NO_RENEGOTIATION and ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.num_tickets == 0


def test_state_dir_is_made_or_named_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert tls.default_state_dir() == tmp_path / "xdg" / "tarry"
    assert (tmp_path / "xdg" / "tarry").is_dir()
    # never a silent fall-back elsewhere: the operator is told which directory
    monkeypatch.setenv("XDG_STATE_HOME", "/proc/not-writable")
    with pytest.raises(tls.CertError) as err:
        tls.default_state_dir()
    assert "/proc/not-writable/tarry" in one_line(err)


def one_line(exc: pytest.ExceptionInfo[tls.CertError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.startswith(("cert: ", "key: "))
    return text


def test_certificate_errors_are_one_clear_line(tmp_path, state_dir):
    cert, key = tls.ensure_self_signed(HOST, state_dir)
    _, other_key = tls.ensure_self_signed("other.example", tmp_path)
    missing = tmp_path / "missing.pem"
    with pytest.raises(tls.CertError) as e:
        tls.server_context(str(missing), str(key))
    assert one_line(e) == f"cert: cannot read {missing}: No such file or directory"
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"not a certificate\n")
    with pytest.raises(tls.CertError) as e:
        tls.server_context(str(junk), str(key))
    assert str(junk) in one_line(e)
    with pytest.raises(tls.CertError) as e:
        tls.server_context(str(cert), str(junk))
    assert str(junk) in one_line(e)
    with pytest.raises(tls.CertError) as e:
        tls.server_context(str(cert), str(other_key))
    assert "does not match" in one_line(e) and str(other_key) in str(e.value)
    with pytest.raises(tls.CertError) as e:
        tls.server_context(str(cert), "")
    assert str(cert) in one_line(e)
    with pytest.raises(tls.CertError) as e:
        tls.server_context("", str(key))
    assert one_line(e).startswith("cert: not set")
    # An encrypted key must fail at once, never prompt for a passphrase.
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(key.read_bytes(), None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(tls.CertError) as e:
        tls.server_context(str(cert), str(locked))
    assert "encrypted" in one_line(e) and str(locked) in str(e.value)
    # Certificate and key in one file is accepted.
    both = tmp_path / "both.pem"
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    tls.server_context(str(both))
    # Through wrap(), as the config layer will call it.
    with pytest.raises(tls.CertError):
        tls.wrap(spec(cert=str(missing)), smtp.make(spec()), state_dir)


def test_without_cryptography_starttls_degrades_and_implicit_fails(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cryptography", None)  # as if not installed
    warnings: list[str] = []
    s = spec()
    bait = smtp.make(s)
    assert tls.wrap(s, bait, tmp_path, warnings.append) is bait
    assert warnings and "cryptography" in warnings[0]
    sim = Sim(bait)
    sim.run()
    sim.feed(b"EHLO x\r\n")
    assert b"STARTTLS" not in sim.run()  # not offered without a TLS layer
    with pytest.raises(tls.TlsUnavailable) as e:
        tls.wrap(spec(tls=True), smtp.make(spec(tls=True)), tmp_path)
    assert one_line(e).startswith("cert: not set")


def test_starttls_dialogue(state_dir, client_ctx):
    bait = wrapped(state_dir)
    sim = Sim(bait)
    assert sim.run().endswith(b"ESMTP Postfix\r\n")
    assert sim.obj is not None and not tls.is_tls(sim.obj)  # nothing extra before TLS
    sim.feed(b"EHLO plain.example\r\n")
    assert b"250-STARTTLS\r\n" in sim.run()
    sim.feed(b"STARTTLS\r\nNOOP\r\n")  # plaintext pipelined after STARTTLS is dropped
    assert sim.run(until=READY) == b"220 2.0.0 Ready to start TLS\r\n"
    assert tls.is_tls(sim.obj)
    client = TlsClient(sim, client_ctx, HOST)
    client.handshake()
    assert sim.notes["tls"] == "yes"
    assert sim.notes["tls_version"] == "TLSv1.3" and sim.notes["tls_cipher"]
    assert client.recv_until(b"\r\n") == b""  # the NOOP did not survive
    client.send(b"EHLO secure.example\r\n")
    ehlo = client.recv_until(b"250 8BITMIME\r\n")
    assert ehlo.startswith(f"250-{HOST}\r\n".encode()) and b"STARTTLS" not in ehlo
    client.send(b"STARTTLS\r\n")
    assert client.recv_until(b"\r\n") == b"554 5.5.1 Error: TLS already active\r\n"
    client.send(b"MAIL FROM:<tls@sender.example>\r\n")
    assert client.recv_until(b"\r\n") == b"250 2.1.0 Ok\r\n"
    client.send(b"QUIT\r\n")
    assert client.recv_until(b"Bye\r\n") == b"221 2.0.0 Bye\r\n"
    assert sim.closed
    assert sim.notes["ehlo"] == "secure.example"
    assert sim.notes["mail_from"] == "tls@sender.example"
    assert bait.errors == 0 and bait.inner.errors == 0


def test_session_limit_reaches_an_idle_client_inside_tls(state_dir, client_ctx):
    sim = Sim(wrapped(state_dir, delay=0.5, session_limit=200.0))
    sim.run(until=b"Postfix\r\n")
    sim.feed(b"EHLO x\r\nSTARTTLS\r\n")
    sim.run(until=READY)
    client = TlsClient(sim, client_ctx, HOST)
    client.handshake()
    assert client.recv_until(b"exceeded\r\n") == (
        f"421 4.4.2 {HOST} Error: timeout exceeded\r\n".encode()
    )
    assert sim.closed and 200.0 <= sim.now < 260.0


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_implicit_tls_dialogue(state_dir, client_ctx, version):
    bait = wrapped(state_dir, tls=True, starttls=False)
    sim = Sim(bait)
    assert tls.is_tls(sim.obj) and sim.take() == b""  # nothing in clear, ever
    cert, _ = tls.ensure_self_signed(HOST, state_dir)
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.maximum_version = version
    client = TlsClient(sim, ctx, HOST)
    client.handshake()
    assert sim.notes["tls_version"] == version.name.replace("v1_", "v1.")
    assert client.recv_until(b"Postfix\r\n") == f"220 {HOST} ESMTP Postfix\r\n".encode()
    client.send(b"EHLO implicit.example\r\n")
    ehlo = client.recv_until(b"250 8BITMIME\r\n")
    assert b"STARTTLS" not in ehlo and b"AUTH PLAIN LOGIN" in ehlo
    client.send(b"STARTTLS\r\n")
    assert client.recv_until(b"\r\n").startswith(b"554 ")
    client.send(b"QUIT\r\n")
    assert client.recv_until(b"Bye\r\n") == b"221 2.0.0 Bye\r\n"
    assert sim.closed
    assert bait.errors == 0


def test_client_close_notify_closes(state_dir, client_ctx):
    sim = Sim(wrapped(state_dir, tls=True))
    client = TlsClient(sim, client_ctx, HOST)
    client.handshake()
    try:
        client.ssl.unwrap()
    except ssl.SSLWantReadError:
        pass
    client._flush()
    assert sim.closed


def test_handshake_stutter(state_dir, client_ctx):
    bait = wrapped(state_dir, tls=True, tls_stutter=1.5)
    sim = Sim(bait)
    client = TlsClient(sim, client_ctx, HOST)
    try:
        client.ssl.do_handshake()
    except ssl.SSLWantReadError:
        pass
    client._flush()  # the ClientHello
    assert sim.take() == b""  # nothing at once
    pieces = []
    while sim.obj.pending:  # the handshake output not yet dripped
        assert sim.tick()
        piece = sim.take()
        pieces.append(piece)
        client.inb.write(piece)
    assert len(pieces) > 3 and all(len(p) <= tls.HS_PIECE for p in pieces)
    assert sim.now >= 1.5 * len(pieces)
    client.handshake()
    assert sim.notes["tls"] == "yes"
    assert client.recv_until(b"Postfix\r\n").endswith(b"ESMTP Postfix\r\n")
    assert bait.errors == 0


def test_garbage_client_hello_closes_at_once(state_dir):
    for junk in (b"GET / HTTP/1.0\r\n\r\n", b"EHLO x\r\n", b"\x16\x03\x01\x00\x05hello"):
        sim = Sim(wrapped(state_dir, tls=True))
        sim.feed(junk)
        assert sim.closed, junk
        assert sim.notes["tls"] == "failed" and sim.notes["tls_error"]


def test_half_sent_client_hello_times_out(state_dir, client_ctx):
    sim = Sim(wrapped(state_dir, tls=True))
    inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client_ctx.wrap_bio(inb, outb, server_hostname=HOST)
    with pytest.raises(ssl.SSLWantReadError):
        c.do_handshake()
    hello = outb.read()
    sim.feed(hello[:20])
    assert not sim.closed
    while sim.tick():
        pass
    assert sim.closed and sim.notes["tls_error"] == "handshake-timeout"
    assert sim.now <= tls.HANDSHAKE_TIME + 1


def test_dawdling_starttls_client_times_out(state_dir):
    sim = Sim(wrapped(state_dir, delay=0.5))
    sim.run()
    sim.feed(b"EHLO x\r\n")
    sim.run()
    sim.feed(b"STARTTLS\r\n")
    sim.run(until=READY)
    start = sim.now
    assert tls.is_tls(sim.obj)
    while sim.tick():
        pass
    assert sim.closed and sim.now - start <= tls.HANDSHAKE_TIME + 1


def test_handshake_input_is_bounded(state_dir):
    sim = Sim(wrapped(state_dir, tls=True))
    # A handshake record header promising 16 KB, then a trickle that never completes it.
    sim.feed(b"\x16\x03\x01\x40\x00")
    for _ in range(tls.HANDSHAKE_IN_MAX // 1000 + 2):
        if sim.closed:
            break
        sim.feed(b"\x00" * 1000)
    assert sim.closed


def test_max_tls_clients(state_dir, client_ctx):
    bait = wrapped(state_dir, tls=True, max_tls_clients=2)
    a, b = Sim(bait), Sim(bait)
    c = Sim(bait)
    assert c.closed and c.notes["tls"] == "refused"
    assert bait.live == 2
    a.obj = None  # the engine drops a closed client's obj
    assert bait.live == 1
    d = Sim(bait)
    assert not d.closed and tls.is_tls(d.obj)
    del b, d
    # STARTTLS over the cap: refused with 454, the session goes on in clear.
    st_bait = wrapped(state_dir, max_tls_clients=1)
    first = Sim(st_bait)
    first.run()
    first.feed(b"EHLO x\r\nSTARTTLS\r\n")
    first.run(until=READY)
    assert tls.is_tls(first.obj)
    second = Sim(st_bait)
    second.run()
    second.feed(b"EHLO y\r\n")
    second.run()
    second.feed(b"STARTTLS\r\n")
    assert second.run().startswith(b"454 ")
    assert not tls.is_tls(second.obj)


def test_big_records_after_handshake(state_dir, client_ctx):
    bait = wrapped(state_dir, tls=True)
    sim = Sim(bait)
    client = TlsClient(sim, client_ctx, HOST)
    client.handshake()
    client.recv_until(b"Postfix\r\n")
    for _ in range(20):
        client.send(b"NOOP " + b"x" * 16000)  # full-size records, one overlong line
    assert not sim.closed
    assert len(sim.obj.inner.buf or b"") <= smtp.PENDING_MAX
    client.send(b"\r\nNOOP\r\n")
    assert client.recv_until(b"Ok\r\n").endswith(b"250 2.0.0 Ok\r\n")
    assert bait.errors == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=200), max_size=20), st.booleans())
def test_fuzz_tls_input(state_dir, pieces, implicit):
    bait = wrapped(state_dir, tls=implicit)
    sim = Sim(bait)
    if not implicit:
        sim.run()
        sim.feed(b"EHLO x\r\nSTARTTLS\r\n")
        sim.run(until=READY)
    for piece in pieces:
        if sim.closed:
            break
        sim.feed(piece)
        sim.tick()
    while sim.tick():
        pass
    assert sim.closed
    assert bait.errors == 0 and bait.inner.errors == 0


# -- real sockets: smtplib through the test pump ---------------------------------


@pytest.fixture(scope="module")
def ip_ctx(state_dir):
    """Verifies the chain; the host name cannot match, as clients dial 127.0.0.1."""
    cert, _ = tls.ensure_self_signed(HOST, state_dir)
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    return ctx


def test_smtplib_starttls_and_smtp_ssl(state_dir, ip_ctx):
    client_ctx = ip_ctx
    bait = wrapped(state_dir, delay=0.002)
    with Pump(bait) as pump, smtplib.SMTP("127.0.0.1", pump.port, timeout=10) as c:
        assert c.ehlo("smtplib.example")[0] == 250
        assert c.has_extn("starttls") and c.has_extn("pipelining")
        assert c.starttls(context=client_ctx)[0] == 220
        c.ehlo("smtplib-tls.example")
        assert not c.has_extn("starttls")
        with pytest.raises(smtplib.SMTPDataError) as e:
            c.sendmail("from@smtplib.example", ["to@example.net"], b"Subject: x\r\n\r\nhi\r\n")
        assert e.value.smtp_code == 451
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login("user", "password")
    bait = wrapped(state_dir, delay=0.002, tls=True)
    with (
        Pump(bait) as pump,
        smtplib.SMTP_SSL("127.0.0.1", pump.port, timeout=10, context=client_ctx) as c,
    ):
        assert c.ehlo("ssl.example")[0] == 250
        assert c.noop()[0] == 250
