"""Clients held per peer address, for ``max_clients_per_ip``.

A tarpit's clients mostly come from distinct addresses, so the counter must not
cost a Python object per address either: a dict keyed by int costs ~100 bytes
an entry, twice what the engine spends on the client itself. IPv4 addresses
live in an open-addressing hash table of two typed arrays (a 4-byte key and a
2-byte count a slot, kept between 1/8 and 1/2 full): 12 to 48 bytes per
distinct address, no object. An entry exists only while its address has
clients. IPv6 peers (rarer, and counted per /64, since one host often has a
whole /64) are kept in a dict keyed by the 8-byte prefix.
"""

from __future__ import annotations

from array import array

MIN_SLOTS = 256
COUNT_MAX = 0xFFFF
_MUL = 0x9E3779B1  # Fibonacci hashing: neighbouring addresses land far apart


def v6_key(raw16: bytes) -> bytes:
    """The /64 an IPv6 peer is counted in."""
    return raw16[:8]


class IPCounter:
    __slots__ = ("bits", "counts", "keys", "mask", "used", "v6")

    def __init__(self) -> None:
        self.v6: dict[bytes, int] = {}
        self._resize(MIN_SLOTS)

    def _resize(self, slots: int) -> None:
        old = getattr(self, "keys", None), getattr(self, "counts", None)
        self.keys = array("I", bytes(4 * slots))
        self.counts = array("H", bytes(2 * slots))
        self.mask = slots - 1
        self.bits = slots.bit_length() - 1
        self.used = 0
        keys, counts = old
        if keys is not None and counts is not None:
            for k, c in zip(keys, counts, strict=True):
                if k:
                    i = self._find(k)
                    self.keys[i] = k
                    self.counts[i] = c
                    self.used += 1

    def _find(self, key: int) -> int:
        """The slot holding ``key``, or the empty slot where it would go."""
        i = ((key * _MUL) & 0xFFFFFFFF) >> (32 - self.bits)
        keys, mask = self.keys, self.mask
        while True:
            k = keys[i]
            if k == key or k == 0:
                return i
            i = (i + 1) & mask

    def __len__(self) -> int:
        return self.used + len(self.v6)

    def count(self, ip4: int, ip6: bytes | None = None) -> int:
        if ip6 is not None or ip4 == 0:
            return self.v6.get(ip6 or b"", 0)
        return self.counts[self._find(ip4)]

    def add(self, ip4: int, ip6: bytes | None = None) -> int:
        """One more client from this address; its new count."""
        if ip6 is not None or ip4 == 0:
            key = ip6 or b""
            n = self.v6[key] = self.v6.get(key, 0) + 1
            return n
        i = self._find(ip4)
        if self.keys[i] == 0:
            self.keys[i] = ip4
            self.used += 1
            if self.used * 2 > self.mask + 1:
                self._resize((self.mask + 1) * 2)
                i = self._find(ip4)
        n = min(self.counts[i] + 1, COUNT_MAX)
        self.counts[i] = n
        return n

    def remove(self, ip4: int, ip6: bytes | None = None) -> None:
        """One client fewer; unknown addresses are ignored (the cap was off when it came)."""
        if ip6 is not None or ip4 == 0:
            key = ip6 or b""
            n = self.v6.get(key, 0)
            if n > 1:
                self.v6[key] = n - 1
            elif n:
                del self.v6[key]
            return
        i = self._find(ip4)
        if self.keys[i] == 0:
            return
        if self.counts[i] > 1:
            self.counts[i] -= 1
            return
        self._delete(i)
        if self.used * 8 < self.mask + 1 and self.mask + 1 > MIN_SLOTS:
            self._resize((self.mask + 1) // 2)

    def _delete(self, i: int) -> None:
        """Empty slot ``i`` and shift later entries of its probe run back (no tombstones)."""
        keys, counts, mask, bits = self.keys, self.counts, self.mask, self.bits
        keys[i] = 0
        counts[i] = 0
        self.used -= 1
        j = i
        while True:
            j = (j + 1) & mask
            k = keys[j]
            if k == 0:
                return
            home = ((k * _MUL) & 0xFFFFFFFF) >> (32 - bits)
            # move k back to i unless its home lies cyclically in (i, j]
            if (j > i and (home <= i or home > j)) or (j < i and home <= i and home > j):
                keys[i], counts[i] = k, counts[j]
                keys[j] = 0
                counts[j] = 0
                i = j
