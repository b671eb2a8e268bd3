"""What the database baits (redis, mysql, postgresql) share: one reply in flight,
dripped from the state word, and a bounded buffer for input not yet understood.

Theory of operation. A database client holds still while a reply arrives, so
almost every held client is in one of two places: waiting for a reply that
drips, or (a scanner) saying nothing. Both must cost no object, because the
target is at most twice an SSH banner client's memory (about 60 B). So the
reply in flight is named by the state word: a static reply by its index in the
bait's table and the bytes already sent. Only the rarer cases cost a ``Conn``:
a reply made for this client, or the user name a later denial will quote
(clients that came to log in), and input that arrived in pieces or while a
reply was dripping.

State word (32 bits)::

    bits  0-3   phase (the bait's own)
    bits  4-8   reply id: 0 none, 1..30 the bait's static replies, 31 the Conn's
    bits  9-24  bytes of the reply already sent (replies are shorter than 64 KiB)
    bits 25-30  the bait's own flags (6)
    bit  31     close once the reply in flight is sent

A reply's first segment is its head, sent whole: the part a client or scanner
judges it by (a RESP type and error code, a MySQL packet header and version,
a PostgreSQL error's SQLSTATE). What follows drips ``step`` bytes a tick. The
head goes one delay after the reply starts, unless the bait's ``first_wait``
says sooner (a greeting, or a step a total deadline must not swallow).
"""

from __future__ import annotations

from typing import Any

from ..bait import BaitBase, Notes, Step, TarpitSpec, jittered

PHASE = 0xF
RID_SHIFT, RID_MASK = 4, 0x1F
POS_SHIFT, POS_MAX = 9, 0xFFFF
FLAG_SHIFT = 25
OWN = RID_MASK  # reply id: the reply is the Conn's own
REPLY_BITS = (RID_MASK << RID_SHIFT) | (POS_MAX << POS_SHIFT)

INPUT_MAX = 4096  # bytes of input kept while not understood yet (a command, a packet)


def flag(n: int) -> int:
    """The bait's flag ``n`` (0..5) in the state word."""
    assert 0 <= n < 6
    return 1 << (FLAG_SHIFT + n)


F_CLOSE = 1 << (FLAG_SHIFT + 6)  # close once the reply in flight is sent


class Conn:
    """The rare per-client object: input not understood yet, or a reply made
    for this client. Both are bounded."""

    __slots__ = ("buf", "memo", "reply")

    def __init__(self) -> None:
        self.buf = b""  # at most INPUT_MAX
        self.reply = b""  # the reply in flight when its id is OWN
        self.memo = b""  # what the bait keeps for a later reply (a user name), bounded


def conn(obj: Any) -> Conn:
    return obj if isinstance(obj, Conn) else Conn()


def kept(c: Conn) -> Conn | None:
    """The Conn, or None once it holds nothing (so the client costs no object)."""
    return c if c.buf or c.reply or c.memo else None


def keep(c: Conn, data: bytes) -> bool:
    """Append ``data`` to the input, bounded; False when it would pass INPUT_MAX
    (then nothing is kept: the bait answers as the server would, and closes)."""
    if len(c.buf) + len(data) > INPUT_MAX:
        c.buf = b""
        return False
    c.buf += data
    return True


class DripBait(BaitBase):
    """A bait whose replies drip from the state word. A subclass fills
    ``replies`` (static replies, index = reply id) and implements ``head``,
    ``take`` (input while no reply drips) and ``after`` (a reply is done)."""

    protocol = ""

    def __init__(self, spec: TarpitSpec, step: int = 1) -> None:
        self.delay = float(spec.delay)
        self.jitter = float(spec.jitter)
        self.step = step
        self.record = bool(spec.opt("record_credentials"))
        self.replies: list[bytes] = [b""]
        self.errors = 0  # bugs caught by the safety net; tests require 0

    def static(self, reply: bytes) -> int:
        """Register a static reply; its id."""
        self.replies.append(reply)
        assert len(self.replies) < OWN and len(reply) <= POS_MAX
        return len(self.replies) - 1

    def head(self, reply: bytes) -> int:
        """Bytes at the start of ``reply`` that go in one segment."""
        return 1

    def wait(self) -> float:
        return jittered(self.delay, self.jitter)

    # -- a reply in flight ---------------------------------------------------

    def say(self, state: int, c: Conn, reply: int | bytes, notes: Notes | None = None) -> Step:
        """Start ``reply`` (a static id or this client's bytes); its head goes at the next tick."""
        if isinstance(reply, bytes):
            c.reply = reply[:POS_MAX]
            reply = OWN
        first = self.first_wait(c.reply if reply == OWN else self.replies[reply])
        state = (state & ~REPLY_BITS) | (reply << RID_SHIFT)
        return Step(state, b"", first, kept(c), notes=notes)

    def first_wait(self, reply: bytes) -> float:
        """Seconds before ``reply``'s head: one delay, unless the bait knows better."""
        return self.wait()

    def tick(self, state: int, obj: Any, age: float) -> Step:
        try:
            return self._tick(state, obj, age)
        except Exception:
            return self.broken(state)

    def feed(self, state: int, obj: Any, data: bytes, age: float) -> Step:
        try:
            c = conn(obj)
            if state & F_CLOSE:
                return Step(state, b"", None, obj)  # closing: input is ignored
            if (state >> RID_SHIFT) & RID_MASK:  # a reply drips: keep the input for later
                if len(c.buf) + len(data) <= INPUT_MAX:
                    c.buf += data
                # else the flood is dropped: the reply in flight must not be cut short
                return Step(state, b"", None, kept(c))
            return self.take(state, c, data, age)
        except Exception:
            return self.broken(state)

    def _tick(self, state: int, obj: Any, age: float) -> Step:
        c = conn(obj)
        rid = (state >> RID_SHIFT) & RID_MASK
        if not rid:  # a timer the bait asked for with no reply: its own
            return self.after(state, c, b"", age)
        reply = c.reply if rid == OWN else self.replies[rid]
        pos = (state >> POS_SHIFT) & POS_MAX
        end = max(self.head(reply), self.step) if pos == 0 else pos + self.step
        out = reply[pos:end]
        if end < len(reply):
            state = (state & ~(POS_MAX << POS_SHIFT)) | (end << POS_SHIFT)
            return Step(state, out, self.wait(), kept(c))
        c.reply = b""
        if state & F_CLOSE:
            return Step(state & ~REPLY_BITS, out, None, None, close=True)
        return self.after(state & ~REPLY_BITS, c, out, age)

    def after(self, state: int, c: Conn, out: bytes, age: float) -> Step:
        """The reply ended with ``out`` (or a timer with no reply fired): go on
        with buffered input, or wait. Subclasses decide."""
        if c.buf:
            data, c.buf = c.buf, b""
            step = self.take(state, c, data, age)
            return step._replace(out=out + step.out)
        return Step(state, out, None, kept(c))

    def take(self, state: int, c: Conn, data: bytes, age: float) -> Step:
        """Input while no reply drips."""
        raise NotImplementedError

    def broken(self, state: int) -> Step:
        """The safety net: a bug here must not reach the engine."""
        self.errors += 1
        return Step(state & ~REPLY_BITS, b"", None, None, close=True)
