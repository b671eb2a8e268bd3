"""The client table: one 32-byte row per possible fd, in typed columns.

Why columns: a tarpit waits 99.999% of the time, so memory per held client is
what counts. A row is a few machine words in anonymous memory; pages become
resident only when a row on them is first used, so the table costs what the
clients held use, and it never moves or leaves freed holes as it fills. A
worker gets columns its supervisor made before the fork (docs/workers.md), so
the supervisor reads them too.

What is rare or variable stays out of the row, in sparse maps: IPv6 peers,
counters past 2**32, accept times older than 24.8 days, and the notes, which
are interned (most clients reveal one of a few identification strings).
"""

from __future__ import annotations

import mmap
import resource
import socket
import struct
from array import array
from collections.abc import Callable
from typing import Any

from .events import Notes
from .wheel import KEY_MASK

AGE_REBASE = 1 << 31  # ms (24.8 days): older accept times are rebased by the sweep ...
SWEEP_EVERY = 6 * 86400.0  # ... which runs this often (seconds), well inside 2**32 ms

TABLE = (
    ("lst", "H"),  # listener index, 0 = no client on this fd
    ("t0", "I"),  # accept time: ms of the loop clock (CLOCK_MONOTONIC), mod 2**32; see age()
    ("due", "I"),  # wheel key of the next tick (low 32 bits); NO_TICK = none
    ("sent", "I"),  # bytes sent, low 32 bits (see ClientTable.high)
    ("recv", "I"),  # bytes received, low 32 bits
    ("state", "I"),  # the bait's state word
    ("note", "I"),  # notes id in the interner, 0 = none
    ("port", "H"),
    ("ip4", "I"),  # the peer's IPv4 address
)


def table_rows(fd_limit: int) -> int:
    """Rows for every fd the process may open (address space is cheap; only
    touched pages are memory), within reason when the limit is huge."""
    if fd_limit == resource.RLIM_INFINITY or fd_limit <= 0:
        return 1 << 22
    return min(fd_limit, 1 << 22)


def make_table(rows: int) -> dict[str, memoryview]:
    """The client table's columns, ``rows`` rows each (32 bytes a row)."""
    return {name: column(fmt, rows) for name, fmt in TABLE}


def column(fmt: str, rows: int) -> memoryview:
    """A zero-filled typed column in anonymous memory, shared with children
    forked later (MAP_SHARED, mmap's default), which is what lets a supervisor
    read a worker's table."""
    size = max(struct.calcsize(fmt) * rows, mmap.PAGESIZE)
    view: Any = memoryview(mmap.mmap(-1, size))  # cast() is typed for literal formats only
    return view.cast(fmt)  # type: ignore[no-any-return,unused-ignore]


def ms_age(t0: int, now: float) -> float:
    """Seconds from a table's accept time (32-bit milliseconds) to ``now``."""
    return ((int(now * 1000.0) - t0) & KEY_MASK) * 0.001


def pack_host(host: str) -> tuple[int, bytes | None]:
    """An address as the table keeps it: IPv4 as an int, else 16 bytes of IPv6."""
    if host.startswith("::ffff:") and "." in host:
        return int.from_bytes(socket.inet_aton(host[7:]), "big"), None
    if ":" in host:
        return 0, socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    return int.from_bytes(socket.inet_aton(host), "big"), None


def unpack_host(ip4: int, ip6: bytes | None, family: int = socket.AF_INET) -> str:
    """The text of a packed address; an IPv4 peer of a dual-stack (AF_INET6)
    listener is shown IPv4-mapped, as the socket (and endlessh) shows it."""
    if ip6 is not None:
        return socket.inet_ntop(socket.AF_INET6, ip6)
    dotted = socket.inet_ntoa(ip4.to_bytes(4, "big"))
    return "::ffff:" + dotted if family == socket.AF_INET6 else dotted


class Interner:
    """Reference-counted notes, so clients that revealed the same thing (most
    send one of a few SSH identification strings) share one tuple."""

    def __init__(self) -> None:
        self.ids: dict[Notes, int] = {}
        self.items: list[Notes | None] = [()]
        self.refs = array("I", [0])
        self.free: list[int] = []

    def acquire(self, notes: Notes) -> int:
        i = self.ids.get(notes)
        if i is None:
            if self.free:
                i = self.free.pop()
                self.items[i] = notes
                self.refs[i] = 0
            else:
                i = len(self.items)
                self.items.append(notes)
                self.refs.append(0)
            self.ids[notes] = i
        self.refs[i] += 1
        return i

    def release(self, i: int) -> None:
        if i == 0:
            return
        self.refs[i] -= 1
        if self.refs[i] == 0:
            notes = self.items[i]
            self.items[i] = None
            if notes is not None:
                del self.ids[notes]
            self.free.append(i)


