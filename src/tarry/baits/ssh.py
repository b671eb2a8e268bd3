"""The SSH bait: endless RFC 4253 §4.2 "other lines of data" before a version
string that never comes (the endlessh behaviour, ``mode = "banner"``).

State word: bit 0 set once the client's identification line is recorded (or
given up on); then input is ignored without being buffered.
"""

from __future__ import annotations

import os
import random
from typing import Any

from ..bait import Option, Step, TarpitSpec, jittered

PROTOCOL = "ssh"
DEFAULTS = {"delay": 10.0}

IDENT_MAX = 255  # RFC 4253 §4.2: the identification line is at most 255 bytes
_IDENT_DONE = 1


def _check_line_length(v: int) -> str | None:
    return None if 3 <= v <= 255 else "must be between 3 and 255"


def _check_first_delay(v: float) -> str | None:
    return None if v == -1 or v >= 0 else "must be -1 (one delay) or >= 0 seconds"


OPTIONS = {
    "line_length": Option(32, int, "longest line sent, CRLF included (3..255)", _check_line_length),
    "first_delay": Option(
        -1.0, (int, float), "seconds before the first line; -1 means one delay", _check_first_delay
    ),
}


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
        self._rand = random.Random(os.urandom(16))

    def _refill(self) -> None:
        raw = os.urandom(self.POOL)
        # 95 printable characters from 0x20 to 0x7e
        self._pool = bytes(0x20 + b % 95 for b in raw)
        self._left = self.REFRESH

    def line(self) -> bytes:
        if self._left <= 0:
            self._refill()
        self._left -= 1
        n = self._rand.randint(1, self.max_len - 2)
        at = self._rand.randrange(self.POOL - n)
        body = self._pool[at : at + n]
        if body.startswith(b"SSH-"):
            body = b"X" + body[1:]
        return body + b"\r\n"


class BannerBait:
    """endlessh: one random line every delay, never a version string."""

    protocol = PROTOCOL

    def __init__(self, spec: TarpitSpec) -> None:
        self.delay = spec.delay
        self.jitter = spec.jitter
        first = float(spec.opt("first_delay"))
        self.first_delay = self.delay if first < 0 else first
        self.lines = LineSource(int(spec.opt("line_length")))

    def open(self, peer: str) -> Step:
        if self.first_delay == 0:
            return Step(0, self.lines.line(), jittered(self.delay, self.jitter))
        return Step(0, b"", jittered(self.first_delay, self.jitter))

    def tick(self, state: int, obj: Any, age: float) -> Step:
        return Step(state, self.lines.line(), jittered(self.delay, self.jitter), obj)

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


def make(spec: TarpitSpec) -> BannerBait:
    return BannerBait(spec)
