"""The MySQL bait: a MySQL 8.0 server whose greeting and login drip.

The server speaks first, with its Handshake v10 packet (version, capability
flags, a scramble, the auth plugin). Here the packet header and version string
go whole, so a version scanner reads a plausible server at once, and the rest
drips a byte a tick (about 80 bytes: minutes). The client then sends its
HandshakeResponse41 (user, database, connect attributes), and the login never
succeeds: with ``record_credentials`` the server asks the client to switch to
``mysql_clear_password`` (the client then sends its password in clear), and
every login ends in error 1045, "Access denied", each packet dripped.

Client limits (docs/databases.md): libmariadb (the mariadb client, MySQLdb,
patator) applies ``connect_timeout`` to each read of the handshake (patator:
10 s; the mariadb client: none), PyMySQL only to the TCP connect. A byte every
delay (5 s) resets them; the greeting's head goes within a second.

Records ``auth_user``, ``database``, ``auth_pass`` (the cleartext password,
with ``record_credentials``), ``client`` (the program or library name) and
``client_attrs`` (the connect attributes, sanitised and bounded).

State: ``tarry.baits._drip`` with the phases below. A client held by the
greeting costs no object: the greeting is one shared packet per listener.
"""

from __future__ import annotations

import random
import struct

from ..bait import BaitModule, Notes, Option, Step, TarpitSpec, sanitise
from ._drip import F_CLOSE, INPUT_MAX, PHASE, Conn, DripBait, keep

PROTOCOL = "mysql"
DEFAULTS = {"delay": 5.0}
DEFAULT_LISTEN = ("*:3306",)
GREET_FIRST = 1.0  # seconds before the greeting's head, as a busy server would take
ATTRS_NOTED = 200  # longest client_attrs note, before sanitising
DOCKER_HOST = "172.17.0.1"  # as an exposed MySQL in Docker sees every client

P_GREET = 0  # the greeting drips
P_LOGIN = 1  # waiting for the HandshakeResponse
P_SWITCH = 2  # the auth switch was sent: waiting for the password

# capability flags (MySQL's include/mysql_com.h)
CLIENT_CONNECT_WITH_DB = 0x8
CLIENT_COMPRESS = 0x20
CLIENT_PROTOCOL_41 = 0x200
CLIENT_SSL = 0x800
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_CONNECT_ATTRS = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC = 1 << 21
# MySQL 8.0's own flags (bits 0-24) without SSL (no certificate configured)
# and without compression (what follows the login would be compressed)
CAPABILITIES = 0x01FFFFFF & ~(CLIENT_SSL | CLIENT_COMPRESS)
CHARSET = 0xFF  # utf8mb4_0900_ai_ci, 8.0's default
STATUS = 0x0002  # SERVER_STATUS_AUTOCOMMIT


def _check_version(v: str) -> str | None:
    ok = 0 < len(v) <= 60 and all(c.isascii() and c.isprintable() for c in v)
    return None if ok else "must be printable ASCII, 1 to 60 characters"


OPTIONS = {
    "version": Option("8.0.36", str, "server version in the greeting", _check_version),
    "record_credentials": Option(
        True, bool, "ask for the password in clear (mysql_clear_password) and log it"
    ),
}


def packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def greeting(version: bytes, thread: int, scramble: bytes) -> bytes:
    payload = b"".join(
        (
            b"\x0a" + version + b"\x00",
            struct.pack("<I", thread),
            scramble[:8] + b"\x00",
            struct.pack("<HBHH", CAPABILITIES & 0xFFFF, CHARSET, STATUS, CAPABILITIES >> 16),
            bytes([len(scramble) + 1]) + bytes(10),
            scramble[8:] + b"\x00",
            b"mysql_native_password\x00",
        )
    )
    return packet(0, payload)


def error(seq: int, code: int, state: bytes, message: bytes) -> bytes:
    return packet(seq, b"\xff" + struct.pack("<H", code) + b"#" + state + message)


def _cstr(p: bytes, pos: int) -> tuple[bytes, int]:
    end = p.index(b"\x00", pos)
    return p[pos:end], end + 1


def _lenenc(p: bytes, pos: int) -> tuple[int, int]:
    first = p[pos]
    if first < 0xFB:
        return first, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if size is None or pos + 1 + size > len(p):
        raise ValueError("bad length")
    return int.from_bytes(p[pos + 1 : pos + 1 + size], "little"), pos + 1 + size