class ClientTable:
    """The rows and their sparse extras, and what can be read from a row.

    ``ip6``, ``notes`` and ``publish_top`` may be given: a worker passes ones
    that also tell its supervisor (tarry.workers)."""

    def __init__(
        self,
        columns: dict[str, memoryview],
        ip6: dict[int, bytes] | None = None,
        notes: Interner | None = None,
        publish_top: Callable[[int], None] | None = None,
    ) -> None:
        self.columns = columns
        self.cap = min(len(columns[name]) for name, _ in TABLE)
        self.top = 0  # one past the highest fd used so far
        self.publish_top = publish_top
        self.lst = columns["lst"]
        self.t0 = columns["t0"]
        self.due = columns["due"]
        self.sent = columns["sent"]
        self.recv = columns["recv"]
        self.state = columns["state"]
        self.note = columns["note"]
        self.port = columns["port"]
        self.ip4 = columns["ip4"]
        self.ip6: dict[int, bytes] = {} if ip6 is None else ip6  # the rarer kind: a dict entry
        self.notes = Interner() if notes is None else notes
        self.high: dict[int, list[int]] = {}  # fd -> [sent_hi, recv_hi] beyond 2**32
        self.since: dict[int, float] = {}  # fd -> accept time of clients held > 24.8 days

    def take(self, fd: int) -> None:
        """``fd`` is about to get a row: the rows in use reach it."""
        if fd >= self.top:
            self.top = fd + 1
            if self.publish_top is not None:
                self.publish_top(self.top)

    def clients(self) -> list[int]:
        lst = self.lst
        return [fd for fd in range(self.top) if lst[fd]]

    def host(self, fd: int, family: int) -> str:
        """The peer's address; ``family`` is its listener's."""
        return unpack_host(self.ip4[fd], self.ip6.get(fd), family)

    def counters(self, fd: int) -> tuple[int, int]:
        """Bytes (sent, received), exact past 2**32."""
        hi = self.high.get(fd)
        if hi is None:
            return self.sent[fd], self.recv[fd]
        return self.sent[fd] + hi[0], self.recv[fd] + hi[1]

    def count(self, col: memoryview, which: int, fd: int, n: int) -> None:
        """Add ``n`` to a 32-bit counter column (``which``: 0 sent, 1 received)."""
        v = col[fd] + n
        if v > 0xFFFFFFFF:
            hi = self.high.setdefault(fd, [0, 0])
            hi[which] += v & ~0xFFFFFFFF
            v &= 0xFFFFFFFF
        col[fd] = v

    def age(self, fd: int, now: float) -> float:
        """Seconds since ``fd`` was accepted. The row keeps the accept time in
        32-bit milliseconds (4 bytes a client less than a double), which count
        ages up to 49.7 days; the sweep keeps the exact time of the rare client
        held longer than 24.8 days aside, and rebases its row, so this stays
        exact and the age the timer hands a bait (from the row alone) stays at
        24.8 to 31 days for such a client, never wrapping back to a young one's."""
        since = self.since.get(fd) if self.since else None
        if since is not None:
            return now - since
        return ms_age(self.t0[fd], now)

    def sweep(self, now: float) -> None:
        """Rebase the accept times of clients held past AGE_REBASE (every SWEEP_EVERY)."""
        now_ms = int(now * 1000.0)
        t0 = self.t0
        for fd in self.clients():
            held = (now_ms - t0[fd]) & KEY_MASK
            if held >= AGE_REBASE:
                self.since.setdefault(fd, now - held * 0.001)
                t0[fd] = (now_ms - AGE_REBASE) & KEY_MASK

    def notes_of(self, fd: int) -> Notes:
        return self.notes.items[self.note[fd]] or ()

    def forget(self, fd: int) -> None:
        """Clear a row and its extras (the fd itself is the caller's)."""
        self.lst[fd] = 0
        self.notes.release(self.note[fd])
        self.note[fd] = 0
        self.high.pop(fd, None)
        self.since.pop(fd, None)
        self.ip6.pop(fd, None)

    def longest_held(self, now: float, limit: int) -> list[int]:
        return sorted(self.clients(), key=lambda fd: -self.age(fd, now))[:limit]
