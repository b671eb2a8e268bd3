"""Keyed SYN cookies: the SYN-ACK's sequence number is the only state a SYN gets.

The cookie is BLAKE2b keyed with a per-process secret over the 4-tuple, the
client's initial sequence number and a time slot, cut to 32 bits. The
handshake's ACK (or first data, or a FIN) acknowledges ``cookie + 1``; it
proves the client saw our SYN-ACK if that equals the cookie of the current or
the previous slot, so a cookie lives between one and two slots. A caller may
spend some bits on a tag (``mask``; tcp.py keeps 24 bits of MAC, as Linux
does): forging one then takes about 2**22 guesses per 4-tuple, and a SYN flood
costs a hash and a reply per SYN, never memory. The MSS is fixed, so no bits
go to encoding it.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections.abc import Callable

SLOT = 64.0  # seconds; Linux's syncookies last about two minutes too
SECRET_BYTES = 32
_HEAD = struct.Struct("!QHHI")


class Cookies:
    """Make and check cookies with one secret; ``clock`` is injectable for tests."""

    def __init__(
        self, secret: bytes | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._secret = secret if secret is not None else os.urandom(SECRET_BYTES)
        if not 16 <= len(self._secret) <= 64:
            raise ValueError("a cookie secret is 16 to 64 bytes")
        self._clock = clock

    def _mac(self, slot: int, src: bytes, dst: bytes, sport: int, dport: int, isn: int) -> int:
        head = _HEAD.pack(slot & 0xFFFFFFFFFFFFFFFF, sport, dport, isn & 0xFFFFFFFF)
        digest = hashlib.blake2b(head + src + dst, key=self._secret, digest_size=4).digest()
        return int.from_bytes(digest, "big")

    def make(self, src: bytes, dst: bytes, sport: int, dport: int, isn: int) -> int:
        """Our initial sequence number for a SYN from ``src:sport`` to ``dst:dport``
        whose own initial sequence number is ``isn``."""
        return self._mac(int(self._clock() // SLOT), src, dst, sport, dport, isn)

    def check(
        self,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        isn: int,
        cookie: int,
        mask: int = 0xFFFFFFFF,
    ) -> bool:
        """Whether ``cookie`` is one we made for this 4-tuple and ISN in this slot or
        the one before. ``isn`` is the client's: its ACK's seq minus one. Only the
        bits in ``mask`` are compared, for a caller that spends some on a tag."""
        slot = int(self._clock() // SLOT)
        cookie &= mask
        return cookie in (
            self._mac(slot, src, dst, sport, dport, isn) & mask,
            self._mac(slot - 1, src, dst, sport, dport, isn) & mask,
        )
