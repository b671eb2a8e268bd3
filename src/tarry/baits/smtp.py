"""The SMTP bait: a believable RFC 5321 dialogue whose every reply is stuttered.

Like OpenBSD spamd's stutter, each reply leaves a byte (or a few) per tick, so a
sender waits minutes per command and never delivers anything: bodies are read
and thrown away, and the end of DATA is answered with a temporary failure, so a
legitimate sender that strays here keeps its mail queued instead of losing it.

Pacing keeps each reply inside the client's per-reply timeout (RFC 5321
§4.5.3.2: 5 minutes for most replies, 2 for the DATA 354, 10 after the final
dot): a long reply (EHLO) drips several bytes per tick rather than overrun it.
The greeting's ``220-`` continuation lines are timed per line, which Postfix's
per-read timeouts and Python's smtplib both accept without limit.

State word: the dialogue phase and flags (below). The per-client ``obj`` is a
small ``Session`` (input buffer, reply in flight, recipient notes), all bounded.
STARTTLS needs the TLS layer (``tarry.tls.wrap``), which tells this bait through
``tls_attached``; without it STARTTLS is neither offered nor accepted.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any

from ..bait import (
    MAX_SECONDS,
    BaitBase,
    BaitModule,
    Bounds,
    Notes,
    Option,
    Step,
    TarpitSpec,
    jittered,
    sanitise,
)
from ..deadlines import SHARE, DeadlineStore
from ..events import Event, Sink
from ..tls import TLS_OPTIONS, check_tls

PROTOCOL = "smtp"
DEFAULTS = {"delay": 2.0}
DEFAULT_LISTEN = ("*:2525",)
# Changing these on reload changes what a held client's obj means (clear or TLS).
STATEFUL_OPTIONS = ("tls", "starttls")

LINE_MAX = 1024  # RFC 5321 §4.5.3.1.4: 512 octets per command line; slack for sloppy clients
PENDING_MAX = 4096  # unprocessed (pipelined) input kept while a reply drips; the rest is dropped
RCPT_MAX = 100  # recipients per transaction before 452, as Postfix's recipient limit does
RCPT_NOTED = 10  # distinct recipients kept for the rcpt_to note
SIZE_MAX = 10240000  # advertised SIZE, Postfix's default message_size_limit
ADDR_MAX = 256  # RFC 5321 §4.5.3.1.3: a path is at most 256 octets

# Seconds each reply may take, 80% of the client timeouts of RFC 5321 §4.5.3.2.
BUDGET = 240.0
BUDGET_354 = 96.0
BUDGET_END = 480.0

# State word: phase in the low bits, flags above.
PHASE = 0x7
P_GREET = 0  # dripping the greeting
P_CMD = 1  # reading commands
P_DATA = 2  # reading (and discarding) a message body
P_AUTH_PLAIN = 3  # waiting for the PLAIN response after "334 "
P_AUTH_USER = 4  # LOGIN: waiting for the username
P_AUTH_PASS = 5  # LOGIN: waiting for the password
P_DONE = 6  # closing: input is ignored
F_HELO = 1 << 3  # HELO or EHLO accepted
F_EHLO = 1 << 4  # ... and it was EHLO (AUTH needs it)
F_MAIL = 1 << 5  # MAIL FROM accepted
F_RCPT = 1 << 6  # at least one RCPT TO accepted
F_TLS = 1 << 7  # the session runs inside TLS (implicit, or after STARTTLS)
F_SKIP = 1 << 8  # discarding the rest of an overlong line
F_CLOSE = 1 << 9  # close once the reply in flight is sent
F_STARTTLS = 1 << 10  # start TLS once the reply in flight is sent
F_EXPIRED = 1 << 11  # the session limit was hit; 421 sent or in flight
F_TOOBIG = 1 << 12  # the body in progress passed SIZE_MAX


def _check_hostname(v: str) -> str | None:
    ok = 0 < len(v) <= 253 and all(c.isascii() and (c.isalnum() or c in ".-") for c in v)
    return None if ok else "must be a host name (letters, digits, dots and hyphens)"


OPTIONS = {
    "hostname": Option(
        "mail.example.com", str, "host name in the greeting and EHLO reply", _check_hostname
    ),
    "greeting_lines": Option(
        0,
        int,
        '"220-" continuation lines before the final 220; -1 = endless',
        bounds=Bounds(-1, 10000),
    ),
    "starttls": Option(True, bool, "offer STARTTLS on a plain listener"),
    **TLS_OPTIONS,
    "session_limit": Option(
        0.0,
        (int, float),
        "seconds before a session ends with 421; 0 = never",
        bounds=Bounds(0, MAX_SECONDS, unit=" seconds"),
    ),
    "record_passwords": Option(False, bool, "log the AUTH password in the CLOSE event"),
}


_CONTINUATIONS = (
    # the software's name waits for the final line: a version scanner matches
    # "220-<host> ESMTP Postfix" on the first line and leaves (nmap -sV)
    "220-{host} mail service",
    "220-Unsolicited bulk email is not accepted on this system.",
    "220-All connections are logged; abuse is reported.",
    "220-This server is busy; please wait for the final greeting.",
    "220-Mail from dynamic IP address ranges is rejected.",
    "220-Use of this system implies acceptance of the local mail policy.",
)

# Replies that do not depend on the host name, in Postfix's wording.
R_OK = b"250 2.0.0 Ok\r\n"
R_MAIL_OK = b"250 2.1.0 Ok\r\n"
R_RCPT_OK = b"250 2.1.5 Ok\r\n"
R_354 = b"354 End data with <CR><LF>.<CR><LF>\r\n"
R_QUEUE_ERR = b"451 4.3.0 Error: queue file write error\r\n"
R_TOO_BIG = b"552 5.3.4 Message size exceeds fixed limit\r\n"
R_BYE = b"221 2.0.0 Bye\r\n"
R_UNKNOWN = b"500 5.5.2 Error: command not recognized\r\n"
R_BAD_SYNTAX = b"500 5.5.2 Error: bad syntax\r\n"
R_TOO_LONG = b"500 5.5.2 Error: line too long\r\n"
R_NEED_HELO = b"503 5.5.1 Error: send HELO/EHLO first\r\n"
R_NEED_EHLO = b"503 5.5.1 Error: send EHLO first\r\n"
R_NESTED = b"503 5.5.1 Error: nested MAIL command\r\n"
R_NEED_MAIL = b"503 5.5.1 Error: need MAIL command\r\n"
R_NEED_RCPT = b"503 5.5.1 Error: need RCPT command\r\n"
R_NO_RCPT = b"554 5.5.1 Error: no valid recipients\r\n"
R_IN_MAIL = b"503 5.5.1 Error: MAIL transaction in progress\r\n"
R_EHLO_SYNTAX = b"501 Syntax: EHLO hostname\r\n"
R_HELO_SYNTAX = b"501 Syntax: HELO hostname\r\n"
R_MAIL_SYNTAX = b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
R_RCPT_SYNTAX = b"501 5.5.4 Syntax: RCPT TO:<address>\r\n"
R_BAD_SENDER = b"501 5.1.7 Bad sender address syntax\r\n"
R_BAD_RCPT = b"501 5.1.3 Bad recipient address syntax\r\n"
R_OPTION = b"555 5.5.4 Unsupported option\r\n"
R_TOO_MANY = b"452 4.5.3 Error: too many recipients\r\n"
R_DATA_SYNTAX = b"501 5.5.4 Syntax: DATA\r\n"
R_RSET_SYNTAX = b"501 5.5.4 Syntax: RSET\r\n"
R_VRFY_SYNTAX = b"501 5.5.4 Syntax: VRFY address\r\n"
R_VRFY = b"252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
R_HELP = b"214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT AUTH\r\n"
R_TLS_READY = b"220 2.0.0 Ready to start TLS\r\n"
R_TLS_SYNTAX = b"501 5.5.4 Syntax: STARTTLS\r\n"
R_TLS_ACTIVE = b"554 5.5.1 Error: TLS already active\r\n"
R_TLS_NONE = b"502 5.5.1 Error: command not implemented\r\n"
R_TLS_BUSY = b"454 4.7.0 TLS not available due to local problem\r\n"
R_AUTH_SYNTAX = b"501 5.5.4 Syntax: AUTH mechanism\r\n"
R_AUTH_MECH = b"535 5.7.8 Error: authentication failed: Invalid authentication mechanism\r\n"
R_AUTH_FAIL = b"535 5.7.8 Error: authentication failed: authentication failure\r\n"
R_AUTH_ABORT = b"501 5.7.0 Authentication aborted\r\n"
R_AUTH_DECODE = b"501 5.5.2 Cannot decode response\r\n"
R_334_EMPTY = b"334 \r\n"
R_334_USER = b"334 VXNlcm5hbWU6\r\n"  # "Username:"
R_334_PASS = b"334 UGFzc3dvcmQ6\r\n"  # "Password:"

_MAIL_PARAMS = (b"SIZE", b"BODY", b"AUTH", b"RET", b"ENVID", b"SMTPUTF8")
_ADDR_BAD = bytes(range(0x21)) + b"<>()[]\\,;\x7f"


class Session:
    """What one client's dialogue needs between calls; every field is bounded."""

    __slots__ = (
        "budget",
        "buf",
        "greet",
        "noted",
        "nrcpt",
        "pos",
        "rcpt",
        "reply",
        "since",
        "size",
        "step",
        "tail",
    )

    def __init__(self, reply: bytes, step: int, budget: float = BUDGET) -> None:
        self.buf: bytearray | None = None  # unprocessed input, at most PENDING_MAX
        self.reply: bytes | None = reply  # the reply being dripped (mostly a shared constant)
        self.pos = 0  # bytes of ``reply`` already sent
        self.step = step  # bytes per tick for this reply
        self.greet = 0  # greeting continuation lines sent
        self.nrcpt = 0  # recipients in the current transaction
        self.rcpt = ""  # comma-joined distinct recipients seen, at most RCPT_NOTED
        self.tail = b""  # DATA: the last bytes seen, to find <CRLF>.<CRLF> across reads
        self.size = 0  # DATA: body bytes seen
        self.budget = budget  # seconds any reply may take: less when a deadline was learned
        self.since: float | None = 0.0  # when the reply in flight began (-1: this call)
        self.noted: float | None = -2.0  # the ``since`` last noted (-2: none yet)


