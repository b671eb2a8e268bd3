"""The admin listener's guard: what an unauthenticated peer can make it hold.

The admin listener runs in the process, and on the loop, that holds every
trapped client. aiohttp alone would parse a request head of 128 header lines of
8 KB each, keep a silent connection open for an hour, and accept connections
until the process runs out of file descriptors, all before the token is
checked. So each connection passes through a ``Guard`` before aiohttp sees a
byte:

- at most ``MAX_CONNECTIONS`` at once, so the admin port can never take the
  tarpits' descriptors, and ``PER_ADDRESS`` from one address. When all are
  taken, a new connection evicts the one that has waited longest for its
  request head (or, failing that, one idle after its answer for over a
  second), so a flood of silent connections cannot lock out a scraper: it
  only makes each of its own connections shorter-lived;
- a request head (request line and headers) of at most ``HEAD_MAX`` bytes,
  counted before aiohttp buffers them; a longer one gets a 431 and is closed;
- a whole head within ``HEAD_TIMEOUT`` seconds of its first byte (or of the
  connection, for the first one); an idle keep-alive connection is closed
  after ``IDLE_TIMEOUT`` seconds (aiohttp's own keep-alive timer).

The admin API takes no request bodies: bytes after a head count towards the
next head. When a flood of connections is over, the heap is given back to
the system (``malloc_trim``), so a burst leaves no lasting cost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

from .heap import trim

MAX_CONNECTIONS = 64
PER_ADDRESS = 16
HEAD_MAX = 8192  # bytes of one request head: request line, headers, blank line
HEAD_TIMEOUT = 10.0  # seconds from the first byte of a head to its end
IDLE_TIMEOUT = 30.0  # seconds an idle keep-alive connection stays open
MAX_HEADERS = 32  # aiohttp's own caps, below its defaults (128, 8190, 8190)
MAX_FIELD = 4096
MAX_LINE = 4096
TRIM_AFTER = 16  # connections at once after which the heap is trimmed when they are gone

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)
_TOO_SLOW = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def aiohttp_limits() -> dict[str, Any]:
    """Keyword arguments for aiohttp's request handler: its caps under the guard's."""
    return {
        "max_headers": MAX_HEADERS,
        "max_field_size": MAX_FIELD,
        "max_line_size": MAX_LINE,
        "keepalive_timeout": IDLE_TIMEOUT,
        "lingering_time": 1.0,
    }


class Gate:
    """The count of open admin connections, shared by every ``Guard``."""

    def __init__(self, limit: int = MAX_CONNECTIONS, per_address: int = PER_ADDRESS) -> None:
        self.limit = limit
        self.per_address = per_address
        self.open = 0
        self.by_address: dict[str, int] = {}
        self.members: set[Guard] = set()
        self.peak = 0  # most open at once since the last trim
        self.refused = 0  # connections closed because ``limit`` were open
        self.cut = 0  # connections closed for a head too large or too slow
        self.evicted = 0  # connections closed to make room for a new one

    def enter(self, guard: Guard) -> bool:
        held = self.by_address.get(guard.address, 0)
        if held >= self.per_address or (self.open >= self.limit and not self._evict()):
            self.refused += 1
            return False
        self.by_address[guard.address] = held + 1
        self.open += 1
        self.members.add(guard)
        self.peak = max(self.peak, self.open)
        return True

    def _evict(self) -> bool:
        """Make room: close the connection waiting longest for a head, else one
        idle for over a second after its last answer. False when every one is
        busy with a request."""
        now = time.monotonic()
        waiting = [g for g in self.members if g.in_head]
        if not waiting:
            waiting = [g for g in self.members if now - g.since > 1.0]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda g: g.since)
        self.evicted += 1
        oldest.evict()
        return True

    def leave(self, guard: Guard, loop: asyncio.AbstractEventLoop) -> None:
        self.members.discard(guard)
        address = guard.address
        self.open -= 1
        held = self.by_address.pop(address, 1) - 1
        if held:
            self.by_address[address] = held
        if self.open == 0 and self.peak >= TRIM_AFTER:
            self.peak = 0
            loop.call_later(1.0, trim)  # after the handlers' buffers are freed


class Guard(asyncio.Protocol):
    """One connection's bounds, in front of aiohttp's protocol for it."""

    def __init__(self, inner: asyncio.Protocol, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate
        self.transport: asyncio.Transport | None = None
        self.head = 0  # bytes of the head being received
        self.tail = b""  # its last 3 bytes, to find a blank line split across reads
        self.heads = 0  # heads completed on this connection
        self.timer: asyncio.TimerHandle | None = None
        self.admitted = False  # aiohttp's protocol has the connection
        self.counted = False  # it holds a place in the gate
        self.address = ""
        self.in_head = True  # waiting for (the rest of) a request head
        self.since = time.monotonic()  # when ``in_head`` last changed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self.gate.enter(self):
            transport.abort()
            return
        self.admitted = self.counted = True
        self._start_timer()
        self.inner.connection_made(transport)

    def _start_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(HEAD_TIMEOUT, self._cut, _TOO_SLOW)

    def _cut(self, reply: bytes) -> None:
        """End a connection whose head broke a bound, politely if nothing else was said."""
        self.gate.cut += 1
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.heads == 0:
            transport.write(reply)
            transport.close()
        else:  # a response may be on its way: do not interleave with it
            transport.abort()

    def evict(self) -> None:
        """Leave the gate now (its place is taken at once), and close."""
        self._leave_gate()
        if self.transport is not None:
            self.transport.abort()

    def _leave_gate(self) -> None:
        if self.counted:
            self.counted = False
            self.gate.leave(self, asyncio.get_running_loop())

    def data_received(self, data: bytes) -> None:
        if not self.admitted or self.transport is None or self.transport.is_closing():
            return
        start = 0
        while start < len(data):
            if self.head == 0 and self.timer is None:
                self._start_timer()  # the first byte of a new head
                self.in_head, self.since = True, time.monotonic()
            end = _blank_line(self.tail, data, start)
            if end < 0:
                self.head += len(data) - start
                if self.head > HEAD_MAX:
                    self._cut(_TOO_LARGE)
                    return
                self.tail = (self.tail + data[start:])[-3:]
                break
            self.head += end - start
            if self.head > HEAD_MAX:
                self._cut(_TOO_LARGE)
                return
            self.heads += 1
            self.head, self.tail = 0, b""
            self.in_head, self.since = False, time.monotonic()
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            start = end
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._leave_gate()
        if self.admitted:
            self.admitted = False
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def _blank_line(tail: bytes, data: bytes, start: int) -> int:
    """The offset in ``data`` just past the first blank line (CRLF CRLF, or LF LF)
    at or after ``start``, with ``tail`` the bytes before ``start``; -1 if none."""
    window = tail + data[start:]
    best = -1
    for mark in (b"\r\n\r\n", b"\n\n"):
        i = window.find(mark)
        if i >= 0:
            stop = i + len(mark)
            best = stop if best < 0 else min(best, stop)
    if best < 0:
        return -1
    return start + best - len(tail) if best > len(tail) else start


def guarded(factory: Callable[[], asyncio.Protocol], gate: Gate) -> Callable[[], Guard]:
    """A protocol factory for ``loop.create_server``: ``factory``'s protocol behind a Guard."""
    return lambda: Guard(factory(), gate)
