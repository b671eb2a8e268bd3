"""The PostgreSQL bait: a server that asks for a password and never lets in.

A client opens with an SSLRequest or GSSENCRequest (answered ``N``: no
encryption, which libpq's default ``sslmode=prefer`` accepts) and its
StartupMessage (user, database, application_name). The server then asks for
a password (``auth``: in clear by default, so the password is recorded; or an
MD5 salt, or a SCRAM-SHA-256 exchange carried through its first round); these
go whole, within a second, so that every client gets to send its password.
The answer, "password authentication failed", drips a byte a tick after its
head (type, length, severity and SQLSTATE): at the default delay, longer than
ten minutes. No login is ever decided in the client's favour.

Client limits (docs/databases.md): libpq's ``connect_timeout`` (psql: none by
default; patator: 10 s; psycopg 3: 130 s) bounds the whole startup, so a
client with one is held to it whatever the pacing (its password recorded
first); none reads with a per-read timeout.

Records ``auth_user``, ``database``, ``application_name`` (and as ``client``),
``auth_pass`` (cleartext, with ``record_credentials``) or ``auth_hash`` (the
MD5 response, which the listener's fixed salt makes crackable offline).

State: ``tarry.baits._drip`` with the phases below; the user name, kept for the
reply that quotes it, costs a client a small object from the StartupMessage on.
"""

from __future__ import annotations

import base64
import os
import struct

from ..bait import BaitModule, Notes, Option, Step, TarpitSpec, sanitise
from ._drip import F_CLOSE, INPUT_MAX, PHASE, Conn, DripBait, keep

PROTOCOL = "postgresql"
DEFAULTS = {"delay": 10.0}
DEFAULT_LISTEN = ("*:5432",)
AUTHS = ("password", "md5", "scram-sha-256")
NAME_MAX = 63  # PostgreSQL's NAMEDATALEN - 1
QUICK = 1.0  # seconds before N or an authentication request, at most

P_START = 0  # waiting for an SSLRequest, GSSENCRequest or StartupMessage
P_PASS = 1  # the authentication request is out: waiting for the answer
P_SASL = 2  # SCRAM: the server-first message is out: waiting for client-final

SSL_REQUEST = 80877103
GSS_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3 = 3


def _check_auth(v: str) -> str | None:
    return None if v in AUTHS else "must be " + ", ".join(f'"{a}"' for a in AUTHS)


OPTIONS = {
    "auth": Option(
        "password",
        str,
        'what the server asks for: "password", "md5" or "scram-sha-256"',
        _check_auth,
    ),
    "record_credentials": Option(
        True, bool, "log the passwords tried (auth_pass), or the MD5 response (auth_hash)"
    ),
}


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def auth_request(code: int, data: bytes = b"") -> bytes:
    return message(b"R", struct.pack("!I", code) + data)


def fatal(code: bytes, text: bytes, routine: bytes = b"auth_failed") -> bytes:
    """An ErrorResponse as PostgreSQL 16 words one."""
    fields = (b"SFATAL", b"VFATAL", b"C" + code, b"M" + text, b"Fauth.c", b"L326", b"R" + routine)
    return message(b"E", b"\x00".join(fields) + b"\x00\x00")


def startup(body: bytes) -> dict[bytes, bytes]:
    """The parameters of a StartupMessage (after its version), bounded by the packet."""
    parts = body.split(b"\x00")
    return {parts[i]: parts[i + 1] for i in range(0, len(parts) - 1, 2) if parts[i]}


def nonce(first: bytes) -> bytes | None:
    """The client nonce of a SCRAM client-first message ``n,,n=,r=...``."""
    for attr in first.split(b","):
        if attr.startswith(b"r=") and 0 < len(attr) - 2 <= 64 and attr[2:].isascii():
            return attr[2:]
    return None


