"""The SSH bait, in four modes (the ``mode`` key of an SSH ``[[tarpit]]``).

- ``banner`` (default): endless RFC 4253 §4.2 "other lines of data" before a
  version string that never comes: the endlessh behaviour.
- ``drip``: the same kind of lines, one byte per tick, so that clients which
  cap lines or bytes rather than time are held far longer.
- ``kex``: a believable version string at once (ending the client's banner
  timeout), a valid server KEXINIT dripped out, then SSH_MSG_IGNORE packets
  forever; the key exchange never completes.
- ``auth``: a real key exchange, then every login attempt refused just inside
  the client's wait (tarry.sshauth); past ``max_auth_clients``, ``kex``.
- ``adaptive``: one of the above per client, chosen from its identification
  string and from how long its address stayed on earlier visits.

docs/ssh-modes.md gives the client limits these modes are built against.

State word, ``banner`` mode (BannerBait): bit 0 set once the client's
identification line is recorded (or given up on). The other modes (SshBait):

    bit  0      IDENT_DONE    the client's identification line is read
    bits 1-2    mode          0 banner, 1 drip, 2 kex (3: adaptive, no advice)
    bit  3      UNDECIDED     adaptive, still waiting for the identification
    bit  4      KEXIN_DONE    the client's KEXINIT is read (or given up on)
    bit  5      KEXOUT_DONE   our KEXINIT is out; IGNORE packets from now on
    bit  6      QUICK         our KEXINIT must be out within a client's limit
    bits 7-14   pace          seconds between ticks in tenths; 0 = ``delay``
    bits 15-31  pos           offset into the drip text, or into our KEXINIT
                              (adaptive, undecided: bit 15 the address showed a
                              deadline, bits 16-23 its seconds)

``obj`` is None except while a client's identification line or its first
binary packet arrives in pieces; both are bounded (255 and KEXINIT_LIMIT bytes).
An ``auth`` client's obj is its ``tarry.sshauth.AuthConn`` (keys, sequence
numbers, a bounded input buffer); its state word keeps mode ``kex``, the mode
it falls back to.
"""

from __future__ import annotations

import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from ..bait import (
    MAX_SECONDS,
    BaitBase,
    BaitModule,
    Bounds,
    LearningSource,
    LearnRow,
    Option,
    Step,
    TarpitSpec,
    jittered,
    positive_min,
)
from ..events import CLOSE, BaseSink, Event, Sink
from ..sshauth import (
    KEX_TIME,
    MISSING,
    MISSING_ADAPTIVE,
    AuthConn,
    AuthServer,
    Wait,
    available,
)
from ..sshwire import (
    MSG_KEXINIT,
    OPENSSH_92_SERVER,
    KexinitTemplate,
    WireError,
    frame,
    hassh,
    ignore_payload,
    parse_kexinit,
    read_packet,
)

PROTOCOL = "ssh"
DEFAULTS = {"delay": 10.0}

IDENT_MAX = 255  # RFC 4253 §4.2: the identification line is at most 255 bytes
_IDENT_DONE = 1

BANNER, DRIP, KEX, NO_ADVICE = 0, 1, 2, 3
MODES = {"banner": BANNER, "drip": DRIP, "kex": KEX}
MODE_NAMES = ("banner", "drip", "kex", "none")

IDENT_DONE = 1 << 0
MODE_SHIFT = 1
MODE_MASK = 3 << MODE_SHIFT
UNDECIDED = 1 << 3
KEXIN_DONE = 1 << 4
KEXOUT_DONE = 1 << 5
QUICK = 1 << 6
PACE_SHIFT = 7
PACE_MASK = 0xFF << PACE_SHIFT
POS_SHIFT = 15
LOW_MASK = (1 << POS_SHIFT) - 1
ADVISED_AUTH = 1 << POS_SHIFT  # adaptive, undecided: the address showed a deadline
WAIT_SHIFT = POS_SHIFT + 1  # ... of this many seconds (8 bits)

KEXINIT_LIMIT = 8192  # longest client packet we wait for; real KEXINITs are 0.5-2 KB
KEX_PIECES = 16  # our KEXINIT goes out in about this many ticks
HASSH_RAW_MAX = 200  # the raw HASSH string is logged cut to this
MODE_JITTER = 0.2  # drip/kex/adaptive never tick in lockstep, even with jitter = 0
DEFAULT_VERSION = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u1"


LINE_LENGTH = Bounds(3, 255)


def _check_first_delay(v: float) -> str | None:
    ok = v == -1 or v >= 0
    return None if ok else f"must be -1 (one delay) or from 0 to {MAX_SECONDS:g} seconds"


def _check_mode(v: str) -> str | None:
    ok = ("banner", "drip", "kex", "auth", "adaptive")
    if v == "auth" and not available():
        return MISSING
    return None if v in ok else "must be one of " + ", ".join(f'"{m}"' for m in ok)


def _check_version(v: str) -> str | None:
    if not (v.startswith("SSH-2.0-") and len(v) > 8):
        return 'must start with "SSH-2.0-" and name the software'
    if len(v) > IDENT_MAX - 2 or any(not " " <= c <= "~" for c in v):
        return "must be printable ASCII, at most 253 characters"
    return None


