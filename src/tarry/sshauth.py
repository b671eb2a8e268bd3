"""The SSH ``auth`` mode's transport: a real key exchange, then every login refused late.

Brute-forcers put a timeout on each attempt. A key exchange that never
completes (``kex``) holds one for that timeout once, and many then abandon the
whole run. So for clients that come to log in we complete the exchange
(RFC 4253, curve25519-sha256 per RFC 8731, an ssh-ed25519 host key per
RFC 8709, aes-ctr and hmac-sha2), accept the ``ssh-userauth`` service
(RFC 4252) and refuse every attempt: ``none`` and ``publickey`` at once (clients
then fall back to passwords), a password just inside the client family's wait,
with SSH_MSG_IGNORE in between so that per-read idle timers never fire. Nothing
ever succeeds.

Sans-I/O like every bait: ``AuthConn`` is the client's ``obj`` and the
``AuthServer`` (one per listener) turns bytes and ages into ``Step``s. Every
primitive comes from the ``cryptography`` package (the optional ``tls`` extra);
without it, ``available()`` is False and the SSH bait keeps to ``kex``.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .bait import Step, jittered, sanitise
from .sshwire import MSG_IGNORE, MSG_KEXINIT, WireError, hassh, padding_for, string

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, hmac, serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    HAVE_CRYPTOGRAPHY = True
except ImportError:  # the optional "tls" extra is not installed
    HAVE_CRYPTOGRAPHY = False

MISSING = (
    '"auth" needs the \'cryptography\' package (pip install "tarry[tls]"); '
    'without it use "kex" or "adaptive"'
)
MISSING_ADAPTIVE = (
    'clients that come to log in get "kex", not "auth": the auth mode needs the '
    "'cryptography' package (pip install \"tarry[tls]\")"
)

MSG_DISCONNECT = 1
MSG_UNIMPLEMENTED = 3
MSG_DEBUG = 4
MSG_SERVICE_REQUEST = 5
MSG_SERVICE_ACCEPT = 6
MSG_NEWKEYS = 21
MSG_KEX_ECDH_INIT = 30
MSG_KEX_ECDH_REPLY = 31
MSG_USERAUTH_REQUEST = 50
MSG_USERAUTH_FAILURE = 51

# What we offer, and nothing else: every name here is implemented below.
KEX_ALGOS = ("curve25519-sha256", "curve25519-sha256@libssh.org")
HOSTKEY_ALGOS = ("ssh-ed25519",)
CIPHERS = {"aes128-ctr": 16, "aes256-ctr": 32}  # key bytes
MACS: dict[str, tuple[Any, int]] = {}  # name -> (hash class, key and tag bytes)
if HAVE_CRYPTOGRAPHY:
    MACS = {"hmac-sha2-256": (hashes.SHA256, 32), "hmac-sha2-512": (hashes.SHA512, 64)}
SERVER_LISTS: tuple[str, ...] = (
    ",".join(KEX_ALGOS),
    ",".join(HOSTKEY_ALGOS),
    "aes128-ctr,aes256-ctr",
    "aes128-ctr,aes256-ctr",
    "hmac-sha2-256,hmac-sha2-512",
    "hmac-sha2-256,hmac-sha2-512",
    "none",
    "none",
    "",
    "",
)
METHODS = b"publickey,password"  # what USERAUTH_FAILURE says may continue

PACKET_MAX = 8192  # longest packet_length we buffer for (RFC 4253 §6.1 allows 35000)
IN_MAX = PACKET_MAX + 4 + 64  # one packet and its MAC: all a client may leave pending
OWED_MAX = 8  # unanswered requests a client may pipeline before it is cut off
VALUE_MAX = 64  # bytes of a user name or password kept
CREDS_MAX = 5  # distinct user:password pairs kept per connection
CREDS_NOTE_MAX = 256  # the auth_creds note (JSON) is kept within this
IDENT_MAX = 255
KEX_TIME = 30.0  # seconds a client gets to finish the key exchange before it is held as kex
IGNORE_MIN = 0.5  # never send IGNOREs faster than this
IDLE_SHARE = 0.6  # of a family's per-read idle timer, between two IGNOREs

# phases
IDENT, KEXINIT, ECDH, NEWKEYS, SERVICE, AUTH, GONE = range(7)


def available() -> bool:
    """Whether the ``cryptography`` package is here (the ``tls`` extra)."""
    return HAVE_CRYPTOGRAPHY


class Wait(NamedTuple):
    """How long a client family waits for an authentication answer (docs/ssh-modes.md)."""

    attempt: float | None = None
    """Seconds each attempt waits for its answer, from its request."""
    login: float | None = None
    """Seconds from the connection's start until authentication must be done."""
    idle: float | None = None
    """Seconds a single read waits for any byte (IGNOREs reset it)."""