class PostgresqlBait(DripBait):
    """One per listener: the authentication request (and its salt) is built once."""

    protocol = PROTOCOL

    def __init__(self, spec: TarpitSpec) -> None:
        super().__init__(spec)
        self.auth = str(spec.opt("auth"))
        self.no = self.static(b"N")
        self.salt = base64.b64encode(os.urandom(16))
        request = {
            "password": auth_request(3),
            "md5": auth_request(5, os.urandom(4)),
            "scram-sha-256": auth_request(10, b"SCRAM-SHA-256\x00\x00"),
        }[self.auth]
        self.request = self.static(request)
        self.version = self.static(
            fatal(b"0A000", b"unsupported frontend protocol", b"ProcessStartupPacket")
        )

    def open(self, peer: str) -> Step:
        return Step(P_START)  # the client speaks first

    def head(self, reply: bytes) -> int:
        """An error's type, length, severity and SQLSTATE go whole, and drip after;
        every other message (``N``, an authentication request) goes whole."""
        if reply[:1] == b"E":
            return reply.index(b"\x00C") + 8
        return len(reply)

    def first_wait(self, reply: bytes) -> float:
        """The steps before the password go within QUICK: a libpq client with a
        connect_timeout (patator's 10 s) then sends its password, which is
        recorded, before the refusal drips past its deadline."""
        wait = self.wait()
        return wait if reply[:1] == b"E" else min(wait, QUICK)

    def take(self, state: int, c: Conn, data: bytes, age: float) -> Step:
        if not keep(c, data):
            return Step(state, b"", None, None, close=True)  # as PostgreSQL: no reply
        typed = state & PHASE != P_START
        hdr = 5 if typed else 4
        if len(c.buf) < hdr:
            return Step(state, b"", None, c)
        kind = c.buf[:1] if typed else b""
        size = int.from_bytes(c.buf[hdr - 4 : hdr], "big")
        if not 4 <= size <= INPUT_MAX - 1 or (typed and kind != b"p"):
            return Step(state, b"", None, None, close=True)  # a Terminate, or garbage
        if len(c.buf) < size + hdr - 4:
            return Step(state, b"", None, c)
        body, c.buf = c.buf[hdr : size + hdr - 4], c.buf[size + hdr - 4 :]
        if not typed:
            return self.first(state, c, body)
        if state & PHASE == P_SASL or self.auth != "scram-sha-256":
            return self.password(state, c, body)
        return self.sasl(state, c, body)

    def first(self, state: int, c: Conn, body: bytes) -> Step:
        """An SSLRequest, GSSENCRequest, CancelRequest or StartupMessage."""
        code = int.from_bytes(body[:4], "big") if len(body) >= 4 else 0
        if code in (SSL_REQUEST, GSS_REQUEST):
            return self.say(state, c, self.no)
        if code >> 16 != PROTOCOL_3:  # a CancelRequest, protocol 2, or garbage
            if code == CANCEL_REQUEST:
                return Step(state, b"", None, None, close=True)
            return self.say(state | F_CLOSE, c, self.version)
        params = startup(body[4:])
        user = params.get(b"user", b"")[:NAME_MAX]
        c.memo = user
        c.buf = b""  # the client waits for the request: nothing else may follow
        notes: Notes = (("auth_user", sanitise(user)),)
        notes += (("database", sanitise(params.get(b"database", user)[:NAME_MAX])),)
        app = params.get(b"application_name")
        if app:
            notes += (("application_name", sanitise(app[:NAME_MAX])),)
            notes += (("client", sanitise(app[:NAME_MAX])),)
        return self.say((state & ~PHASE) | P_PASS, c, self.request, notes)

    def password(self, state: int, c: Conn, body: bytes) -> Step:
        """The answer to the request (or SCRAM's client-final): refused."""
        notes: Notes = ()
        if self.record and self.auth == "password":
            notes = (("auth_pass", sanitise(body.rstrip(b"\x00"))),)
        elif self.record and self.auth == "md5":
            notes = (("auth_hash", sanitise(body.rstrip(b"\x00"), 40)),)
        return self.say(state | F_CLOSE, c, self.denied(c), notes)

    def sasl(self, state: int, c: Conn, body: bytes) -> Step:
        """SCRAM's SASLInitialResponse: answer with a server-first message."""
        mech, _, rest = body.partition(b"\x00")
        theirs = nonce(rest[4:]) if mech == b"SCRAM-SHA-256" else None
        if theirs is None:
            return self.say(state | F_CLOSE, c, self.denied(c))
        ours = base64.b64encode(os.urandom(18))
        first = b"r=%s%s,s=%s,i=4096" % (theirs, ours, self.salt)
        return self.say((state & ~PHASE) | P_SASL, c, auth_request(11, first))

    @staticmethod
    def denied(c: Conn) -> bytes:
        user = sanitise(c.memo, NAME_MAX).replace('"', "").encode()
        return fatal(b"28P01", b'password authentication failed for user "%s"' % user)


def make(spec: TarpitSpec) -> PostgresqlBait:
    return PostgresqlBait(spec)


BAIT = BaitModule(PROTOCOL, make, OPTIONS, DEFAULTS, default_listen=DEFAULT_LISTEN)