def _seconds(high: float) -> Bounds:
    return Bounds(0, high, unit=" seconds")


OPTIONS = {
    "line_length": Option(32, int, "longest line sent, CRLF included (3..255)", bounds=LINE_LENGTH),
    "first_delay": Option(
        -1.0,
        (int, float),
        "seconds before the first line; -1 means one delay",
        _check_first_delay,
        Bounds(-1, MAX_SECONDS, unit=" seconds"),
    ),
    "mode": Option("banner", str, '"banner", "drip", "kex", "auth" or "adaptive"', _check_mode),
    "version": Option(
        DEFAULT_VERSION, str, "the version string the kex mode answers with", _check_version
    ),
    "drip_line_length": Option(
        255, int, "longest drip line, CRLF included (3..255)", bounds=LINE_LENGTH
    ),
    "kexinit_time": Option(
        10.0,
        (int, float),
        "seconds over which our KEXINIT is dripped (kex)",
        bounds=_seconds(600),
    ),
    "min_rate": Option(
        0.0,
        (int, float),
        "send at least this many bytes per second (0 = off)",
        bounds=Bounds(0, 4096, unit=" bytes per second"),
    ),
    "ident_wait": Option(
        1.0,
        (int, float),
        "adaptive: seconds to wait for the client's version",
        bounds=_seconds(30),
    ),
    "max_auth_clients": Option(
        256,
        int,
        "auth: most clients past the key exchange at once (0 = no cap)",
        bounds=Bounds(0, 1 << 20),
    ),
    "record_credentials": Option(
        True, bool, "auth: log the passwords tried (auth_pass, auth_creds), not only users"
    ),
    "auth_share": Option(
        1.0,
        (int, float),
        "auth: scale every client family's wait by this (1 = as documented)",
        bounds=Bounds(0, 1, above=True),
    ),
    "auth_margin": Option(
        2.0,
        (int, float),
        "auth: refuse a password this many seconds before the client's wait runs out",
        bounds=_seconds(60),
    ),
    "auth_wait": Option(
        300.0,
        (int, float),
        "auth: seconds before refusing a password when the client's wait is unknown",
        bounds=_seconds(3600),
    ),
}


# maps any byte onto the 95 printable characters from 0x20 to 0x7e
_PRINTABLE = bytes(0x20 + b % 95 for b in range(256))


class LineSource:
    """Random printable lines cut from a pool that is refreshed now and then.

    Cutting from a pool keeps the per-line cost to one slice, while lengths and
    content still vary so that no fixed pattern matches them.
    """

    POOL = 1 << 14
    REFRESH = 2048  # lines between pool refreshes

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self._left = 0
        self._pool = b""
        self._bits = random.Random(os.urandom(16)).getrandbits

    def _refill(self) -> None:
        self._pool = os.urandom(self.POOL).translate(_PRINTABLE)
        self._left = self.REFRESH

    def line(self) -> bytes:
        if self._left <= 0:
            self._refill()
        self._left -= 1
        bits = self._bits(40)  # one call: this runs for every line sent
        n = bits % (self.max_len - 2) + 1
        at = (bits >> 8) % (self.POOL - n)
        body = self._pool[at : at + n]
        if body[:4] == b"SSH-":
            body = b"X" + body[1:]
        return body + b"\r\n"

    def at_least(self, n: int) -> bytes:
        """Whole lines adding up to ``n`` bytes or more (for ``min_rate``)."""
        out = self.line()
        while len(out) < n:
            out += self.line()
        return out


UNIT_MAX = 16384  # min_rate never makes one send larger than this


def _need(min_rate: float, seconds: float) -> int:
    """Bytes to send now so that the coming ``seconds`` average ``min_rate``
    (bounded: the engine keeps one send for a client that does not read)."""
    return min(UNIT_MAX, math.ceil(min_rate * seconds)) if min_rate > 0 else 0


class BannerBait(BaitBase):
    """endlessh: one random line every delay, never a version string."""

    protocol = PROTOCOL

    def __init__(self, spec: TarpitSpec) -> None:
        self.delay = spec.delay
        self.jitter = spec.jitter
        first = float(spec.opt("first_delay"))
        self.first_delay = self.delay if first < 0 else first
        self.lines = LineSource(int(spec.opt("line_length")))
        self.min_rate = float(spec.options.get("min_rate", 0.0))
        self.shortest = positive_min(self.delay, self.first_delay)

    def open(self, peer: str) -> Step:
        if self.first_delay == 0:
            return self.tick(0, None, 0.0)
        return Step(0, b"", jittered(self.first_delay, self.jitter))

    def tick(self, state: int, obj: Any, age: float) -> Step:
        delay = jittered(self.delay, self.jitter) if self.jitter else self.delay
        if self.min_rate:
            return Step(state, self.lines.at_least(_need(self.min_rate, delay)), delay, obj)
        return Step(state, self.lines.line(), delay, obj)

    def feed(self, state: int, obj: Any, data: bytes, age: float) -> Step:
        if state & _IDENT_DONE:
            return Step(state)
        return read_ident(state, obj, data)