# --- host key -------------------------------------------------------------------

_HOST_KEY: Any = None
HOST_KEY_FILE = "ssh_host_ed25519_key"


def host_key(state_dir: Path | str | None = None) -> Any:
    """The listener's Ed25519 host key: kept in the state directory (OpenSSH
    format, 0600) so clients see the same key after a restart, like the TLS
    certificate; one per process in memory when the directory is unusable."""
    global _HOST_KEY
    if _HOST_KEY is not None:
        return _HOST_KEY
    key = None
    try:
        if state_dir is None:
            from .tls import default_state_dir

            state_dir = default_state_dir()
        path = Path(state_dir) / HOST_KEY_FILE
        if path.is_file():
            loaded = serialization.load_ssh_private_key(path.read_bytes(), None)
            if isinstance(loaded, Ed25519PrivateKey):
                key = loaded
        if key is None:
            key = Ed25519PrivateKey.generate()
            from .tls import _write_private

            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
            _write_private(path, pem, 0o600)
    except Exception:  # no state directory, unreadable key: a key per process
        key = key or Ed25519PrivateKey.generate()
    _HOST_KEY = key
    return key


def host_key_blob(key: Any) -> bytes:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return string(b"ssh-ed25519") + string(raw)


# --- wire helpers ---------------------------------------------------------------


class Reader:
    """Reads SSH wire types from a payload; any overrun is a WireError."""

    __slots__ = ("at", "data")

    def __init__(self, data: bytes, at: int = 0) -> None:
        self.data = data
        self.at = at

    def byte(self) -> int:
        if self.at >= len(self.data):
            raise WireError("truncated")
        self.at += 1
        return self.data[self.at - 1]

    def string(self) -> bytes:
        if self.at + 4 > len(self.data):
            raise WireError("truncated")
        (n,) = struct.unpack_from(">I", self.data, self.at)
        start = self.at + 4
        if start + n > len(self.data):
            raise WireError("string overruns the packet")
        self.at = start + n
        return self.data[start : self.at]


def mpint(unsigned: bytes) -> bytes:
    """An unsigned big-endian integer as an SSH mpint (RFC 4251 §5)."""
    b = unsigned.lstrip(b"\x00")
    if b and b[0] & 0x80:
        b = b"\x00" + b
    return string(b)