CODE_LEN = 4  # "250-", "220 ": a reply code and its separator


def whole_code(reply: bytes, start: int, end: int) -> int:
    """``end``, moved so that no segment splits a line's reply code and
    separator: some clients judge a reply by the first segment they read (a
    brute-forcer took a lone ``2`` for a refusal and left after 3 s). The code
    goes whole; what follows it drips."""
    line = reply.rfind(b"\n", 0, end - 1) + 1  # start of the line ``end`` falls in
    if line < end < line + CODE_LEN:
        return min(len(reply), line + CODE_LEN)
    return end


def _drip_step(reply: bytes, budget: float, delay_max: float) -> int:
    """Bytes per tick so that ``reply`` takes at most ``budget`` seconds; each
    line's code goes with its first tick, so only the rest is spread."""
    ticks = int(budget // delay_max) if delay_max > 0 else len(reply)
    if ticks <= 1:
        return len(reply)
    dripped = len(reply) - (CODE_LEN - 1) * reply.count(b"\n")
    step = max(1, -(-dripped // ticks))
    while _segments(reply, step) > ticks:  # whole codes make a few more segments
        step += 1
    return step


def _segments(reply: bytes, step: int) -> int:
    """How many ticks ``reply`` takes at ``step`` bytes a tick, codes whole."""
    n = pos = 0
    while pos < len(reply):
        pos = whole_code(reply, pos, pos + step)
        n += 1
    return n


def _address(arg: bytes, keyword: bytes) -> tuple[bytes, bytes] | None:
    """Split ``FROM:<a@b> PARAMS`` into address and parameters; None if malformed."""
    if arg[: len(keyword)].upper() != keyword:
        return None
    rest = arg[len(keyword) :].lstrip(b" ")
    if rest.startswith(b"<"):
        end = rest.find(b">")
        if end < 0:
            return None
        return rest[1:end], rest[end + 1 :].strip(b" ")
    addr, _, params = rest.partition(b" ")  # Postfix accepts a bare address too
    return addr, params.strip(b" ")


def _valid_address(addr: bytes) -> bool:
    if len(addr) > ADDR_MAX or addr.translate(None, _ADDR_BAD) != addr or not addr.isascii():
        return False
    local, at, domain = addr.rpartition(b"@")
    if not at:
        return bool(addr)  # a bare local part, as Postfix accepts ("postmaster")
    return bool(local) and bool(domain) and b".." not in domain


def _b64(text: bytes) -> bytes | None:
    if text == b"=":
        return b""
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


class SmtpBait(BaitBase):
    """One per listener: the replies are built once and shared by every client."""

    protocol = PROTOCOL

    def __init__(self, spec: TarpitSpec) -> None:
        self.delay = float(spec.delay)
        self.jitter = float(spec.jitter)
        self.delay_max = self.delay * (1.0 + max(0.0, self.jitter))
        host = str(spec.opt("hostname"))
        self.greeting_lines = int(spec.opt("greeting_lines"))
        self.session_limit = float(spec.opt("session_limit"))
        self.record_passwords = bool(spec.opt("record_passwords"))
        self.implicit_tls = bool(spec.opt("tls"))
        self.offer_starttls = False  # until a TLS layer attaches
        self.tls_room: Callable[[], bool] = lambda: True
        self.errors = 0  # bugs caught by the safety net; tests require 0
        self.store = deadline_store()

        self.r_greet = f"220 {host} ESMTP Postfix\r\n".encode()
        self.r_more = tuple((line.format(host=host) + "\r\n").encode() for line in _CONTINUATIONS)
        self.r_helo = f"250 {host}\r\n".encode()
        self.r_expired = f"421 4.4.2 {host} Error: timeout exceeded\r\n".encode()
        self.r_broken = f"421 4.3.0 {host} Error: internal error\r\n".encode()
        self.r_ehlo = self._ehlo(host, starttls=False)
        self.r_ehlo_starttls = self._ehlo(host, starttls=True)

    @staticmethod
    def _ehlo(host: str, starttls: bool) -> bytes:
        words = [host, "PIPELINING", f"SIZE {SIZE_MAX}", "VRFY"]
        if starttls:
            words.append("STARTTLS")
        words += ["AUTH PLAIN LOGIN", "ENHANCEDSTATUSCODES", "8BITMIME"]
        lines = [f"250-{w}\r\n" for w in words[:-1]] + [f"250 {words[-1]}\r\n"]
        return "".join(lines).encode()

    def tls_attached(self, implicit: bool, room: Callable[[], bool]) -> None:
        """Called by the TLS layer: STARTTLS works now; ``room()`` says whether
        one more client may enter TLS (the listener's max_tls_clients)."""
        self.offer_starttls = not implicit
        self.implicit_tls = implicit
        self.tls_room = room

    # -- the engine's calls ------------------------------------------------

    def open(self, peer: str) -> Step:
        state = P_GREET | (F_TLS if self.implicit_tls else 0)
        learned = self.store.deadline(peer, 0) if self.store.known(peer) else None
        if learned is not None:
            # this address's tool waits ``learned`` s for a reply: every reply,
            # the greeting whole, is done just inside it, and then the next
            budget = SHARE * learned
            sess = Session(self.r_greet, _drip_step(self.r_greet, budget, self.delay_max), budget)
            sess.greet = max(0, self.greeting_lines)
        else:
            first = self.r_more[0] if self.greeting_lines != 0 else self.r_greet
            # one greeting line drips; a greeting of many goes a whole line a
            # tick, as the endless reference's does (a client may judge a line
            # by its first segment, medusa the whole line within 0.3 s)
            step = (
                _drip_step(first, BUDGET, self.delay_max) if first is self.r_greet else len(first)
            )
            sess = Session(first, step)
        return self._noted(Step(state, b"", self._delay(), sess), sess, 0.0)

    def feed(self, state: int, obj: Any, data: bytes, age: float) -> Step:
        try:
            step = self._feed(state, obj, data, age)
        except Exception:
            return self._broken(state)
        return self._noted(step, obj, age)

    def tick(self, state: int, obj: Any, age: float) -> Step:
        try:
            step = self._tick(state, obj, age)
        except Exception:
            return self._broken(state)
        return self._noted(step, obj, age)

    @staticmethod
    def _noted(step: Step, obj: Any, age: float) -> Step:
        """Note when the reply in flight began (``replying_since``, "-" for
        none): a client that leaves during a reply tells ``lesson`` how long
        its software waits for one."""
        sess = step.obj if isinstance(step.obj, Session) else obj
        if not isinstance(sess, Session):
            return step
        if sess.reply is None:
            sess.since = None
        elif sess.since is None or sess.since < 0:
            sess.since = age
        if sess.since == sess.noted:
            return step  # most ticks: the same reply still dripping, nothing to format
        sess.noted = sess.since
        mark = "-" if sess.since is None else f"{sess.since:.1f}"
        return step._replace(notes=(*(step.notes or ()), ("replying_since", mark)))

    # -- internals -----------------------------------------------------------

    def _delay(self) -> float:
        return jittered(self.delay, self.jitter)

    def _broken(self, state: int) -> Step:
        """The safety net: a bug here must not reach the engine."""
        self.errors += 1
        return Step((state & ~PHASE) | P_DONE, self.r_broken, None, None, close=True)

    def _idle(self, state: int, sess: Session, age: float, notes: Notes | None) -> Step:
        """Nothing to send: wait for input, or for the session limit."""
        return Step(state, b"", self._limit_delay(state, age), sess, notes=notes)

    def _limit_delay(self, state: int, age: float) -> float | None:
        if self.session_limit > 0 and not state & F_EXPIRED:
            return max(0.0, self.session_limit - age)
        return None

    def _start(self, sess: Session, reply: bytes, budget: float = BUDGET) -> None:
        sess.reply = reply
        sess.pos = 0
        sess.step = _drip_step(reply, min(budget, sess.budget), self.delay_max)
        sess.since = -1.0  # this call's age, once _noted knows it

    def _expired(self, state: int, age: float) -> bool:
        return self.session_limit > 0 and age >= self.session_limit and not state & F_EXPIRED

    def _feed(self, state: int, obj: Any, data: bytes, age: float) -> Step:
        sess = obj if isinstance(obj, Session) else Session(self.r_greet, 1)
        phase = state & PHASE
        if phase == P_DONE or not data:
            return Step(state, b"", None, sess)
        if sess.reply is not None or phase == P_GREET:
            state = self._buffer(state, sess, data)
            return Step(state, b"", None, sess)
        if phase == P_DATA and not sess.buf:
            state, rest = self._body(state, sess, data)
            if rest:
                state = self._buffer(state, sess, rest)
        else:
            state = self._buffer(state, sess, data)
        state, notes = self._next(state, sess, age)
        if sess.reply is not None:
            return Step(state, b"", self._delay(), sess, notes=notes)
        return Step(state, b"", None, sess, notes=notes)

    def _tick(self, state: int, obj: Any, age: float) -> Step:
        sess = obj if isinstance(obj, Session) else Session(self.r_greet, 1)
        reply = sess.reply
        if reply is None:  # the idle timer (session limit), or a stray tick
            state, notes = self._next(state, sess, age)
            if sess.reply is not None:
                return Step(state, b"", self._delay(), sess, notes=notes)
            return self._idle(state, sess, age, notes)
        end = whole_code(reply, sess.pos, sess.pos + sess.step)
        out = reply[sess.pos : end]
        if end < len(reply):
            sess.pos = end
            return Step(state, out, self._delay(), sess)
        sess.reply = None
        sess.pos = 0
        if state & F_CLOSE:
            return Step((state & ~PHASE) | P_DONE, out, None, None, close=True)
        if state & F_STARTTLS:
            # RFC 3207 §4.2: plaintext pipelined after STARTTLS must be dropped.
            sess.buf = None
            state = (state & ~(PHASE | F_STARTTLS | F_HELO | F_EHLO | F_MAIL | F_RCPT)) | P_CMD
            state |= F_TLS
            return Step(state, out, self._limit_delay(state, age), sess, starttls=True)
        if state & PHASE == P_GREET:
            if self._more_greeting(sess):
                return Step(state, out, self._delay(), sess)
            state = (state & ~PHASE) | P_CMD
        state, notes = self._next(state, sess, age)
        if sess.reply is not None:
            return Step(state, out, self._delay(), sess, notes=notes)
        step = self._idle(state, sess, age, notes)
        return step._replace(out=out)

    def _more_greeting(self, sess: Session) -> bool:
        """Queue the next greeting line; False once the final 220 has gone."""
        if sess.budget < BUDGET:
            return False  # a learned deadline: the greeting was its final line only
        n = self.greeting_lines
        since = sess.since
        sess.greet += 1
        if n < 0 or sess.greet < n:
            sess.greet %= len(self.r_more) << 10  # endless: keep the counter a small int
            self._start(sess, self.r_more[sess.greet % len(self.r_more)])
        elif sess.greet == n:
            self._start(sess, self.r_greet)
        else:
            return False
        assert sess.reply is not None
        sess.step = len(sess.reply)  # a greeting of many lines goes a whole line a tick
        sess.since = since  # one reply to the client: its wait began with the first line
        return True

    def _buffer(self, state: int, sess: Session, data: bytes) -> int:
        """Keep input for later, bounded; the tail of an overlong line is dropped here."""
        if state & F_SKIP:  # then the buffer is empty: the skipped line comes first
            end = data.find(b"\n")
            if end < 0:
                return state
            data = data[end + 1 :]
            state &= ~F_SKIP
        buf = sess.buf
        if buf is None:
            sess.buf = buf = bytearray()
        room = PENDING_MAX - len(buf)
        if room > 0:
            buf += data[:room]
        return state

    def _next(self, state: int, sess: Session, age: float) -> tuple[int, Notes | None]:
        """Process pending input until one reply is queued or input runs out."""
        phase = state & PHASE
        if phase in (P_DONE, P_GREET) or sess.reply is not None:
            return state, None
        if self._expired(state, age):
            self._start(sess, self.r_expired)
            return (state | F_EXPIRED | F_CLOSE), None
        buf = sess.buf
        while buf:
            if state & PHASE == P_DATA:
                data = bytes(buf)
                buf.clear()
                state, rest = self._body(state, sess, data)
                buf += rest
                if sess.reply is not None:
                    break
                continue
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) <= LINE_MAX:
                    break
                buf.clear()
                state |= F_SKIP  # the rest of the line is dropped as it arrives
                state = self._abort_auth(state)
                self._start(sess, R_TOO_LONG)
                break
            line = bytes(buf[:end])
            del buf[: end + 1]
            if len(line) > LINE_MAX:
                state = self._abort_auth(state)
                self._start(sess, R_TOO_LONG)
                break
            if line.endswith(b"\r"):
                line = line[:-1]
            state, notes = self._line(state, sess, line)
            if sess.reply is not None or notes:
                if not buf:
                    sess.buf = None
                return state, notes
        if not buf:
            sess.buf = None
        return state, None

    @staticmethod
    def _abort_auth(state: int) -> int:
        if state & PHASE in (P_AUTH_PLAIN, P_AUTH_USER, P_AUTH_PASS):
            return (state & ~PHASE) | P_CMD
        return state

    def _body(self, state: int, sess: Session, data: bytes) -> tuple[int, bytes]:
        """Discard body bytes; at the final dot, queue the reply. Returns the input after it."""
        joined = sess.tail + data
        ends = [i for i in (joined.find(b"\n.\r\n"), joined.find(b"\n.\n")) if i >= 0]
        if not ends:
            sess.size += len(data)
            if sess.size > SIZE_MAX:
                state |= F_TOOBIG
                sess.size = SIZE_MAX + 1
            sess.tail = joined[-4:]
            return state, b""
        at = min(ends)
        stop = at + (4 if joined.startswith(b"\n.\r\n", at) else 3)
        sess.size += max(0, at - len(sess.tail))
        too_big = state & F_TOOBIG or sess.size > SIZE_MAX
        self._start(sess, R_TOO_BIG if too_big else R_QUEUE_ERR, BUDGET_END)
        sess.tail = b""
        sess.size = 0
        sess.nrcpt = 0
        state = (state & ~(PHASE | F_MAIL | F_RCPT | F_TOOBIG)) | P_CMD
        return state, joined[stop:]

    def _line(self, state: int, sess: Session, line: bytes) -> tuple[int, Notes | None]:
        """One complete line: a command, or an AUTH response."""
        phase = state & PHASE
        if phase in (P_AUTH_PLAIN, P_AUTH_USER, P_AUTH_PASS):
            return self._auth_response(state, sess, line.strip(b" "))
        verb, _, arg = line.strip(b" ").partition(b" ")
        verb = verb.upper()
        arg = arg.strip(b" ")
        handler = _COMMANDS.get(verb)
        if handler is None:
            printable = line.isascii() and line.translate(None, bytes(range(0x20, 0x7F))) == b""
            self._start(sess, R_UNKNOWN if printable and verb else R_BAD_SYNTAX)
            return state, None
        return handler(self, state, sess, arg)

    # -- commands: each queues exactly one reply ---------------------------

    def _cmd_ehlo(self, state: int, sess: Session, arg: bytes, ehlo: bool = True) -> Any:
        if not arg:
            self._start(sess, R_EHLO_SYNTAX if ehlo else R_HELO_SYNTAX)
            return state, None
        state = (state & ~(F_MAIL | F_RCPT | F_EHLO)) | F_HELO | (F_EHLO if ehlo else 0)
        sess.nrcpt = 0
        if not ehlo:
            self._start(sess, self.r_helo)
        elif self.offer_starttls and not state & F_TLS:
            self._start(sess, self.r_ehlo_starttls)
        else:
            self._start(sess, self.r_ehlo)
        return state, (("ehlo", sanitise(arg)),)

    def _cmd_helo(self, state: int, sess: Session, arg: bytes) -> Any:
        return self._cmd_ehlo(state, sess, arg, ehlo=False)

    def _cmd_mail(self, state: int, sess: Session, arg: bytes) -> Any:
        if not state & F_HELO:
            self._start(sess, R_NEED_HELO)
            return state, None
        if state & F_MAIL:
            self._start(sess, R_NESTED)
            return state, None
        parsed = _address(arg, b"FROM:")
        if parsed is None:
            self._start(sess, R_MAIL_SYNTAX)
            return state, None
        addr, params = parsed
        if addr and not _valid_address(addr):
            self._start(sess, R_BAD_SENDER)
            return state, None
        for param in params.split():
            key, _, value = param.partition(b"=")
            key = key.upper()
            if key not in _MAIL_PARAMS:
                self._start(sess, R_OPTION)
                return state, None
            if key == b"SIZE" and (not value.isdigit() or len(value) > 12):
                self._start(sess, R_MAIL_SYNTAX)
                return state, None
            if key == b"SIZE" and int(value) > SIZE_MAX:
                self._start(sess, R_TOO_BIG)
                return state, None
        self._start(sess, R_MAIL_OK)
        sess.nrcpt = 0
        return state | F_MAIL, (("mail_from", sanitise(addr)),)

    def _cmd_rcpt(self, state: int, sess: Session, arg: bytes) -> Any:
        if not state & F_MAIL:
            self._start(sess, R_NEED_MAIL)
            return state, None
        parsed = _address(arg, b"TO:")
        if parsed is None:
            self._start(sess, R_RCPT_SYNTAX)
            return state, None
        addr, params = parsed
        if not addr or not _valid_address(addr):
            self._start(sess, R_BAD_RCPT)
            return state, None
        if params:
            self._start(sess, R_OPTION)
            return state, None
        if sess.nrcpt >= RCPT_MAX:
            self._start(sess, R_TOO_MANY)
            return state, None
        sess.nrcpt += 1
        self._start(sess, R_RCPT_OK)
        text = sanitise(addr, 128).replace(",", "\\x2c")
        known = sess.rcpt.split(",") if sess.rcpt else []
        if text in known or len(known) >= RCPT_NOTED:
            return state | F_RCPT, None
        sess.rcpt = ",".join([*known, text])
        return state | F_RCPT, (("rcpt_to", sess.rcpt),)

    def _cmd_data(self, state: int, sess: Session, arg: bytes) -> Any:
        if arg:
            self._start(sess, R_DATA_SYNTAX)
        elif not state & F_MAIL:
            self._start(sess, R_NEED_RCPT)
        elif not state & F_RCPT:
            self._start(sess, R_NO_RCPT)
        else:
            self._start(sess, R_354, BUDGET_354)
            sess.tail = b"\n"  # the body starts at the beginning of a line
            sess.size = 0
            return (state & ~PHASE) | P_DATA, None
        return state, None

    def _cmd_rset(self, state: int, sess: Session, arg: bytes) -> Any:
        if arg:
            self._start(sess, R_RSET_SYNTAX)
            return state, None
        sess.nrcpt = 0
        self._start(sess, R_OK)
        return state & ~(F_MAIL | F_RCPT), None

    def _cmd_noop(self, state: int, sess: Session, arg: bytes) -> Any:
        self._start(sess, R_OK)
        return state, None

    def _cmd_vrfy(self, state: int, sess: Session, arg: bytes) -> Any:
        self._start(sess, R_VRFY if arg else R_VRFY_SYNTAX)
        return state, None

    def _cmd_help(self, state: int, sess: Session, arg: bytes) -> Any:
        self._start(sess, R_HELP)
        return state, None

    def _cmd_quit(self, state: int, sess: Session, arg: bytes) -> Any:
        self._start(sess, R_BYE)
        sess.buf = None
        return (state & ~PHASE) | P_DONE | F_CLOSE, None

    def _cmd_starttls(self, state: int, sess: Session, arg: bytes) -> Any:
        if state & F_TLS:
            self._start(sess, R_TLS_ACTIVE)
        elif not self.offer_starttls:
            self._start(sess, R_TLS_NONE)
        elif arg:
            self._start(sess, R_TLS_SYNTAX)
        elif not self.tls_room():
            self._start(sess, R_TLS_BUSY)
        else:
            # Sent whole (after one delay): clients such as `openssl s_client` read
            # this reply with one read() and take whatever follows for TLS.
            self._start(sess, R_TLS_READY)
            sess.step = len(R_TLS_READY)
            return state | F_STARTTLS, None
        return state, None

    def _cmd_auth(self, state: int, sess: Session, arg: bytes) -> Any:
        if not state & F_EHLO:
            self._start(sess, R_NEED_EHLO)
            return state, None
        if state & F_MAIL:
            self._start(sess, R_IN_MAIL)
            return state, None
        mech, _, initial = arg.partition(b" ")
        mech = mech.upper()
        initial = initial.strip(b" ")
        if not mech:
            self._start(sess, R_AUTH_SYNTAX)
            return state, None
        if mech not in (b"PLAIN", b"LOGIN"):
            self._start(sess, R_AUTH_MECH)
            return state, (("auth_mech", sanitise(mech, 32)),)
        notes: Notes = (("auth_mech", mech.decode()),)
        if mech == b"PLAIN":
            if not initial:
                self._start(sess, R_334_EMPTY)
                return (state & ~PHASE) | P_AUTH_PLAIN, notes
            return self._auth_response((state & ~PHASE) | P_AUTH_PLAIN, sess, initial, notes)
        if not initial:
            self._start(sess, R_334_USER)
            return (state & ~PHASE) | P_AUTH_USER, notes
        return self._auth_response((state & ~PHASE) | P_AUTH_USER, sess, initial, notes)

    def _auth_response(
        self, state: int, sess: Session, line: bytes, notes: Notes = ()
    ) -> tuple[int, Notes | None]:
        """A SASL response line: decode, note, then fail (or ask for the password)."""
        phase = state & PHASE
        cmd = (state & ~PHASE) | P_CMD
        if line == b"*":
            self._start(sess, R_AUTH_ABORT)
            return cmd, notes or None
        raw = _b64(line)
        if raw is None:
            self._start(sess, R_AUTH_DECODE)
            return cmd, notes or None
        if phase == P_AUTH_USER:
            self._start(sess, R_334_PASS)
            return (state & ~PHASE) | P_AUTH_PASS, (*notes, ("auth_user", sanitise(raw)))
        if phase == P_AUTH_PASS:
            password = raw
        else:  # PLAIN: authzid NUL authcid NUL passwd
            parts = raw.split(b"\x00")
            if len(parts) != 3:
                self._start(sess, R_AUTH_DECODE)
                return cmd, notes or None
            notes = (*notes, ("auth_user", sanitise(parts[1])))
            password = parts[2]
        if self.record_passwords:
            notes = (*notes, ("auth_pass", sanitise(password)))
        self._start(sess, R_AUTH_FAIL)
        return cmd, notes or None


_COMMANDS: dict[bytes, Callable[[SmtpBait, int, Session, bytes], tuple[int, Notes | None]]] = {
    b"EHLO": SmtpBait._cmd_ehlo,
    b"HELO": SmtpBait._cmd_helo,
    b"MAIL": SmtpBait._cmd_mail,
    b"RCPT": SmtpBait._cmd_rcpt,
    b"DATA": SmtpBait._cmd_data,
    b"RSET": SmtpBait._cmd_rset,
    b"NOOP": SmtpBait._cmd_noop,
    b"VRFY": SmtpBait._cmd_vrfy,
    b"HELP": SmtpBait._cmd_help,
    b"QUIT": SmtpBait._cmd_quit,
    b"STARTTLS": SmtpBait._cmd_starttls,
    b"AUTH": SmtpBait._cmd_auth,
}


def lesson(event: Event) -> tuple[str, float] | None:
    """What an SMTP departure teaches (``tarry.deadlines``): a client that left,
    on its own, while a reply was dripping had waited ``duration - since``
    for it at most; its address is then answered inside that. The software
    is not known before the greeting, so the lesson is the address's."""
    if event.reason not in ("closed", "reset"):
        return None
    try:
        since = float(event.note("replying_since", "-"))
    except ValueError:
        return None  # no reply was in flight: it left while we waited for it
    return "", event.duration - since


_STORE: DeadlineStore | None = None


def deadline_store() -> DeadlineStore:
    """The process-wide store that SMTP listeners share."""
    global _STORE
    if _STORE is None:
        _STORE = DeadlineStore(PROTOCOL, lesson)
        _STORE.enabled = True
    return _STORE


def sinks() -> list[Sink]:
    """What the greeting learns from departures (``BaitModule.sinks``)."""
    return [deadline_store()]


def make(spec: TarpitSpec) -> SmtpBait:
    return SmtpBait(spec)


BAIT = BaitModule(
    PROTOCOL,
    make,
    OPTIONS,
    DEFAULTS,
    default_listen=DEFAULT_LISTEN,
    check=check_tls,
    stateful_options=STATEFUL_OPTIONS,
    sinks=sinks,
)