def _lenstr(p: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = _lenenc(p, pos)
    if pos + n > len(p):
        raise ValueError("short string")
    return p[pos : pos + n], pos + n


def login(p: bytes) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    """A HandshakeResponse41: (client flags, user, database, connect attributes).
    ValueError or IndexError when malformed; the packet is at most INPUT_MAX."""
    flags = int.from_bytes(p[:4], "little")
    if not flags & CLIENT_PROTOCOL_41:  # the old 4.0 response: flags(2) max(3) user
        user, _ = _cstr(p, 5)
        return flags, user, b"", []
    user, pos = _cstr(p, 32)
    if flags & CLIENT_PLUGIN_AUTH_LENENC:
        _, pos = _lenstr(p, pos)
    elif flags & CLIENT_SECURE_CONNECTION:
        pos += 1 + p[pos]
    else:
        _, pos = _cstr(p, pos)
    db = b""
    if flags & CLIENT_CONNECT_WITH_DB and pos < len(p):
        db, pos = _cstr(p, pos)
    if flags & CLIENT_PLUGIN_AUTH and pos < len(p):
        _, pos = _cstr(p, pos)
    attrs: list[tuple[bytes, bytes]] = []
    if flags & CLIENT_CONNECT_ATTRS and pos < len(p):
        n, pos = _lenenc(p, pos)
        end = min(len(p), pos + n)
        while pos < end:
            key, pos = _lenstr(p, pos)
            value, pos = _lenstr(p, pos)
            attrs.append((key, value))
    return flags, user, db, attrs


def client_notes(attrs: list[tuple[bytes, bytes]]) -> Notes:
    """What the connect attributes say about the client software."""
    found = dict(attrs)
    name = found.get(b"program_name") or found.get(b"_client_name")
    notes: Notes = ()
    if name:
        version = found.get(b"_client_version", b"")
        notes += (("client", sanitise(name + (b"/" + version if version else b""), 64)),)
    if attrs:
        text = b",".join(k + b"=" + v for k, v in attrs)[:ATTRS_NOTED]
        notes += (("client_attrs", sanitise(text)),)
    return notes


class MysqlBait(DripBait):
    """One per listener: the greeting (with its scramble) is built once."""

    protocol = PROTOCOL

    def __init__(self, spec: TarpitSpec) -> None:
        super().__init__(spec)
        rand = random.SystemRandom()
        self.version = str(spec.opt("version")).encode()
        scramble = bytes(rand.randrange(0x21, 0x7F) for _ in range(20))
        self.greeting = self.static(greeting(self.version, rand.randrange(8, 5000), scramble))
        self.switch = self.static(packet(2, b"\xfemysql_clear_password\x00"))
        self.bad = self.static(error(2, 1043, b"08S01", b"Bad handshake"))

    def open(self, peer: str) -> Step:
        return self.say(P_GREET, Conn(), self.greeting)

    def first_wait(self, reply: bytes) -> float:
        wait = self.wait()
        return min(wait, GREET_FIRST) if reply is self.replies[self.greeting] else wait

    def head(self, reply: bytes) -> int:
        """A packet's header and first byte go whole; the greeting's version too."""
        if reply[4:5] == b"\x0a":
            return reply.index(b"\x00", 5) + 1
        if reply[4:5] == b"\xff":
            return 4 + 3 + 6  # header, 0xff, the error code and its SQL state
        return 5

    def after(self, state: int, c: Conn, out: bytes, age: float) -> Step:
        if state & PHASE == P_GREET:
            state = (state & ~PHASE) | P_LOGIN
        return super().after(state, c, out, age)

    def take(self, state: int, c: Conn, data: bytes, age: float) -> Step:
        if not keep(c, data):
            return self.say(state | F_CLOSE, c, self.bad)
        if len(c.buf) < 4:
            return Step(state, b"", None, c)
        size = int.from_bytes(c.buf[:3], "little")
        if size + 4 > INPUT_MAX:
            c.buf = b""
            return self.say(state | F_CLOSE, c, self.bad)
        if len(c.buf) < size + 4:
            return Step(state, b"", None, c)
        payload, c.buf = c.buf[4 : size + 4], b""  # the client waits: nothing else may follow
        if state & PHASE == P_SWITCH:
            notes: Notes = (("auth_pass", sanitise(payload.rstrip(b"\x00"))),)
            return self.say(state | F_CLOSE, c, self.denied(4, c), notes)
        try:
            flags, user, db, attrs = login(payload)
        except (ValueError, IndexError):
            return self.say(state | F_CLOSE, c, self.bad)
        notes = (("auth_user", sanitise(user)),)
        if db:
            notes += (("database", sanitise(db)),)
        notes += client_notes(attrs)
        c.memo = user[:64]  # kept for the denial
        if self.record and flags & CLIENT_PLUGIN_AUTH:
            return self.say((state & ~PHASE) | P_SWITCH, c, self.switch, notes)
        return self.say(state | F_CLOSE, c, self.denied(2, c), notes)

    @staticmethod
    def denied(seq: int, c: Conn) -> bytes:
        user = sanitise(c.memo, 64).encode()
        text = b"Access denied for user '%s'@'%s' (using password: YES)" % (
            user,
            DOCKER_HOST.encode(),
        )
        return error(seq, 1045, b"28000", text)


def make(spec: TarpitSpec) -> MysqlBait:
    return MysqlBait(spec)


BAIT = BaitModule(PROTOCOL, make, OPTIONS, DEFAULTS, default_listen=DEFAULT_LISTEN)
