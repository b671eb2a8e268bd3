"""TLS around any bait, sans-I/O, on ``ssl.MemoryBIO`` and ``SSLObject``.

asyncio's ``start_tls``/``ssl=`` transports keep a 256 KiB read buffer per
connection; a bare ``SSLObject`` with two memory BIOs costs a few KB once the
handshake is over (OpenSSL releases its record buffers when idle). So the TLS
layer is a bait wrapper: the engine still sees bytes in and a ``Step`` out, and
the wrapper turns ciphertext into the inner bait's plaintext and back.

Two modes: implicit (TLS from the first byte, e.g. SMTP on 465, HTTPS), and
STARTTLS (the inner bait returns ``Step(starttls=True)`` with its last clear
reply; the wrapper then runs the server handshake). Per client the engine's
``obj`` is a ``TlsConn`` holding the SSLObject, its BIOs and the inner bait's
obj; the state word is the inner bait's, passed through untouched. Before
STARTTLS the wrapper is transparent and adds nothing per client.

Hostile input is bounded: a garbage ClientHello fails at once, a half-sent or
dawdling handshake is cut at a deadline, renegotiation is refused, ciphertext
waiting for a complete record is capped, and so is plaintext per call.
"""

from __future__ import annotations

import datetime
import math
import os
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .bait import (
    MAX_COUNT,
    MAX_SECONDS,
    Bait,
    BaitBase,
    Bounds,
    Option,
    RawNotes,
    Step,
    TarpitSpec,
    jittered,
    sanitise,
)
from .paths import state_dir

HANDSHAKE_TIME = 60.0  # seconds a handshake may take, our own stutter not counted
HANDSHAKE_WAIT = 30.0  # seconds the client gets to answer our last handshake piece
HANDSHAKE_IN_MAX = 64 * 1024  # bytes a client may send before its handshake completes
INBOX_MAX = 20 * 1024  # ciphertext held waiting for a record's end (records are <= 16.6 KB)
READ_MAX = 64 * 1024  # plaintext handed to the inner bait per call (<= the ciphertext fed)
HS_PIECE = 128  # handshake bytes per stuttered tick
EARLY = 0.001  # a tick this early still counts as due
NEVER = float("inf")

_HANDSHAKE = 0
_OPEN = 1
_CLOSED = 2


TLS_OPTIONS = {
    "tls": Option(False, bool, "implicit TLS from the first byte (465 for SMTP, 443 for HTTP)"),
    "cert": Option("", str, "PEM certificate chain; empty = a generated self-signed one"),
    "key": Option("", str, "PEM private key; empty = the generated one (or inside cert)"),
    "max_tls_clients": Option(
        1024,
        int,
        "most clients held inside TLS at once (each costs its TLS state); 0 = no cap",
        bounds=Bounds(0, MAX_COUNT),
    ),
    "tls_stutter": Option(
        False,
        (bool, int, float),
        "drip the TLS handshake: true = at the listener's delay, or seconds between pieces",
        bounds=Bounds(0, MAX_SECONDS, unit=" seconds"),
    ),
}
"""The ``[[tarpit]]`` keys of any protocol that can run under TLS."""

STATEFUL_TLS = ("tls",)


def check_tls(opts: dict[str, Any]) -> str | None:
    """Checks across the TLS keys, after each key's own."""
    if opts.get("key") and not opts.get("cert"):
        return "key: set without cert (set both, or cert alone when it holds the key too)"
    return None


class CertError(Exception):
    """A certificate or key that cannot be used: one line that starts with the
    config key (``cert:`` or ``key:``) and names the file and the problem."""


class TlsUnavailable(CertError):
    """No certificate is configured and none can be generated here."""


# -- certificates ------------------------------------------------------------