def read_ident(state: int, obj: Any, data: bytes) -> Step:
    """Collect the client's first line (its identification string), bounded."""
    buf = data if obj is None else bytes(obj) + data
    end = buf.find(b"\n")
    if end < 0 and len(buf) < IDENT_MAX:
        return Step(state, obj=bytearray(buf))
    line = buf[: end if end >= 0 else IDENT_MAX].rstrip(b"\r")
    return Step(state | _IDENT_DONE, notes=(("ssh_id", line),))


# --- what the drip mode says ---------------------------------------------------

_NOTICE = (
    "This computer system is for the use of authorized users only.",
    "All connections to this host are monitored and recorded.",
    "Disconnect now if you are not an authorized user.",
    "Unauthorized access or use may lead to disciplinary action and criminal prosecution.",
    "By continuing you consent to the monitoring of this session.",
    "Planned maintenance: services may be unavailable on Sundays from 01:00 to 05:00 UTC.",
    "Please report suspicious activity to the security operations team.",
    "Use of this system means acceptance of the acceptable use policy.",
    "Evidence of unauthorized activity may be given to law enforcement officials.",
    "Session activity is logged for audit and compliance purposes.",
    "Access is granted to named individuals only; shared accounts are not permitted.",
    "Do not store credentials in scripts or send them in clear text.",
    "This host is managed centrally; local changes will be overwritten.",
    "For help, contact the service desk and quote the name of this host.",
    "The last security review is complete; the next one is due at the end of the quarter.",
    "Keys older than one year will be revoked without further notice.",
    "Multi-factor authentication is required for all administrative access.",
    "Backups run nightly; restores must be requested through the ticketing system.",
)


class DripPool:
    """A fixed text of pre-banner lines that every drip client reads from its own
    offset, so the state word holds a client's whole progress. Lines are notice
    text wrapped at random widths: printable, never "SSH-", CRLF within
    ``max_len`` (RFC 4253 §4.2)."""

    SIZE = 1 << 16  # offsets must fit the 17-bit pos field; keep to 16

    def __init__(self, max_len: int, rand: random.Random | None = None) -> None:
        r = rand or random.Random(os.urandom(16))
        width_hi = max_len - 2
        width_lo = max(1, min(40, width_hi))
        words: list[str] = []
        lines: list[bytes] = []
        size = 0
        while True:
            if not words:
                text = list(_NOTICE)
                r.shuffle(text)
                words = " ".join(text).split()
            width = r.randint(width_lo, width_hi)
            line = ""
            while words and len(line) + 1 + len(words[0]) <= width:
                line = f"{line} {words.pop(0)}" if line else words.pop(0)
            if not line:  # a word longer than the line: cut it
                line, words[0] = words[0][:width], words[0][width:]
                if not words[0]:
                    words.pop(0)
            raw = line.encode("ascii") + b"\r\n"
            if size + len(raw) > self.SIZE:
                break
            lines.append(raw)
            size += len(raw)
        self.data = b"".join(lines)
        self.starts: list[int] = []
        at = 0
        for raw in lines:
            self.starts.append(at)
            at += len(raw)
        self._rand = r

    def random_start(self) -> int:
        return self._rand.choice(self.starts)

    def take(self, pos: int, n: int) -> tuple[bytes, int]:
        """``n`` bytes from ``pos`` on (wrapping round), and the new offset."""
        if pos >= len(self.data):
            pos = 0
        out = self.data[pos : pos + n]
        while len(out) < n:
            out += self.data[: n - len(out)]
        return out, (pos + n) % len(self.data)


# --- adaptive: what each client family does, and what each address did ----------


QUICK_KEXINIT = 10.0  # seconds for our KEXINIT to a client with a handshake timer


class Rule(NamedTuple):
    """The best mode for a client family, and its known limits (docs/ssh-modes.md)."""

    mode: int
    kexinit_max: float | None = None
    """Our KEXINIT must be complete within this many seconds of the version."""
    limit: float | None = None
    """The client's own overall time limit by default, where it has one."""
    auth: Wait | None = None
    """A family that comes to log in: adaptive gives it ``auth``, and this is
    how long it waits for each answer (None: it gets ``kex``)."""


# Which software an identification string names; first match wins.
_FAMILY_PREFIXES = (
    ("openssh", "openssh"),
    ("putty", "putty"),
    ("plink", "putty"),
    ("winscp", "putty"),
    ("paramiko", "paramiko"),
    ("asyncssh", "asyncssh"),
    ("dropbear", "dropbear"),
    ("libssh2", "libssh2"),
    ("libssh", "libssh"),
    ("jsch", "jsch"),
    ("go", "go"),
)

