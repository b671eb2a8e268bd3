"""One event type, from the engine to every sink.

Events are plain data (picklable, no references into the engine), made only on
connect, close and totals, never per line sent. Sinks must not block the event
loop: one that does I/O buffers within a bound and reports what it drops.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .net import unmapped

Notes = tuple[tuple[str, str], ...]

ACCEPT = "accept"
CLOSE = "close"
TOTALS = "totals"


@dataclass(slots=True)
class Event:
    kind: str
    """``accept``, ``close`` or ``totals``."""
    time: float
    """Wall-clock seconds since the epoch."""
    proto: str = ""
    listener: str = ""
    """The listener's address as configured, e.g. ``[::]:2222``."""
    host: str = ""
    """The peer address as the socket reports it (``::ffff:1.2.3.4`` on a
    dual-stack listener): the endlessh log shape."""
    port: int = 0
    fd: int = -1
    clients: int = 0
    """accept: clients held by the listener now, this one included."""
    max_clients: int = 0
    duration: float = 0.0
    """close: seconds held; totals: seconds held, summed."""
    sent: int = 0
    received: int = 0
    reason: str = ""
    """close: ``closed``, ``reset``, ``write-timeout``, ``bait``, ``shutdown``,
    ``reload``, ``error``."""
    notes: Notes = ()
    """What the bait learned (SSH identification, HTTP request, SMTP envelope)."""
    connects: int = 0
    """totals: connections accepted."""
    country: str = ""
    """ISO 3166 alpha-2 code of the peer, filled in by the country tagger
    (the first sink) when a lookup is configured; empty when unknown."""

    @property
    def ip(self) -> str:
        """The peer address with IPv4 shown as IPv4."""
        h = self.host
        return unmapped(h)

    def note(self, key: str, default: str = "") -> str:
        for k, v in self.notes:
            if k == key:
                return v
        return default


class Counted(Protocol):
    """What the metrics read of anything that buffers events and may drop them."""

    @property
    def name(self) -> str:
        """A short name for messages and the ``sink`` label of the metrics."""
        ...

    @property
    def dropped(self) -> int:
        """Events dropped because its buffer was full."""
        ...

    @property
    def failed(self) -> int:
        """Events its writer could not write."""
        ...

    @property
    def stuck(self) -> bool:
        """It stopped draining: nothing waits for it (tarry.sinks.STALL_LIMIT)."""
        ...


class Sink(Counted, Protocol):
    """What the bus and the metrics may ask of a sink; ``BaseSink`` has defaults."""

    buffered: bool
    """It keeps events in a buffer of its own: its ``Counted`` figures are exported."""

    def emit(self, event: Event) -> None:
        """Take one event; never block."""
        ...

    def full(self, most: int = 2048) -> bool:
        """Whether a producer that can wait (accepts) should, for now."""
        ...

    def close(self) -> None:
        """Flush what is buffered; called once at shutdown."""
        ...


class BaseSink:
    """A sink that only counts or tags in memory: never full, nothing to drop."""

    name = "sink"
    buffered = False
    dropped = 0
    failed = 0
    stuck = False

    def emit(self, event: Event) -> None:
        raise NotImplementedError

    def full(self, most: int = 2048) -> bool:
        return False

    def close(self) -> None:
        """Nothing buffered, nothing to flush."""


class Bus:
    """Fans every event out to every sink; a failing sink never stops the others."""

    def __init__(self, sinks: Iterable[Sink] = ()) -> None:
        self.sinks: list[Sink] = list(sinks)
        self.errors = 0

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception as exc:  # a sink's bug must not reach the engine
                self.errors += 1
                print(f"tarry: sink {type(sink).__name__} failed: {exc!r}", file=sys.stderr)

    def behind(self, most: int = 2048) -> bool:
        """Whether a sink holds ``most`` events (or half its buffer): producers
        that can wait should. An engine accepting a burst lets a sink buffer
        2,048 events first; the workers' supervisor, whose events can wait in
        the workers as compact frames, fewer."""
        return any(sink.full(most) for sink in self.sinks)

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                print(f"tarry: sink {type(sink).__name__} failed: {exc!r}", file=sys.stderr)


def stamp(t: float) -> str:
    """endlessh's timestamp: UTC, milliseconds, ``Z``."""
    ms = int(t * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def millis(seconds: float) -> str:
    """Seconds with milliseconds, truncated as endlessh does."""
    ms = int(seconds * 1000)
    return f"{ms // 1000}.{ms % 1000:03d}"


# Space, '"' and '=' are the characters that could end a value early or start
# a field of its own; written as escapes, they cannot. Control characters too,
# though sanitised values never hold them: a line must stay one line.
_LINE_ESC = {c: f"\\x{c:02x}" for c in (*range(0x21), 0x7F, ord('"'), ord("="))}


def logfmt(value: str) -> str:
    """``value`` as one bare logfmt token, ``""`` when empty.

    Values come sanitised (printable ASCII, ``\\\\`` and ``\\xNN`` escapes), so
    writing space, ``"`` and ``=`` as ``\\x20``, ``\\x22`` and ``\\x3d`` keeps them
    unambiguous. Peers choose these values, and fail2ban and CrowdSec search the
    whole line: no value may hold a separator, or a peer could forge
    ``ACCEPT host=`` records inside its own line and choose who gets banned.
    """
    return value.translate(_LINE_ESC) if value else '""'


def listen_line(proto: str, listener: str, delay: float, max_clients: int, mode: str) -> str:
    """The line each listener announces at start-up, with its mode when it has one."""
    shown = f" mode={mode}" if mode else ""
    return (
        f"{stamp(time.time())} LISTEN proto={proto} listener={listener} "
        f"delay={delay:g} max_clients={max_clients}{shown}"
    )


def endlessh_line(event: Event, extra: bool) -> str:
    """The endlessh log line for ``event``; with ``extra``, tarry's fields follow.

    Only SSH clients are endlessh clients. Another protocol's record names it
    first and calls the address ``peer`` (``ACCEPT proto=http peer=...``), so
    that no endlessh pattern, all of which want ``host=``, matches it: an
    endlessh jail never bans a web crawler or a mail sender. An operator who
    wants those banned deploys contrib/fail2ban's tarry-http or tarry-smtp."""
    ssh = event.proto in ("", "ssh")
    who = "host=" if ssh else f"proto={event.proto} peer="
    if event.kind == ACCEPT:
        body = (
            f"ACCEPT {who}{event.host} port={event.port} fd={event.fd} "
            f"n={event.clients}/{event.max_clients}"
        )
    elif event.kind == CLOSE:
        body = (
            f"CLOSE {who}{event.host} port={event.port} fd={event.fd} "
            f"time={millis(event.duration)} bytes={event.sent}"
        )
    else:
        return (
            f"{stamp(event.time)} TOTALS connects={event.connects} "
            f"seconds={millis(event.duration)} bytes={event.sent}"
        )
    line = f"{stamp(event.time)} {body}"
    if extra:
        fields = [("listener", event.listener)]
        if ssh:
            fields.insert(0, ("proto", event.proto))
        if event.kind == CLOSE:
            fields += [("received", str(event.received)), ("reason", event.reason)]
            if event.country:
                fields.append(("country", event.country))
            fields += list(event.notes)
        line += "".join(f" {k}={logfmt(v)}" for k, v in fields)
    return line