def default_state_dir() -> Path:
    """The state directory, made if missing; a certificate must not land anywhere else."""
    path = state_dir()
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise CertError(
            f"cert: not set, and the state directory {path} cannot be made: {exc.strerror}"
        ) from None
    return path


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write atomically, so two starting daemons never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def ensure_self_signed(hostname: str, state_dir: Path | str) -> tuple[Path, Path]:
    """The generated certificate and key for ``hostname``, made on first use and
    kept in ``state_dir`` so that clients see the same certificate after a restart."""
    d = Path(state_dir)
    cert = d / f"selfsigned-{hostname}.crt"
    key = d / f"selfsigned-{hostname}.key"
    if cert.is_file() and key.is_file():
        return cert, key
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise TlsUnavailable(
            "cert: not set, and generating a self-signed certificate needs the "
            "'cryptography' package (pip install 'tarry[tls]')"
        ) from None
    # P-256: universally supported, and its handshakes cost a tarpit far less CPU than RSA.
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    key_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_private(key, key_pem, 0o600)
        _write_private(cert, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise TlsUnavailable(
            f"cert: not set, and a generated certificate cannot be stored in {d}: {exc.strerror}"
        ) from None
    return cert, key


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError as exc:
        raise CertError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None


def _no_password() -> bytes:
    raise CertError("encrypted")


def server_context(cert: str, key: str = "") -> ssl.SSLContext:
    """A lean server context for ``cert`` (and ``key``, or the key inside ``cert``)."""
    if not cert:
        raise CertError(f"cert: not set, but key is ({key}); set both, or neither")
    cert_pem = _read(cert, "cert")
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise CertError(f"cert: {cert} holds no PEM certificate")
    key_pem = _read(key, "key") if key else cert_pem
    if b"PRIVATE KEY-----" not in key_pem:
        if key:
            raise CertError(f"key: {key} holds no PEM private key")
        raise CertError(f"key: not set, and {cert} holds no PEM private key either")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.num_tickets = 0  # no TLS 1.3 tickets: nothing to resume, fewer bytes and cycles
    try:
        ctx.load_cert_chain(cert, key or None, password=_no_password)
    except CertError:
        raise CertError(f"key: {key or cert} is encrypted; give an unencrypted key") from None
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in str(reason).upper():
            raise CertError(
                f"key: {key or cert} does not match the certificate in {cert}"
            ) from None
        raise CertError(f"cert: cannot load {cert} with key {key or cert}: {reason}") from None
    return ctx


def context_for(spec: TarpitSpec, state_dir: Path | str | None = None) -> ssl.SSLContext:
    """The server context for a listener: its cert/key, or a generated self-signed pair."""
    cert = str(spec.options.get("cert") or "")
    key = str(spec.options.get("key") or "")
    if not cert and not key:
        host = str(spec.options.get("hostname") or "localhost")
        made = ensure_self_signed(host, state_dir or default_state_dir())
        cert, key = str(made[0]), str(made[1])
    return server_context(cert, key)


# -- the wrapper ---------------------------------------------------------------


class TlsConn:
    """One client's TLS session and the inner bait's obj; small apart from the SSLObject."""

    __slots__ = (
        "deadline",
        "got",
        "inb",
        "inner",
        "inner_due",
        "outb",
        "own_due",
        "owner",
        "peer",
        "pending",
        "phase",
        "ssl",
    )

    def __init__(self, owner: TlsBait, inner: Any, peer: str | None, age: float) -> None:
        self.owner = owner
        owner.live += 1  # first, so that __del__ balances even if wrap_bio fails
        self.inb = ssl.MemoryBIO()
        self.outb = ssl.MemoryBIO()
        self.ssl = owner.ctx.wrap_bio(self.inb, self.outb, server_side=True)
        self.inner = inner
        self.peer = peer  # implicit mode: kept until the inner bait is opened
        self.phase = _HANDSHAKE
        self.deadline = age + HANDSHAKE_TIME
        self.own_due = self.deadline  # the wrapper's own timer: a drip or the deadline
        self.inner_due = NEVER  # when the inner bait asked to be ticked
        self.pending: bytes | None = None  # stuttered handshake output not yet sent
        self.got = 0  # bytes received during the handshake

    def __del__(self) -> None:
        self.owner.live -= 1


def is_tls(obj: Any) -> bool:
    """Whether a client's obj is a TLS session (for the engine's counts)."""
    return isinstance(obj, TlsConn)


def _merge(a: RawNotes | None, b: RawNotes | None) -> RawNotes | None:
    if not a:
        return b
    if not b:
        return a
    return a + b


class TlsBait(BaitBase):
    """Wraps a bait; one per listener, like the bait itself."""

    def __init__(self, inner: Bait, ctx: ssl.SSLContext, implicit: bool, spec: TarpitSpec) -> None:
        self.inner = inner
        self.protocol = inner.protocol
        self.ctx = ctx
        self.implicit = implicit
        self.jitter = float(spec.jitter)
        stutter = spec.options.get("tls_stutter", False)
        if stutter is True:
            stutter = spec.delay
        self.stutter = float(stutter or 0.0)
        self.max_live = int(spec.options.get("max_tls_clients", 0) or 0)
        self.live = 0  # TlsConn objects alive (each one decrements on release)
        self.errors = 0  # bugs caught by the safety net; tests require 0
        self.shortest = min(inner.shortest, self.stutter or math.inf)
        inner.tls_attached(implicit, self.room)

    def room(self) -> bool:
        """Whether one more client may enter TLS under max_tls_clients."""
        return self.max_live <= 0 or self.live < self.max_live

    # -- the engine's calls ------------------------------------------------

    def open(self, peer: str) -> Step:
        if not self.implicit:
            return self.inner.open(peer)
        if not self.room():
            return Step(0, b"", None, None, close=True, notes=(("tls", "refused"),))
        conn = TlsConn(self, None, peer, 0.0)
        return Step(0, b"", conn.own_due, conn)

    def feed(self, state: int, obj: Any, data: bytes, age: float) -> Step:
        if not isinstance(obj, TlsConn):
            return self._maybe_start(self.inner.feed(state, obj, data, age), age)
        try:
            return self._feed(state, obj, data, age)
        except Exception:
            return self._broken(state, obj)

    def tick(self, state: int, obj: Any, age: float) -> Step:
        if not isinstance(obj, TlsConn):
            return self._maybe_start(self.inner.tick(state, obj, age), age)
        try:
            return self._tick(state, obj, age)
        except Exception:
            return self._broken(state, obj)

    # -- internals -----------------------------------------------------------

    def _broken(self, state: int, conn: TlsConn) -> Step:
        self.errors += 1
        conn.phase = _CLOSED
        return Step(state, b"", None, None, close=True, notes=(("tls_error", "internal"),))

    def _maybe_start(self, s: Step, age: float) -> Step:
        """Pass a clear step through; on starttls, begin the server handshake."""
        if not s.starttls or s.close:
            return s._replace(starttls=False) if s.starttls else s
        conn = TlsConn(self, s.obj, None, age)
        if s.delay is not None:
            conn.inner_due = age + s.delay
        return Step(s.state, s.out, conn.own_due - age, conn, notes=s.notes)

    def _delay(self, conn: TlsConn, age: float) -> float | None:
        due = conn.own_due
        if conn.phase == _OPEN and conn.inner_due < due:
            due = conn.inner_due
        return None if due == NEVER else max(0.0, due - age)

    def _fail(self, state: int, conn: TlsConn, reason: str, out: bytes = b"") -> Step:
        conn.phase = _CLOSED
        notes = (("tls", "failed"), ("tls_error", sanitise(reason, 64)))
        return Step(state, out, None, None, close=True, notes=notes)

    def _feed(self, state: int, conn: TlsConn, data: bytes, age: float) -> Step:
        if conn.phase == _CLOSED or not data:
            return Step(state, b"", None, conn)
        if conn.phase == _HANDSHAKE:
            conn.got += len(data)
            if conn.got > HANDSHAKE_IN_MAX:
                return self._fail(state, conn, "handshake-too-big")
            conn.inb.write(data)
            return self._handshake(state, conn, age)
        conn.inb.write(data)
        return self._read(state, conn, age, b"", None)

    def _handshake(self, state: int, conn: TlsConn, age: float) -> Step:
        try:
            conn.ssl.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        except ssl.SSLError as exc:
            return self._fail(state, conn, str(exc.reason or "handshake"), conn.outb.read())
        out = conn.outb.read()
        if not done:
            if out and self.stutter > 0:
                conn.pending = (conn.pending or b"") + out
                if conn.own_due == conn.deadline:  # not dripping yet: start now
                    conn.own_due = age + jittered(self.stutter, self.jitter)
                return Step(state, b"", self._delay(conn, age), conn)
            if out:
                conn.deadline = max(conn.deadline, age + HANDSHAKE_WAIT)
            if conn.pending is None:
                conn.own_due = conn.deadline
            return Step(state, out, self._delay(conn, age), conn)
        # Established. Whatever handshake output is still queued goes now.
        if conn.pending:
            out = conn.pending + out
        conn.pending = None
        conn.phase = _OPEN
        conn.own_due = NEVER
        cipher = conn.ssl.cipher()
        notes: RawNotes = (
            ("tls", "yes"),
            ("tls_version", str(conn.ssl.version())),
            ("tls_cipher", cipher[0] if cipher else ""),
        )
        if conn.peer is not None:  # implicit TLS: the inner dialogue starts now
            peer, conn.peer = conn.peer, None
            s = self.inner.open(peer)
            step = self._absorb(s, conn, age, out, notes, ticked=False)
            if step.close:
                return step
            return self._read(step.state, conn, age, step.out, step.notes)
        return self._read(state, conn, age, out, notes)

    def _read(
        self, state: int, conn: TlsConn, age: float, out: bytes, notes: RawNotes | None
    ) -> Step:
        """Decrypt what the client sent and hand the plaintext to the inner bait."""
        chunks: list[bytes] = []
        size = 0
        eof = False
        try:
            while size < READ_MAX:
                chunk = conn.ssl.read(READ_MAX - size)
                if not chunk:
                    eof = True
                    break
                chunks.append(chunk)
                size += len(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            eof = True
        except ssl.SSLError as exc:
            return self._fail(state, conn, str(exc.reason or "read"), out + conn.outb.read())
        out += conn.outb.read()  # alerts, key updates, refused renegotiation
        if conn.inb.pending > INBOX_MAX:
            return self._fail(state, conn, "record-too-big", out)
        if chunks:
            s = self.inner.feed(state, conn.inner, b"".join(chunks), age)
            step = self._absorb(s, conn, age, out, notes, ticked=False)
            if step.close or not eof:
                return step
            state, out, notes = step.state, step.out, step.notes
        if eof:
            conn.phase = _CLOSED
            return Step(state, out, None, None, close=True, notes=notes)
        return Step(state, out, self._delay(conn, age), conn, notes=notes)

    def _absorb(
        self, s: Step, conn: TlsConn, age: float, out: bytes, notes: RawNotes | None, ticked: bool
    ) -> Step:
        """Take an inner step: keep its obj and timer, encrypt its output."""
        conn.inner = s.obj
        if s.delay is not None:
            conn.inner_due = age + s.delay
        elif ticked:
            conn.inner_due = NEVER
        notes = _merge(notes, s.notes)
        if s.out:
            conn.ssl.write(s.out)
            out += conn.outb.read()
        if s.close:
            try:
                conn.ssl.unwrap()  # close_notify
            except ssl.SSLError:
                pass
            out += conn.outb.read()
            conn.phase = _CLOSED
            return Step(s.state, out, None, None, close=True, notes=notes)
        return Step(s.state, out, self._delay(conn, age), conn, notes=notes)

    def _tick(self, state: int, conn: TlsConn, age: float) -> Step:
        if conn.phase == _HANDSHAKE:
            if conn.pending and age + EARLY >= conn.own_due:
                piece, rest = conn.pending[:HS_PIECE], conn.pending[HS_PIECE:]
                conn.pending = rest or None
                if rest:
                    conn.own_due = age + jittered(self.stutter, self.jitter)
                else:
                    conn.deadline = max(conn.deadline, age + HANDSHAKE_WAIT)
                    conn.own_due = conn.deadline
                return Step(state, piece, self._delay(conn, age), conn)
            if age + EARLY >= conn.deadline:
                return self._fail(state, conn, "handshake-timeout")
            return Step(state, b"", self._delay(conn, age), conn)
        if conn.phase == _OPEN and age + EARLY >= conn.inner_due:
            conn.inner_due = NEVER
            s = self.inner.tick(state, conn.inner, age)
            return self._absorb(s, conn, age, b"", None, ticked=True)
        return Step(state, b"", self._delay(conn, age), conn)


def wrap(
    spec: TarpitSpec,
    bait: Bait,
    state_dir: Path | str | None = None,
    warn: Callable[[str], None] | None = None,
) -> Bait:
    """``bait`` under TLS as the spec asks (``tls`` implicit, or ``starttls``), else as is.

    Raises CertError (one line, naming the file) when a certificate is unusable.
    Only STARTTLS without a configured certificate degrades instead: when none
    can be generated here (no ``cryptography``), the bait runs without offering
    it, and ``warn`` says why.
    """
    implicit = bool(spec.options.get("tls", False))
    starttls = bool(spec.options.get("starttls", False))
    if not implicit and not starttls:
        return bait
    try:
        ctx = context_for(spec, state_dir)
    except TlsUnavailable as exc:
        if implicit:
            raise
        if warn is not None:
            warn(f"STARTTLS is not offered: {exc}")
        return bait
    return TlsBait(bait, ctx, implicit, spec)