FAMILIES: dict[str, Rule] = {
    # no timeout after the banner exchange unless ServerAliveInterval is set,
    # none for a password answer either: kex holds it forever, and one that
    # cannot use passwords (BatchMode, keys only) would leave auth at the first
    # refusal. A script's own deadline shows when it leaves kex: its address
    # gets auth from then on (lesson)
    "openssh": Rule(KEX),
    # no timeouts at all; pre-banner lines are unbounded too
    "putty": Rule(KEX),
    # 15 s handshake timer from the banner until the first packet it handles;
    # auth_timeout: 30 s for each auth_* call, from its service request
    "paramiko": Rule(KEX, kexinit_max=QUICK_KEXINIT, auth=Wait(attempt=30.0)),
    # login_timeout: 120 s for everything up to authentication, whatever we do
    "asyncssh": Rule(KEX, limit=120.0, auth=Wait(login=120.0)),
    # 50 pre-banner lines; no timeout in key exchange
    "dropbear": Rule(KEX),
    # ssh_connect waits 10 s in all by default; each blocking auth call waits
    # SSH_OPTIONS_TIMEOUT (unset: forever), which hydra sets to its -w, 32 s
    "libssh": Rule(KEX, limit=10.0, auth=Wait(attempt=32.0)),
    # blocking calls wait forever by default; nmap's ssh-brute (libssh2 over
    # nsock) times out each read after 5 s
    "libssh2": Rule(KEX, auth=Wait(idle=5.0)),
    # Session.connect(timeout) is a per-read socket timeout; none by default
    "jsch": Rule(KEX, auth=Wait()),
    # 255 pre-banner bytes in all; ClientConfig.Timeout covers the TCP dial only
    "go": Rule(KEX, auth=Wait()),
    # a client that names no known software (a scanner's probe, nmap's
    # scripts): where tarry cannot tell what it is, it gets the reference's lines
    "unknown": Rule(BANNER),
    # sent nothing: a scanner that waits for the server to speak first. It is
    # not an interactive client, and a quick, complete version would end its
    # wait: it gets what the endless reference gives, lines and no version
    "silent": Rule(BANNER),
}


def is_keyscan(ident: bytes) -> bool:
    """ssh-keyscan names itself "SSH-2.0-OpenSSH-keyscan": it wants the host key only."""
    return b"-keyscan" in ident.lower()


def family_of(ident: bytes | None) -> str:
    """The client family an identification line names ("silent" for none)."""
    if ident is None:
        return "silent"
    parts = ident.split(b"-", 2)
    if len(parts) < 3 or parts[0] != b"SSH":
        return "unknown"
    software = parts[2].lower()
    for prefix, family in _FAMILY_PREFIXES:
        if software.startswith(prefix.encode()):
            return family
    return "unknown"


PACE_MIN = 0.5  # never pace a client faster than this from what its address did
PACE_SHARE = 0.6  # of its measured patience; even +25% jitter stays under it
GRAB_TIME = 3.0  # under kex, leaving this soon without a KEXINIT means a banner grab


def pace_code(seconds: float) -> int:
    """Seconds as the state word's 8-bit pace field (tenths; 0 = the delay)."""
    if seconds <= 0 or seconds > 25.5:
        return 0
    return max(1, min(255, round(seconds * 10)))


Note = Callable[[str, str], str]
VISIT_SHIFT = 10
LESSON_MASK = (1 << VISIT_SHIFT) - 1


def lesson(reason: str, duration: float, note: Note) -> int | None:
    """What one finished session teaches (``mode | code << 2``), or None.

    From the notes the bait left on the close event (mode, pace, start of the
    stall phase, hassh, auth_owed):

    - under ``kex`` or ``auth``, gone within GRAB_TIME without a KEXINIT: a
      banner grabber, which took our version and left, so next time ``drip``
      (never a version);
    - gone within three paces of the stall phase: an idle timeout not much
      longer than our pace, so next time pace at PACE_SHARE of the time it
      waited (of one pace if it survived a gap), never under PACE_MIN;
    - under ``kex``, gone after more paces: a deadline on its whole attempt, so
      next time ``auth``, its logins refused just inside that deadline (code:
      whole seconds, the time it stayed);
    - under ``auth``, gone while a refusal was owed: its wait for an answer was
      shorter than ours, so next time ``auth`` refused inside what it waited;
    - under ``banner``/``drip``, gone after more ticks: a line or byte count
      limit, so next time ``kex``.

    Only departures by the client (reason closed or reset) teach anything.
    """
    if reason not in ("closed", "reset"):
        return None
    name = note("mode", "")
    if name == "auth":
        return _auth_lesson(duration, note)
    if name not in ("drip", "kex"):
        return None  # banner listeners leave no notes to learn from
    mode = MODES[name]
    try:
        pace = float(note("pace", "0"))
        start = float(note("start", "0"))
    except ValueError:
        return None
    if not (math.isfinite(pace) and math.isfinite(start) and math.isfinite(duration)):
        return None  # a shared history is input too
    idle = duration - start
    code = pace_code(pace)
    if mode == KEX and not note("hassh", "") and duration < GRAB_TIME:
        mode = DRIP
    elif pace > 0 and 0 < idle < 3 * pace:
        # left within the first few gaps: an idle timeout. It waited ``idle``
        # in the first gap, or about one pace if it survived some gaps.
        patience = idle if idle < 1.2 * pace else pace
        code = pace_code(max(PACE_MIN, PACE_SHARE * patience))
    elif mode != KEX and pace > 0 and idle >= 3 * pace:
        mode = KEX
    elif mode == KEX and note("hassh", "") and duration >= GRAB_TIME:
        return AUTH_ADVICE | wait_code(duration) << 2
    return mode | code << 2


AUTH_ADVICE = 3  # a lesson's mode: auth, its code the client's wait in seconds


def wait_code(seconds: float) -> int:
    """Seconds as a lesson's 8-bit wait (whole seconds, 1..255)."""
    return max(1, min(255, round(seconds)))


