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

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

STATE_MAX = 0xFFFFFFFF
NOTE_MAX = 256  # longest note value kept, after sanitising

Notes = tuple[tuple[str, str], ...]


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
    notes: tuple[tuple[str, str | bytes], ...] | None = None
    """(key, value) pairs learned about the client; a key replaces its old
    value. Bytes are raw peer data, which the engine sanitises; a str is the
    bait's own text or `sanitise`'s output, which it only bounds (`note_text`)."""
    starttls: bool = False
    """Start a server-side TLS handshake right after ``out`` is sent in clear.
    Only meaningful under the TLS layer, which consumes it."""


class Bait(Protocol):
    """One per listener; serves all of that listener's clients."""

    protocol: str

    def open(self, peer: str) -> Step:
        """A client was accepted from IP address ``peer`` (IPv4 shown as IPv4)."""
        ...

    def feed(self, state: int, obj: Any, data: bytes, age: float) -> Step:
        """The client sent ``data`` (a bounded chunk); ``age`` is seconds since accept."""
        ...

    def tick(self, state: int, obj: Any, age: float) -> Step:
        """The delay the bait asked for has passed."""
        ...


def shortest(bait: object, delay: float) -> float:
    """The shortest wait ``bait`` may ask for: its ``shortest`` attribute, when
    it has waits shorter than the tarpit's ``delay`` (the engine's timer wheel
    rounds every wait up by a fortieth of the shortest)."""
    return min(delay, float(getattr(bait, "shortest", delay)))


def positive_min(*values: float) -> float:
    return min(v for v in values if v > 0)


@dataclass(frozen=True)
class Option:
    """A protocol-specific key of a ``[[tarpit]]`` table.

    ``check`` returns an error text (what is wrong with the value) or None.
    """

    default: Any
    kind: type | tuple[type, ...]
    help: str
    check: Callable[[Any], str | None] | None = None


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


class BaitModule(Protocol):
    """What a module in ``tarry.baits`` provides; one file per protocol."""

    PROTOCOL: str
    DEFAULTS: Mapping[str, Any]  # overrides of the common keys (delay, ...)
    OPTIONS: Mapping[str, Option]

    def make(self, spec: TarpitSpec) -> Bait: ...


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