def sha256(*parts: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    for p in parts:
        h.update(p)
    return h.finalize()


def derive(k: bytes, h: bytes, letter: bytes, session_id: bytes, size: int) -> bytes:
    """Key material ``letter`` (A..F) of RFC 4253 §7.2, extended to ``size`` bytes."""
    out = sha256(k, h, letter, session_id)
    while len(out) < size:
        out += sha256(k, h, out)
    return out[:size]


def choose(client: str, server: Sequence[str]) -> str | None:
    """The first of the client's algorithms that we offer (RFC 4253 §7.1)."""
    for name in client.split(","):
        if name in server:
            return name
    return None


def parse_client_kexinit(payload: bytes) -> tuple[list[str], bool]:
    """The ten name-lists and first_kex_packet_follows of a KEXINIT."""
    if len(payload) < 17 or payload[0] != MSG_KEXINIT:
        raise WireError("not a KEXINIT")
    r = Reader(payload, 17)
    lists = [r.string().decode("latin-1") for _ in range(10)]
    follows = r.byte() != 0
    return lists, follows


class Keys:
    """One direction's cipher context, MAC key and algorithm."""

    __slots__ = ("cipher", "mac_alg", "mac_key", "mac_len")

    def __init__(self, cipher: Any, mac_alg: Any, mac_key: bytes, mac_len: int) -> None:
        self.cipher = cipher
        self.mac_alg = mac_alg
        self.mac_key = mac_key
        self.mac_len = mac_len

    def mac(self, seq: int, packet: bytes) -> bytes:
        m = hmac.HMAC(self.mac_key, self.mac_alg())
        m.update(struct.pack(">I", seq))
        m.update(packet)
        return m.finalize()

    def verify(self, seq: int, packet: bytes, tag: bytes) -> None:
        m = hmac.HMAC(self.mac_key, self.mac_alg())
        m.update(struct.pack(">I", seq))
        m.update(packet)
        m.verify(tag)  # raises InvalidSignature


# --- the per-client object ------------------------------------------------------


class AuthConn:
    """One client's transport state: the ``obj`` the engine keeps for it.

    Counted on its server while alive (``__del__`` balances it when the engine
    drops the obj), which is how ``max_auth_clients`` is kept, as TLS keeps
    ``max_tls_clients``.
    """

    __slots__ = (
        "algos",
        "creds",
        "follows",
        "head",
        "i_c",
        "i_s",
        "ident",
        "inb",
        "next_ignore",
        "owed",
        "owed_at",
        "owner",
        "pace",
        "phase",
        "rx",
        "rx_new",
        "seq_in",
        "seq_out",
        "tries",
        "tx",
        "wait",
    )

    def __init__(self, owner: AuthServer, wait: Wait, pace: float) -> None:
        self.owner = owner
        owner.live += 1
        self.wait = wait
        self.pace = pace
        self.phase = IDENT
        self.inb = bytearray()
        self.ident = b""
        self.i_c = b""
        self.i_s = b""
        self.algos: tuple[str, str, str, str] | None = None  # chosen until the ECDH init
        self.follows = False  # skip the client's guessed first KEX packet
        self.head: bytes | None = None  # decrypted first block of a packet arriving
        self.seq_in = 0
        self.seq_out = 0
        self.tx: Keys | None = None
        self.rx: Keys | None = None
        self.rx_new: Keys | None = None  # client-to-server keys, used after its NEWKEYS
        self.owed = 0  # USERAUTH_FAILUREs we still owe
        self.owed_at = 0.0  # when they go out
        self.next_ignore = 0.0
        self.tries = 0
        self.creds: list[tuple[str, str]] = []

    def __del__(self) -> None:
        self.owner.live -= 1


class Stall(Exception):
    """This client cannot (or should not) complete our key exchange: hold it as
    ``kex`` does, with our KEXINIT out and IGNOREs from now on."""


class Close(Exception):
    """Close the connection (bad MAC, oversized or malformed input)."""


Notes = list[tuple[str, str | bytes]]


class AuthServer:
    """The auth mode of one listener: the host key, options and the live count."""

    def __init__(
        self,
        version: bytes,
        max_live: int = 256,
        record: bool = True,
        share: float = 1.0,
        default_wait: float = 300.0,
        margin: float = 2.0,
        jitter: float = 0.2,
        state_dir: Path | str | None = None,
        rand: Callable[[int], bytes] = os.urandom,
        classify: Callable[[bytes], tuple[str, Wait]] | None = None,
    ) -> None:
        self.version = version.rstrip(b"\r\n")  # V_S, without CR LF
        self.max_live = max_live
        self.record = record
        self.share = share
        self.default_wait = default_wait
        self.margin = margin
        self.jitter = jitter
        self.key = host_key(state_dir)
        self.key_blob = host_key_blob(self.key)
        self.rand = rand
        self.classify = classify  # the family and wait of an identification we read
        self.live = 0

    def room(self) -> bool:
        """Whether one more client may enter the auth mode under max_auth_clients."""
        return self.max_live <= 0 or self.live < self.max_live

    # -- starting --

    def start(
        self, wait: Wait, pace: float, ident: bytes | None, age: float
    ) -> tuple[AuthConn, bytes]:
        """A new client object, and our KEXINIT to send (the version line is the
        caller's). ``ident`` is the client's identification if already read."""
        conn = AuthConn(self, wait, pace)
        conn.i_s = (
            bytes([MSG_KEXINIT])
            + self.rand(16)
            + b"".join(string(n.encode()) for n in SERVER_LISTS)
            + b"\x00\x00\x00\x00\x00"
        )
        if ident is not None:
            conn.ident = ident
            conn.phase = KEXINIT
        conn.next_ignore = age + KEX_TIME  # until its NEWKEYS: the key exchange's deadline
        return conn, self._packet(conn, conn.i_s)

    # -- the Bait calls, for a client that has an AuthConn --

    def feed(self, state: int, conn: AuthConn, data: bytes, age: float) -> Step:
        notes: Notes = []
        out = bytearray()
        if conn.phase == GONE:  # it said goodbye: nothing more is read or sent
            return Step(state, b"", None, conn)
        conn.inb += data
        try:
            if conn.phase == IDENT:
                self._read_ident(conn, notes)
            while conn.phase != IDENT and self._one(conn, age, out, notes):
                pass
        except Stall as why:  # obj None, no close: the caller holds it as kex does
            notes.append(("auth", str(why)))
            return Step(state, bytes(out), None, None, notes=tuple(notes))
        except (Close, WireError, InvalidSignature, ValueError) as why:
            notes.append(("auth_error", str(why) or type(why).__name__))
            return Step(state, bytes(out), None, None, close=True, notes=tuple(notes))
        return Step(state, bytes(out), self._delay(conn, age), conn, notes=tuple(notes) or None)

    def tick(self, state: int, conn: AuthConn, age: float) -> Step:
        out = b""
        notes: Notes = []
        if conn.phase == GONE:
            return Step(state, b"", None, conn)
        if conn.phase < SERVICE:
            if age + 0.001 < conn.next_ignore:
                return Step(state, b"", self._delay(conn, age), conn)
            # silent or slow in the key exchange: free the slot, hold it as kex
            return Step(state, b"", None, None, notes=(("auth", "slow-kex"),))
        if conn.owed and age + 0.001 >= conn.owed_at:
            out += self._failures(conn)
            notes.append(("auth_owed", ""))
        elif conn.phase >= SERVICE and age + 0.001 >= conn.next_ignore:
            out += self._packet(conn, self._ignore())
            conn.next_ignore = age + jittered(self._ignore_gap(conn), self.jitter)
        return Step(state, out, self._delay(conn, age), conn, notes=tuple(notes) or None)

    # -- timing --

    def fail_at(self, conn: AuthConn, age: float) -> float:
        """When a password attempt made at ``age`` is refused: ``margin``
        seconds before the client's wait for it runs out (never sooner than
        half that wait), or after ``default_wait`` when the wait is unknown.
        ``share`` scales every wait (tests run them short)."""
        w = conn.wait
        if w.login is not None:
            login = self.share * w.login
            at = self._inside(login)
            if at <= age:  # later attempts in the same login window: halfway to its end
                at = age + max(0.0, (login - age) / 2)
            return at
        if w.attempt is not None:
            return age + self._inside(self.share * w.attempt)
        return age + self.default_wait

    def _inside(self, wait: float) -> float:
        return max(wait - self.margin, wait / 2)

    def _ignore_gap(self, conn: AuthConn) -> float:
        gap = conn.pace
        if conn.wait.idle is not None:
            gap = min(gap, IDLE_SHARE * conn.wait.idle)
        return max(IGNORE_MIN, gap)

    def _delay(self, conn: AuthConn, age: float) -> float | None:
        if conn.phase == GONE:
            return None
        due = conn.next_ignore  # before SERVICE: the key exchange's deadline
        if conn.owed:
            due = min(due, conn.owed_at)
        return max(0.0, due - age)

    # -- input --

    def _read_ident(self, conn: AuthConn, notes: Notes) -> None:
        buf = conn.inb
        end = buf.find(b"\n", 0, IDENT_MAX)
        if end < 0:
            if len(buf) >= IDENT_MAX:
                raise Close("no identification line")
            return
        ident = bytes(buf[:end]).rstrip(b"\r")
        del buf[: end + 1]
        if not ident.startswith(b"SSH-2.0-") and not ident.startswith(b"SSH-1.99-"):
            raise Stall("not-ssh2")
        conn.ident = ident
        conn.phase = KEXINIT
        notes.append(("ssh_id", ident))
        if self.classify is not None:
            family, conn.wait = self.classify(ident)
            notes.append(("family", family))

    def _one(self, conn: AuthConn, age: float, out: bytearray, notes: Notes) -> bool:
        """Read and handle one whole packet from the buffer; False when none is whole."""
        payload = self._read(conn)
        if payload is None:
            if len(conn.inb) > IN_MAX:
                raise Close("input overflow")
            return False
        if not payload:
            raise Close("empty packet")
        kind = payload[0]
        if kind in (MSG_IGNORE, MSG_DEBUG, MSG_UNIMPLEMENTED):
            return True
        if kind == MSG_DISCONNECT:
            # it closes the connection itself: the engine logs "closed" then
            conn.phase = GONE
            conn.inb.clear()
            return False
        if conn.phase == KEXINIT:
            self._kexinit(conn, payload, notes)
        elif conn.phase == ECDH:
            if conn.follows:  # the client guessed wrong: drop its guessed packet
                conn.follows = False
                return True
            if kind != MSG_KEX_ECDH_INIT:
                raise Close(f"expected KEX_ECDH_INIT, got {kind}")
            out += self._ecdh(conn, payload)
            conn.phase = NEWKEYS
        elif conn.phase == NEWKEYS:
            if kind != MSG_NEWKEYS:
                raise Close(f"expected NEWKEYS, got {kind}")
            conn.rx, conn.rx_new = conn.rx_new, None
            conn.phase = SERVICE
            conn.next_ignore = age + jittered(self._ignore_gap(conn), self.jitter)
            notes.append(("auth", "exchanged"))
        elif kind == MSG_SERVICE_REQUEST:
            if Reader(payload, 1).string() != b"ssh-userauth":
                raise Close("service other than ssh-userauth")
            out += self._packet(conn, bytes([MSG_SERVICE_ACCEPT]) + string(b"ssh-userauth"))
            conn.phase = AUTH
        elif kind == MSG_USERAUTH_REQUEST and conn.phase == AUTH:
            out += self._userauth(conn, payload, age, notes)
        elif kind == MSG_KEXINIT:
            raise Close("re-key refused")
        elif kind >= 80:  # connection protocol before authentication
            raise Close(f"message {kind} before authentication")
        else:
            out += self._packet(
                conn, bytes([MSG_UNIMPLEMENTED]) + struct.pack(">I", (conn.seq_in - 1) & 0xFFFFFFFF)
            )
        return True

    def _read(self, conn: AuthConn) -> bytes | None:
        """The next packet's payload, decrypted and its MAC checked; None while incomplete."""
        buf = conn.inb
        rx = conn.rx
        if rx is None:
            if len(buf) < 5:
                return None
            length, pad = struct.unpack_from(">IB", buf)
            if length < 5 or length > PACKET_MAX or (length + 4) % 8:
                raise Close(f"packet length {length}")
            if pad < 4 or pad + 1 > length:
                raise Close(f"padding length {pad}")
            if len(buf) < 4 + length:
                return None
            payload = bytes(buf[5 : 4 + length - pad])
            del buf[: 4 + length]
        else:
            if conn.head is None:
                if len(buf) < 16:
                    return None
                conn.head = rx.cipher.update(bytes(buf[:16]))
                del buf[:16]
            head = conn.head
            length, pad = struct.unpack_from(">IB", head)
            if length < 12 or length > PACKET_MAX or (length + 4) % 16:
                raise Close(f"packet length {length}")  # checked before buffering the body
            if pad < 4 or pad + 1 > length:
                raise Close(f"padding length {pad}")
            rest = length + 4 - 16
            if len(buf) < rest + rx.mac_len:
                return None
            packet = head + rx.cipher.update(bytes(buf[:rest]))
            tag = bytes(buf[rest : rest + rx.mac_len])
            del buf[: rest + rx.mac_len]
            conn.head = None
            try:
                rx.verify(conn.seq_in, packet, tag)
            except InvalidSignature:
                raise Close("bad MAC") from None
            payload = packet[5 : 4 + length - pad]
        conn.seq_in = (conn.seq_in + 1) & 0xFFFFFFFF
        return payload

    # -- key exchange --

    def _kexinit(self, conn: AuthConn, payload: bytes, notes: Notes) -> None:
        if payload[0] != MSG_KEXINIT:
            raise Close(f"first packet is type {payload[0]}")
        lists, follows = parse_client_kexinit(payload)
        digest, raw = hassh(lists)
        notes.append(("hassh", digest))
        notes.append(("hassh_algos", raw[:200]))
        kex = choose(lists[0], KEX_ALGOS)
        hostkey = choose(lists[1], HOSTKEY_ALGOS)
        enc = [choose(lists[i], tuple(CIPHERS)) for i in (2, 3)]
        mac = [choose(lists[i], tuple(MACS)) for i in (4, 5)]
        comp = [choose(lists[i], ("none",)) for i in (6, 7)]
        if None in (kex, hostkey, *enc, *mac, *comp):
            raise Stall("no-common-algorithms")
        if self.is_scan(conn.ident, lists):
            raise Stall("key-scan")
        conn.i_c = payload
        conn.follows = follows and (
            lists[0].split(",")[0] != kex or lists[1].split(",")[0] != hostkey
        )
        conn.algos = (str(enc[0]), str(enc[1]), str(mac[0]), str(mac[1]))
        conn.phase = ECDH

    @staticmethod
    def is_scan(ident: bytes, lists: Sequence[str]) -> bool:
        """An OpenSSH that only wants the host key (ssh-keyscan): every ``ssh``
        since 7.2 offers ``ext-info-c`` and a dozen host key algorithms;
        keyscan offers neither, one key type per connection (at most three
        names). It would leave as soon as it had our key, so it gets ``kex``
        and waits for it instead. Old clients (no ext-info-c) offer many."""
        if b"OpenSSH" not in ident[:16]:
            return False
        return "ext-info-c" not in lists[0].split(",") and len(lists[1].split(",")) <= 3

    def _ecdh(self, conn: AuthConn, payload: bytes) -> bytes:
        q_c = Reader(payload, 1).string()
        if len(q_c) != 32:
            raise Close("bad curve25519 public key")
        eph = X25519PrivateKey.generate()
        q_s = eph.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        shared = eph.exchange(X25519PublicKey.from_public_bytes(q_c))  # ValueError if all-zero
        k = mpint(shared)
        h = sha256(
            string(conn.ident),
            string(self.version),
            string(conn.i_c),
            string(conn.i_s),
            string(self.key_blob),
            string(q_c),
            string(q_s),
            k,
        )
        sig = string(b"ssh-ed25519") + string(self.key.sign(h))
        reply = bytes([MSG_KEX_ECDH_REPLY]) + string(self.key_blob) + string(q_s) + string(sig)
        assert conn.algos is not None
        enc_cs, enc_sc, mac_cs, mac_sc = conn.algos

        def keys(cipher: str, mac: str, iv: bytes, key: bytes, integ: bytes) -> Keys:
            ksize = CIPHERS[cipher]
            alg, msize = MACS[mac]
            ctx = Cipher(
                algorithms.AES(derive(k, h, key, h, ksize)), modes.CTR(derive(k, h, iv, h, 16))
            )
            return Keys(
                ctx.decryptor() if iv == b"A" else ctx.encryptor(),
                alg,
                derive(k, h, integ, h, msize),
                msize,
            )

        conn.rx_new = keys(enc_cs, mac_cs, b"A", b"C", b"E")
        tx = keys(enc_sc, mac_sc, b"B", b"D", b"F")
        out = self._packet(conn, reply) + self._packet(conn, bytes([MSG_NEWKEYS]))
        conn.tx = tx  # from our NEWKEYS on, what we send is encrypted
        conn.algos = None
        conn.i_c = conn.i_s = b""  # only the exchange hash needed them
        return out

    # -- authentication --

    def _userauth(self, conn: AuthConn, payload: bytes, age: float, notes: Notes) -> bytes:
        r = Reader(payload, 1)
        user = r.string()
        r.string()  # service name
        method = r.string()
        notes.append(("auth_user", user[:VALUE_MAX]))
        if method != b"password":
            # none, publickey (query or signed), anything else: refused at once,
            # unless a password answer is still owed (answers go out in order)
            if conn.owed:
                return self._owe(conn, conn.owed_at)
            return self._packet(conn, self._failure())
        r.byte()  # FALSE, or TRUE for a password change
        password = r.string()
        conn.tries += 1
        notes.append(("auth_tries", str(conn.tries)))
        if not conn.owed:  # when its answer became owed: a departure before it teaches
            notes.append(("auth_owed", f"{age:.1f}"))
        if self.record:
            pair = (sanitise(user, VALUE_MAX), sanitise(password[:VALUE_MAX], VALUE_MAX))
            if pair in conn.creds:
                conn.creds.remove(pair)
            conn.creds.append(pair)
            del conn.creds[:-CREDS_MAX]
            notes.append(("auth_pass", password[:VALUE_MAX]))
            notes.append(("auth_creds", creds_note(conn.creds)))
        return self._owe(conn, conn.owed_at if conn.owed else self.fail_at(conn, age))

    def _owe(self, conn: AuthConn, at: float) -> bytes:
        if conn.owed >= OWED_MAX:
            raise Close("too many pipelined requests")
        conn.owed += 1
        conn.owed_at = at
        return b""

    def _failures(self, conn: AuthConn) -> bytes:
        out = b"".join(self._packet(conn, self._failure()) for _ in range(conn.owed))
        conn.owed = 0
        return out

    @staticmethod
    def _failure() -> bytes:
        return bytes([MSG_USERAUTH_FAILURE]) + string(METHODS) + b"\x00"

    def _ignore(self) -> bytes:
        n = 4 + self.rand(1)[0] % 33
        return bytes([MSG_IGNORE]) + string(self.rand(n))

    # -- output --

    def _packet(self, conn: AuthConn, payload: bytes) -> bytes:
        """One binary packet: encrypted and MACed once our NEWKEYS is out."""
        tx = conn.tx
        block = 8 if tx is None else 16
        pad = padding_for(len(payload), block)
        packet = struct.pack(">IB", 1 + len(payload) + pad, pad) + payload + self.rand(pad)
        seq = conn.seq_out
        conn.seq_out = (seq + 1) & 0xFFFFFFFF
        if tx is None:
            return packet
        return tx.cipher.update(packet) + tx.mac(seq, packet)


def creds_note(creds: Sequence[tuple[str, str]]) -> str:
    """The kept user:password pairs as a JSON list of pairs, newest last, dropping
    the oldest until it fits CREDS_NOTE_MAX (values are already sanitised)."""
    pairs = [list(p) for p in creds]
    while True:
        text = json.dumps(pairs, separators=(",", ":"))
        if len(text) <= CREDS_NOTE_MAX or len(pairs) <= 1:
            return text[:CREDS_NOTE_MAX]
        pairs.pop(0)
