"""The seam between the engine and the protocol baits.

A bait is sans-I/O: it never touches a socket or a clock. The engine calls it
with bytes and elapsed time and gets back a `Step`: what to send now, when to be
called again, and what it learned. The engine owns every file descriptor.

Per-client state must stay tiny, because a tarpit holds tens of thousands of
clients that do nothing. So a bait keeps no object per client by default: the
engine stores one unsigned 32-bit ``state`` word per client, plus an optional
``obj`` only while the bait really needs one (a partial request line, a TLS
session). One bait instance serves every client of a listener, so it must keep
no per-client data on ``self``.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from .events import Sink

STATE_MAX = 0xFFFFFFFF
NOTE_MAX = 256  # longest note value kept, after sanitising

Notes = tuple[tuple[str, str], ...]
RawNotes = tuple[tuple[str, str | bytes], ...]
"""What a bait reports: values raw as the peer sent them, sanitised by the engine."""


class Step(NamedTuple):
    """What a bait wants done for one client after one call."""

    state: int = 0
    """The client's new state word (0 .. 2**32-1)."""
    out: bytes = b""
    """Bytes to send now. Keep it to one unit (a line, a byte, a record): the
    engine buffers at most this much per client when the peer does not read."""
    delay: float | None = None
    """Seconds until the next ``tick``. None sets no new timer; a pending one
    stays pending (after a tick none is pending, so the bait waits for input)."""
    obj: Any = None
    """A per-client object to keep until the next call (None keeps none)."""
    close: bool = False
    """Close the connection once ``out`` is sent."""
    notes: RawNotes | None = None
    """(key, value) pairs learned about the client; a key replaces its old
    value. Bytes are raw peer data, which the engine sanitises; a str is the
    bait's own text or `sanitise`'s output, which it only bounds (`note_text`)."""
    starttls: bool = False
    """Start a server-side TLS handshake right after ``out`` is sent in clear.
    Only meaningful under the TLS layer, which consumes it."""


class Bait(Protocol):
    """One per listener; serves all of that listener's clients. Subclass
    `BaitBase` for the defaults of the optional parts."""

    protocol: str
    shortest: float
    """The shortest wait it may ask for (inf: none shorter than the tarpit's
    delay). The engine's timer wheel rounds every wait up by a fortieth of it."""

    def open(self, peer: str) -> Step:
        """A client was accepted from IP address ``peer`` (IPv4 shown as IPv4)."""
        ...

    def feed(self, state: int, obj: Any, data: bytes, age: float) -> Step:
        """The client sent ``data`` (a bounded chunk); ``age`` is seconds since accept."""
        ...

    def tick(self, state: int, obj: Any, age: float) -> Step:
        """The delay the bait asked for has passed."""
        ...

    def tls_attached(self, implicit: bool, room: Callable[[], bool]) -> None:
        """The TLS layer (tarry.tls) wraps this bait: ``implicit`` TLS from the
        first byte, or STARTTLS allowed; ``room()`` says whether one more
        client may start TLS now."""
        ...


class BaitBase:
    """The optional parts of a `Bait`, for baits to inherit."""

    shortest: float = math.inf

    def tls_attached(self, implicit: bool, room: Callable[[], bool]) -> None:
        """Most baits have no use for TLS in clear: nothing to do."""


def shortest(bait: Bait, delay: float) -> float:
    """The shortest wait ``bait`` may ask for under a tarpit's ``delay``."""
    return min(delay, bait.shortest)


def positive_min(*values: float) -> float:
    return min(v for v in values if v > 0)


