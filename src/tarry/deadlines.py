"""What each address's tools would wait for, learned from how they left.

Many tools cap one exchange by a total deadline, whatever the server drips: a
directory buster's per-request timeout, a brute-forcer's wait for a reply. A
tarpit that answers past it loses the tool at the deadline, and often the
whole run. One that answers just inside it, with a cheap and plausible reply
(a 404, a failed login), sends the tool on to its next word, and holds it
again. When a tool's family is not known, its deadline is learned: a client
that left a streamed (never-ending) answer after ``d`` seconds will, from the
same address and with the same software, be answered at ``SHARE`` of ``d``.

A ``DeadlineStore`` is an event sink: it reads the CLOSE events of one
protocol, asks the bait's ``lesson`` what each one teaches, and keeps at most
``cap`` (address, software) pairs, least recently used dropped first, as one
small int each.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

from .events import CLOSE, BaseSink, Event

SHARE = 0.8  # answer at this share of a learned deadline
LEARN_MIN = 1.0  # seconds: a departure sooner than this teaches nothing
LEARN_MAX = 600.0  # nor one later than this (tenths fit in 13 bits)

Lesson = Callable[[Event], "tuple[str, float] | None"]


def software_key(text: str | bytes | None) -> int:
    """A 32-bit key for the software a peer named (a User-Agent, an EHLO name)."""
    if text is None:
        return 0
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    return zlib.crc32(raw)


class DeadlineStore(BaseSink):
    """Learned deadlines per (address, software key)."""

    def __init__(self, proto: str, lesson: Lesson, cap: int = 65536) -> None:
        self.proto = proto
        self.name = f"{proto}-deadlines"
        self.lesson = lesson
        self.cap = cap
        self.enabled = False
        self._learned: dict[tuple[str, int], int] = {}  # -> tenths of a second
        self._by_ip: dict[str, int] = {}  # how many keys each address has

    def __len__(self) -> int:
        return len(self._learned)

    def emit(self, event: Event) -> None:
        if not self.enabled or event.kind != CLOSE or event.proto != self.proto:
            return
        taught = self.lesson(event)
        if taught is None:
            return
        software, seconds = taught
        if not (math.isfinite(seconds) and LEARN_MIN <= seconds <= LEARN_MAX):
            return
        self.learn(event.ip, software_key(software), seconds)

    def learn(self, ip: str, key: int, seconds: float) -> None:
        k = (ip, key)
        old = self._learned.pop(k, None)
        tenths = round(seconds * 10)
        if old is not None:
            tenths = min(old, tenths)  # the shortest patience seen wins
        else:
            self._by_ip[ip] = self._by_ip.get(ip, 0) + 1
        self._learned[k] = tenths
        if len(self._learned) > self.cap:
            (gone_ip, _), _ = next(iter(self._learned.items()))
            del self._learned[next(iter(self._learned))]
            left = self._by_ip[gone_ip] - 1
            if left:
                self._by_ip[gone_ip] = left
            else:
                del self._by_ip[gone_ip]

    def known(self, ip: str) -> bool:
        """Whether ``ip`` taught anything: the rare case that costs a client an object."""
        return ip in self._by_ip

    def deadline(self, ip: str, key: int) -> float | None:
        """The learned deadline of ``key``'s software at ``ip``, in seconds."""
        tenths = self._learned.get((ip, key))
        return None if tenths is None else tenths / 10