def _auth_lesson(duration: float, note: Note) -> int | None:
    if not note("hassh", "") and duration < GRAB_TIME:
        return DRIP  # a banner grabber
    try:
        owed = float(note("auth_owed", "") or "nan")
    except ValueError:
        return None
    waited = duration - owed
    if not (math.isfinite(waited) and waited >= 1.0):
        return None  # no answer was owed: it left on its own terms
    return AUTH_ADVICE | wait_code(waited) << 2


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


LEARN_RETRY = 30.0  # seconds between two tries to read a history that failed


class PatienceStore(BaseSink):
    """What each source address did on earlier visits, bounded.

    An event Sink: fed by ``close`` events (see ``lesson``), it keeps one small
    int per address (the advised mode, pace and visit count), least recently
    used dropped first. The adaptive bait asks it in ``open``.

    With a history store attached (``attach``), what was learned outlives the
    process: once adaptive mode is on, a thread reads the history's recent SSH
    sessions (bounded by age and count) and hands the lessons to the loop
    thread, which merges them at its next ``advice`` or ``emit``; so neither a
    lock nor the database is ever on the loop's path. A shared history
    (PostgreSQL) is read again every ``refresh`` seconds for what the other
    hosts of the fleet learned.
    """

    name = "ssh-patience"

    def __init__(self, cap: int = 65536, report: Callable[[str], None] = _stderr) -> None:
        self.cap = cap
        self.report = report
        self._enabled = False
        self._ips: dict[str, int] = {}
        self._incoming: list[tuple[dict[str, int], bool]] = []
        self._source: LearningSource | None = None
        self._bounds = (30.0, 100000, 0.0, False)  # days, sessions, refresh, verbose
        self._quit = threading.Event()
        self._learner: threading.Thread | None = None
        self.seeded = False
        """The history was read once (set by the learner thread)."""

    def __len__(self) -> int:
        return len(self._ips)

    def __bool__(self) -> bool:  # an empty store is still a store
        return True

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, on: bool) -> None:
        """Set by adaptive baits (at start, or when a reload adds one): only then
        is anything learned, and only then is the history read."""
        self._enabled = on
        if on:
            self._start_learner()

    def emit(self, event: Event) -> None:
        if not self._enabled or event.kind != CLOSE or event.proto != PROTOCOL:
            return
        if self._incoming:
            self._merge()
        rec = lesson(event.reason, event.duration, event.note)
        if rec is None:
            return
        ip = event.ip
        old = self._ips.pop(ip, None)
        visits = min(255, (old >> VISIT_SHIFT) + 1) if old is not None else 1
        self._ips[ip] = rec | visits << VISIT_SHIFT
        if len(self._ips) > self.cap:
            del self._ips[next(iter(self._ips))]

    def advice(self, ip: str) -> tuple[int, int] | None:
        """(mode, pace code) learned for ``ip``, or None; marks it recently used."""
        if self._incoming:
            self._merge()
        rec = self._ips.pop(ip, None)
        if rec is None:
            return None
        self._ips[ip] = rec
        return rec & 3, (rec >> 2) & 0xFF

    def visits(self, ip: str) -> int:
        rec = self._ips.get(ip)
        return 0 if rec is None else rec >> VISIT_SHIFT

    # -- learning from a history --

    def lessons(self, rows: Iterable[LearnRow]) -> dict[str, int]:
        """Replay finished sessions (oldest first) into records, at most ``cap``."""
        out: dict[str, int] = {}
        for ip, duration, reason, notes in rows:
            rec = lesson(reason, duration, notes.get)
            if rec is None or not isinstance(ip, str) or len(ip) > 64:
                continue
            old = out.pop(ip, None)
            visits = 1 if old is None else min(255, (old >> VISIT_SHIFT) + 1)
            out[ip] = rec | visits << VISIT_SHIFT
        if len(out) > self.cap:
            out = dict(list(out.items())[-self.cap :])
        return out

    def learn(self, rows: Iterable[LearnRow], newer: bool = False) -> int:
        """Queue lessons for the loop thread (any thread may call this); returns
        how many addresses they cover. ``newer``: they are more recent than what
        this process saw itself (another host's), so their advice wins."""
        recs = self.lessons(rows)
        if recs:
            self._incoming.append((recs, newer))
        return len(recs)

    def _merge(self) -> None:
        ips = self._ips
        while self._incoming:
            recs, newer = self._incoming.pop(0)
            for ip, rec in recs.items():
                old = ips.pop(ip, None)
                if old is not None:
                    visits = min(255, (old >> VISIT_SHIFT) + (rec >> VISIT_SHIFT))
                    rec = ((rec if newer else old) & LESSON_MASK) | visits << VISIT_SHIFT
                ips[ip] = rec
        if len(ips) > self.cap:
            self._ips = dict(list(ips.items())[-self.cap :])

    def attach(
        self,
        source: LearningSource,
        days: float = 30.0,
        sessions: int = 100000,
        refresh: float = 0.0,
        verbose: bool = False,
    ) -> None:
        """Seed from ``source.learning_rows(since, limit)`` once adaptive mode is on;
        with ``refresh`` > 0, then call ``source.fleet_rows(limit)`` that often for
        the sessions other hosts stored since. ``verbose`` logs every refresh."""
        self.detach()
        self._source = source
        self._bounds = (days, sessions, refresh, verbose)
        self._quit = threading.Event()
        self.seeded = False
        if self._enabled:
            self._start_learner()

    def detach(self) -> None:
        self._quit.set()
        if self._learner is not None:
            self._learner.join(5.0)
        self._learner = None
        self._source = None

    def _start_learner(self) -> None:
        if self._source is None or self._learner is not None:
            return
        self._learner = threading.Thread(
            target=self._learn_loop,
            args=(self._source, self._quit),
            name="tarry-patience",
            daemon=True,
        )
        self._learner.start()

    def _learn_loop(self, source: LearningSource, quit: threading.Event) -> None:
        days, sessions, refresh, verbose = self._bounds
        refresh = refresh if source.shared else 0.0
        failing = False
        while not quit.is_set():
            try:
                if not self.seeded:
                    rows = source.learning_rows(time.time() - days * 86400, sessions)
                    n = self.learn(rows)
                    self.seeded = True
                    self.report(
                        f"tarry: adaptive: learned {n} addresses from {len(rows)} sessions "
                        "in the history"
                    )
                elif refresh > 0:
                    rows = source.fleet_rows(sessions)
                    n = self.learn(rows, newer=True)
                    if verbose and rows:
                        self.report(
                            f"tarry: adaptive: learned {n} addresses from {len(rows)} "
                            "sessions of other hosts"
                        )
                else:
                    break
                if failing:
                    self.report("tarry: adaptive: reading the history again")
                    failing = False
            except Exception as exc:  # a history that is away must not end the learner
                if not failing:
                    self.report(f"tarry: adaptive: cannot read the history: {exc}")
                    failing = True
            quit.wait(refresh if self.seeded and refresh > 0 and not failing else LEARN_RETRY)
        source.learning_done()

    def close(self) -> None:
        self.detach()