MAX_SECONDS = 7 * 86400.0
"""The longest wait any option may set. Timer-wheel keys are kept mod 2**32
quanta of at least 1 ms (49 days), so waits must stay well short of that;
a week is far past any useful delay."""
MAX_COUNT = 2**31 - 1  # the largest count (clients, lines): endlessh's MaxClients


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def shown(value: Any, limit: int = 40) -> str:
    """``repr`` for an error line, cut short: a config value may be 4,000 digits."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Bounds:
    """The numbers an option accepts. Every numeric option declares its bounds,
    so that no value (inf, nan, 1e308) can reach a timer it would overflow."""

    low: float
    high: float
    above: bool = False  # ``low`` itself is refused ("greater than 0")
    below: bool = False  # ``high`` itself is refused ("up to (not including) 1")
    unit: str = ""  # e.g. " seconds", after the upper bound

    def text(self) -> str:
        low, high = _number(self.low), _number(self.high) + self.unit
        if self.above:
            return f"greater than {low} and " + (
                f"less than {high}" if self.below else f"at most {high}"
            )
        if self.below:
            return f"from {low} up to (not including) {high}"
        return f"from {low} to {high}"

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value``, or None; only numbers are looked at."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number {self.text()}"
        if (
            value < self.low
            or value > self.high
            or (self.above and value == self.low)
            or (self.below and value == self.high)
        ):
            return f"must be {self.text()}"
        return None


def is_numeric(kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return int in kinds or float in kinds


@dataclass(frozen=True)
class Option:
    """A protocol-specific key of a ``[[tarpit]]`` table.

    ``check`` returns an error text (what is wrong with the value) or None; it
    runs after ``bounds``, which every numeric option must declare.
    """

    default: Any
    kind: type | tuple[type, ...]
    help: str
    check: Callable[[Any], str | None] | None = None
    bounds: Bounds | None = None

    def __post_init__(self) -> None:
        if is_numeric(self.kind) and self.bounds is None:
            raise TypeError(f"a numeric option declares its bounds ({self.help!r})")


@dataclass
class TarpitSpec:
    """A validated ``[[tarpit]]`` table, as handed to a bait factory."""

    protocol: str
    listen: list[str]
    delay: float
    max_clients: int
    jitter: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    # engine-side limits and framing (docs/deploy.md); baits need not look at them
    max_clients_per_ip: int = 0  # 0 = no cap (the config file's default is 64)
    per_ip_action: str = "close"  # past the cap: "close" at once, or "backlog"
    proxy_protocol: bool = False  # a PROXY v1/v2 header precedes each connection
    proxy_timeout: float = 5.0  # seconds to wait for that header

    def opt(self, key: str) -> Any:
        return self.options[key]

    @property
    def mode(self) -> str:
        """The bait's ``mode`` (SSH) or ``strategy`` (HTTP), as the LISTEN line
        names it; "" for a bait that has one way only."""
        return str(self.options.get("mode") or self.options.get("strategy") or "")


LearnRow = tuple[str, float, str, dict[str, str]]  # ip, duration, reason, notes


class LearningSource(Protocol):
    """What a history store offers what baits learn about addresses."""

    shared: bool
    """Other hosts write to it too (PostgreSQL): `fleet_rows` has news."""

    def learning_rows(self, since: float, limit: int) -> list[LearnRow]:
        """The newest ``limit`` departures that ended after ``since``, oldest first."""
        ...

    def fleet_rows(self, limit: int) -> list[LearnRow]:
        """What other hosts stored since the last read, oldest first."""
        ...

    def learning_done(self) -> None:
        """The learner stops reading: let go of what it read with."""
        ...


def _no_sinks() -> list[Sink]:
    return []


@dataclass(frozen=True)
class BaitModule:
    """Everything a protocol may provide, each optional part with its default.

    A built-in protocol is a module of ``tarry.baits`` that names one as
    ``BAIT``; a plugin's is the object its entry point in the group
    ``tarry.baits`` points at (docs/baits.md)."""

    protocol: str
    make: Callable[[TarpitSpec], Bait]
    options: Mapping[str, Option] = field(default_factory=dict)
    """Its own keys of a ``[[tarpit]]`` table."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Overrides of the common keys' defaults (delay, ...)."""
    default_listen: tuple[str, ...] = ()
    """Where it listens when a table names no ``listen``."""
    check: Callable[[dict[str, Any]], str | None] | None = None
    """A check across options, after each one passed its own: an error text or None."""
    stateful_options: tuple[str, ...] = ()
    """Options that give the state word its meaning: a reload that changes one
    of them starts a new listener instead of handing over the clients."""
    sinks: Callable[[], list[Sink]] = _no_sinks
    """Event sinks the protocol wants on the bus (what it learns from departures)."""
    use_history: Callable[[LearningSource, float, int, float, bool], None] | None = None
    """Backs what it learns with the history store (tarry.observe.learn_from)."""


def jittered(delay: float, jitter: float, rand: Callable[[], float] = random.random) -> float:
    """``delay`` spread by +/- ``jitter`` (a fraction), so clients drift out of lockstep."""
    if jitter <= 0.0:
        return delay
    return delay * (1.0 + jitter * (2.0 * rand() - 1.0))


_PRINTABLE = bytes(range(0x20, 0x7F))
_ESC = {i: f"\\x{i:02x}" for i in range(256) if i < 0x20 or i >= 0x7F}
_ESC[ord("\\")] = "\\\\"


def sanitise(value: bytes | str, limit: int = NOTE_MAX) -> str:
    """Printable ASCII only, bounded: peer data goes into logs and databases.

    A backslash always starts an escape (``\\\\`` or ``\\xNN``), so the bytes can
    be told back exactly; the bound therefore drops an escape whole rather
    than keep half of one."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    raw = value[:limit]
    if not raw.translate(None, _PRINTABLE) and b"\\" not in raw:
        return raw.decode("ascii")
    out: list[str] = []
    room = limit
    for b in raw:
        part = _ESC.get(b) or chr(b)
        room -= len(part)
        if room < 0:
            break
        out.append(part)
    return "".join(out)


def note_text(value: bytes | str) -> str:
    """A note value as stored. Raw bytes are sanitised; text that is printable
    ASCII already (the bait's own, or `sanitise`'s output) is kept as it is,
    because sanitising it again would escape its escapes: a byte 0xC3 must be
    stored as ``\\xc3`` whichever bait saw it, never as ``\\\\xc3``."""
    if isinstance(value, str) and value.isascii() and value.isprintable():
        if len(value) <= NOTE_MAX:
            return value
        # cut as sanitise does: an escape goes whole or not at all
        ends = (m.end() for m in _TOKEN.finditer(value, 0, NOTE_MAX + 4))
        return value[: max((e for e in ends if e <= NOTE_MAX), default=0)]
    return sanitise(value)


_TOKEN = re.compile(r"\\x[0-9a-fA-F]{2}|\\\\|.", re.DOTALL)
