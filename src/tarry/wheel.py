"""The timer wheel: one timer for every client.

Buckets of fds keyed by due time, in quanta; a heap of the keys in use; and
one event-loop timer for the earliest key (``arm``). A client's row keeps the
key of its next tick (the table's ``due`` column, low 32 bits), so a client
that leaves or is rescheduled is skipped, never searched for and removed.
Buckets hold fds in 2 bytes each while every fd fits (typecode "H").
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Callable

QUANTUM_PARTS = 40  # buckets per shortest delay (see Engine.retune)
QUANTUM_MIN, QUANTUM_MAX = 0.001, 0.25
KEY_MASK = 0xFFFFFFFF
NO_TICK = KEY_MASK  # a wheel key's low 32 bits never come round to this while it matters


class Wheel:
    """``arm(when)`` asks the event loop for one wake-up at ``when`` (loop
    time), replacing the previous one; ``arm(None)`` cancels it."""

    def __init__(self, due: memoryview, fd_type: str, arm: Callable[[float | None], None]) -> None:
        self.due = due
        self.fd_type = fd_type
        self.arm = arm
        self.quantum = 0.01
        self.per_part = 1.0 / (QUANTUM_PARTS * self.quantum)
        self.buckets: dict[int, array[int]] = {}
        self.keys: list[int] = []  # a heap of the buckets' keys
        self.armed = -1  # the key the loop's timer is set for; -1 = none

    def key(self, due: float, wait: float = 0.0) -> int:
        """The bucket of ``due``, rounded up to a grid of quanta as coarse as a
        wait of ``wait`` seconds allows: the largest power of two that keeps it
        at most 1/QUANTUM_PARTS late. A short wait is rounded to one quantum; a
        10 s pace among 0.5 s ones (adaptive) to 16, so such clients share 40
        buckets a pace, not 800 (each bucket is an object and, when due, a
        wake-up). The engine's hot loop inlines this."""
        r = int(wait * self.per_part)
        if r > 1:
            m = 1 << (r.bit_length() - 1)
            return math.ceil(due / (self.quantum * m)) * m
        return math.ceil(due / self.quantum)

    def schedule(self, fd: int, due: float, wait: float = 0.0) -> None:
        """Tick ``fd`` at ``due`` (loop time), at most ``wait``/40 late."""
        key = self.key(due, wait)
        self.due[fd] = key & KEY_MASK
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = array(self.fd_type)
            heapq.heappush(self.keys, key)
            if self.armed < 0 or key < self.armed:
                self.armed = key
                self.arm(key * self.quantum)
        bucket.append(fd)

    def fired(self) -> None:
        """The loop's timer went off: it is no longer set."""
        self.armed = -1

    def limit(self, now: float) -> int:
        """The last key due at ``now`` (the loop may wake a hair early)."""
        return math.floor(now / self.quantum + 1e-6)

    def rearm(self) -> None:
        """After the due buckets were served: wake for the earliest left."""
        if self.keys:
            self.armed = self.keys[0]
            self.arm(self.armed * self.quantum)

    def set_quantum(self, quantum: float, holds: Callable[[int], bool]) -> None:
        """Re-sort every client still waiting (``holds(fd)``) onto a new grid."""
        if quantum == self.quantum:
            return
        old, old_quantum = self.buckets, self.quantum
        self.quantum = quantum
        self.per_part = 1.0 / (QUANTUM_PARTS * quantum)
        self.clear()
        for key, bucket in old.items():
            low = key & KEY_MASK
            for fd in bucket:
                if holds(fd) and self.due[fd] == low:
                    self.schedule(fd, key * old_quantum)

    def clear(self) -> None:
        """Forget every bucket and cancel the loop's timer."""
        self.buckets = {}
        self.keys = []
        if self.armed >= 0:
            self.armed = -1
            self.arm(None)


def quantum_for(shortest_waits: list[float]) -> float:
    """A fortieth of the shortest wait any bait may ask for, within bounds."""
    return min(QUANTUM_MAX, max(QUANTUM_MIN, min(shortest_waits, default=1.0) / QUANTUM_PARTS))