_STORE: PatienceStore | None = None


def patience_store() -> PatienceStore:
    """The process-wide store that adaptive listeners share."""
    global _STORE
    if _STORE is None:
        _STORE = PatienceStore()
    return _STORE


def sinks() -> list[Sink]:
    """What adaptive learns from departures (``BaitModule.sinks``)."""
    return [patience_store()]


def use_history(
    source: LearningSource, days: float, sessions: int, refresh: float = 0.0, verbose: bool = False
) -> None:
    """Back the adaptive mode's memory with the history (tarry.observe calls this)."""
    patience_store().attach(source, days, sessions, refresh, verbose)


# --- drip, kex and adaptive ------------------------------------------------------


class SshBait(BaitBase):
    """The ``drip``, ``kex`` and ``adaptive`` modes; see the module docstring."""

    protocol = PROTOCOL

    def __init__(self, spec: TarpitSpec, store: PatienceStore | None = None) -> None:
        mode = str(spec.opt("mode"))
        self.adaptive = mode == "adaptive"
        self.fixed = MODES.get(mode, KEX)
        self.delay = spec.delay
        self.jitter = spec.jitter if spec.jitter > 0 else MODE_JITTER
        first = float(spec.opt("first_delay"))
        self.first_delay = self.delay if first < 0 else first
        self.min_rate = float(spec.opt("min_rate"))
        self.version = str(spec.opt("version")).encode("ascii") + b"\r\n"
        self.kexinit = KexinitTemplate(OPENSSH_92_SERVER)
        self.kexinit_time = float(spec.opt("kexinit_time"))
        self.ident_wait = float(spec.opt("ident_wait"))
        # adaptive paces a client from what its address did, down to PACE_MIN
        self.shortest = positive_min(
            self.delay, self.first_delay, self.kexinit_time, self.ident_wait, PACE_MIN
        )
        self.pool = DripPool(int(spec.opt("drip_line_length")))
        self.lines = LineSource(int(spec.opt("line_length")))
        self.store = store if store is not None else patience_store()
        if self.adaptive:
            self.store.enabled = True
        self._rand = random.Random(os.urandom(16))
        self.auth_mode = mode == "auth"
        self.auth: AuthServer | None = None
        if (self.auth_mode or self.adaptive) and available():
            self.auth = AuthServer(
                str(spec.opt("version")).encode("ascii"),
                max_live=int(spec.opt("max_auth_clients")),
                record=bool(spec.opt("record_credentials")),
                share=float(spec.opt("auth_share")),
                default_wait=float(spec.opt("auth_wait")),
                margin=float(spec.opt("auth_margin")),
                jitter=self.jitter,
                classify=self._classify,
            )

    # -- the Bait interface --

    def open(self, peer: str) -> Step:
        if self.auth_mode:
            if self.auth is not None and self.auth.room():
                return self._start_auth(KEX << MODE_SHIFT, None, Wait(), 0.0, ())
            return self._start(KEX << MODE_SHIFT, None, 0.0, (("auth", "full"),))
        if not self.adaptive:
            return self._start(self.fixed << MODE_SHIFT, None, 0.0, ())
        advice = self.store.advice(peer)
        mode, code = advice or (NO_ADVICE, 0)
        if (
            advice is not None and mode == AUTH_ADVICE
        ):  # kex, or auth inside the wait it showed (until decided,
            # the unused offset bits carry that wait)
            state = UNDECIDED | KEX << MODE_SHIFT | ADVISED_AUTH | code << WAIT_SHIFT
        else:
            state = UNDECIDED | mode << MODE_SHIFT | code << PACE_SHIFT
        return Step(state, b"", self.ident_wait)

    def tick(self, state: int, obj: Any, age: float) -> Step:
        if type(obj) is AuthConn:  # its own server: a reload may have replaced ours
            return self._auth_step(obj.owner.tick(state, obj, age), age)
        if state & UNDECIDED:
            return self._decide(state, obj, None, age, ())
        mode = (state & MODE_MASK) >> MODE_SHIFT
        if mode == KEX:
            return self._kex_tick(state, obj)
        if mode == DRIP:
            return self._drip_tick(state, obj)
        d = self._interval(state)
        return Step(state, self.lines.at_least(_need(self.min_rate, d)), d, obj)

    def feed(self, state: int, obj: Any, data: bytes, age: float) -> Step:
        if type(obj) is AuthConn:
            return self._auth_step(obj.owner.feed(state, obj, data, age), age)
        notes: list[tuple[str, str | bytes]] = []
        if not state & IDENT_DONE:
            buf = obj if obj is not None else bytearray()
            buf += data
            end = buf.find(b"\n", 0, IDENT_MAX)
            if end < 0 and len(buf) < IDENT_MAX:
                return Step(state, obj=buf)
            if end >= 0:
                ident, rest = bytes(buf[:end]).rstrip(b"\r"), bytes(buf[end + 1 :])
            else:  # no line end in 255 bytes: not an SSH client, stop reading
                ident, rest = bytes(buf[:IDENT_MAX]), b""
                state |= KEXIN_DONE
            state |= IDENT_DONE
            obj = None
            notes.append(("ssh_id", ident))
            if state & UNDECIDED:
                step = self._decide(state, None, ident, age, notes)
                if type(step.obj) is AuthConn:  # the rest is for the auth transport
                    return self._then(step, self.feed(step.state, step.obj, rest, age))
                state, notes = step.state, list(step.notes or ())
                first: Step | None = step
            else:
                first = None
                state |= self._quick(family_of(ident))
        else:
            rest, first = data, None
        if not state & KEXIN_DONE and (rest or obj is not None):
            state, obj = self._read_kexinit(state, obj, rest, notes)
        if first is not None:
            return first._replace(state=state, obj=obj, notes=tuple(notes))
        return Step(state, obj=obj, notes=tuple(notes) or None)

    # -- choosing and starting a mode --

    def _decide(self, state: int, obj: Any, ident: bytes | None, age: float, notes: Any) -> Step:
        """Adaptive: pick the mode from the address's history, else the family."""
        family = family_of(ident)
        rule = FAMILIES[family]
        mode = (state & MODE_MASK) >> MODE_SHIFT
        if mode == NO_ADVICE:
            mode = rule.mode
        learned = (state >> WAIT_SHIFT) & 0xFF if state & ADVISED_AUTH else 0
        state &= LOW_MASK & ~(UNDECIDED | MODE_MASK)
        state |= mode << MODE_SHIFT | self._quick(family)
        notes = (*notes, ("family", family))
        wait = Wait(attempt=float(learned)) if learned else rule.auth
        if mode == KEX and wait is not None and self.auth is not None and ident:
            if is_keyscan(ident):
                pass  # it would take our host key and leave: kex holds it longer
            elif self.auth.room():
                return self._start_auth(state | IDENT_DONE, ident, wait, age, notes)
            else:
                notes = (*notes, ("auth", "full"))
        return self._start(state, obj, age, notes)

    # -- the auth mode (tarry.sshauth) --

    def _classify(self, ident: bytes) -> tuple[str, Wait]:
        """The family of a client the fixed ``auth`` mode reads, and its wait."""
        family = family_of(ident)
        return family, FAMILIES[family].auth or Wait()

    def _start_auth(
        self, state: int, ident: bytes | None, wait: Wait, age: float, notes: Any
    ) -> Step:
        assert self.auth is not None
        pace = self._pace(state)
        conn, kexinit = self.auth.start(wait, pace, ident, age)
        notes = (*notes, ("mode", "auth"), ("pace", f"{pace:g}"), ("start", f"{age:g}"))
        return Step(state, self.version + kexinit, KEX_TIME, conn, notes=notes)

    def _auth_step(self, step: Step, age: float) -> Step:
        """An auth client's step; one that will not finish our key exchange (no
        common algorithms, a key scan) is held as ``kex`` holds clients from now on."""
        if step.obj is not None or step.close:
            return step
        state = (step.state & LOW_MASK & ~MODE_MASK) | KEX << MODE_SHIFT
        state |= IDENT_DONE | KEXIN_DONE | KEXOUT_DONE
        notes = (*(step.notes or ()), ("mode", "kex"))
        return Step(state, step.out, self._interval(state), None, notes=notes)

    @staticmethod
    def _then(first: Step, second: Step) -> Step:
        """``first`` (our version and KEXINIT) followed by ``second``."""
        notes = (*(first.notes or ()), *(second.notes or ()))
        return second._replace(out=first.out + second.out, notes=notes or None)

    def _quick(self, family: str) -> int:
        """QUICK when the family must have our whole KEXINIT sooner than
        ``kexinit_time`` (in every mode: a fixed ``kex`` must not lose it either)."""
        limit = FAMILIES[family].kexinit_max
        return QUICK if limit is not None and limit < self.kexinit_time else 0

    def _start(self, state: int, obj: Any, age: float, notes: Any) -> Step:
        mode = (state & MODE_MASK) >> MODE_SHIFT
        pace = self._pace(state)
        if mode == KEX:
            span = self._kexinit_span(state)
            notes = (*notes, ("mode", "kex"), ("pace", f"{pace:g}"), ("start", f"{span:g}"))
            if span <= 0:
                out = self.version + self.kexinit.piece(0, len(self.kexinit))
                d = self._interval(state)
                return Step(state | KEXOUT_DONE, out, d, obj, notes=notes)
            d = self._piece_interval(state)
            pos = min(len(self.kexinit) - 1, max(0, _need(self.min_rate, d) - len(self.version)))
            out = self.version + self.kexinit.piece(0, pos)
            return Step(state | pos << POS_SHIFT, out, d, obj, notes=notes)
        wait = max(0.0, self.first_delay - age)
        notes = (*notes, ("mode", MODE_NAMES[mode]), ("pace", f"{pace:g}"))
        notes = (*notes, ("start", f"{self.first_delay:g}"))
        if mode == DRIP:
            state = (state & LOW_MASK) | self.pool.random_start() << POS_SHIFT
        if wait <= 0:
            return self.tick(state, obj, age)._replace(notes=notes)
        return Step(state, b"", jittered(wait, self.jitter), obj, notes=notes)

    # -- pacing --

    def _pace(self, state: int) -> float:
        code = (state & PACE_MASK) >> PACE_SHIFT
        return code / 10 if code else self.delay

    def _interval(self, state: int) -> float:
        return jittered(self._pace(state), self.jitter, self._rand.random)

    def _kexinit_span(self, state: int) -> float:
        return min(self.kexinit_time, QUICK_KEXINIT) if state & QUICK else self.kexinit_time

    def _piece_interval(self, state: int) -> float:
        return jittered(self._kexinit_span(state) / KEX_PIECES, self.jitter, self._rand.random)

    # -- the modes' ticks --

    def _drip_tick(self, state: int, obj: Any) -> Step:
        d = self._interval(state)
        out, pos = self.pool.take(state >> POS_SHIFT, max(1, _need(self.min_rate, d)))
        return Step((state & LOW_MASK) | pos << POS_SHIFT, out, d, obj)

    def _kex_tick(self, state: int, obj: Any) -> Step:
        if state & KEXOUT_DONE:
            d = self._interval(state)
            return Step(state, self._ignore(_need(self.min_rate, d)), d, obj)
        total = len(self.kexinit)
        pos = state >> POS_SHIFT
        d = self._piece_interval(state)
        size = max(1, round(total / KEX_PIECES * (0.5 + self._rand.random())))
        end = min(total, pos + max(size, _need(self.min_rate, d)))
        out = self.kexinit.piece(pos, end)
        if end >= total:
            d = self._interval(state)
            short = _need(self.min_rate, d) - len(out)
            if short > 0:
                out += self._ignore(short)
            return Step((state & LOW_MASK) | KEXOUT_DONE, out, d, obj)
        return Step((state & LOW_MASK) | end << POS_SHIFT, out, d, obj)

    def _ignore(self, need: int) -> bytes:
        """One SSH_MSG_IGNORE packet of random content, ``need`` bytes or more."""
        n = self._rand.randint(4, 36)
        if need > n + 14:
            n = min(need - 14, 32000)
        return frame(ignore_payload(os.urandom(n)))

    # -- reading the client's KEXINIT --

    def _read_kexinit(
        self, state: int, obj: Any, data: bytes, notes: list[tuple[str, str | bytes]]
    ) -> tuple[int, Any]:
        """Buffer the client's first packet (bounded); log its HASSH, then drop it."""
        buf = obj if obj is not None else bytearray()
        buf += data
        try:
            got = read_packet(buf, KEXINIT_LIMIT)
            if got is None:
                return state, buf
            payload = got[0]
            if payload[:1] != bytes([MSG_KEXINIT]):
                raise WireError(f"first packet is type {payload[0] if payload else 'none'}")
            digest, raw = hassh(parse_kexinit(payload))
        except WireError as exc:
            notes.append(("hassh_error", str(exc)))
            return state | KEXIN_DONE, None
        notes.append(("hassh", digest))
        notes.append(("hassh_algos", raw[:HASSH_RAW_MAX].encode("latin-1")))  # peer bytes
        return state | KEXIN_DONE, None


_WARNED: list[bool] = []


def make(spec: TarpitSpec) -> BannerBait | SshBait:
    mode = spec.options.get("mode", "banner")
    if mode == "banner":
        return BannerBait(spec)
    if mode == "adaptive" and not available() and not _WARNED:
        _WARNED.append(True)  # once per process, not at every reload
        _stderr("tarry: ssh adaptive: " + MISSING_ADAPTIVE)
    return SshBait(spec)


BAIT = BaitModule(
    PROTOCOL,
    make,
    OPTIONS,
    DEFAULTS,
    sinks=sinks,
    use_history=use_history,
)
