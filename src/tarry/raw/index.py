"""A compact open-addressing index from a client's 4-tuple to its row number.

The raw stack has no socket, hence no fd, to find a client by; it finds the
row from the packet's addresses and ports instead. A dict would cost a key
object and a boxed int per client, over 100 bytes; this index keeps two flat
arrays and no Python object per entry:

- ``keys``: a bytearray of fixed-width packed keys, slot ``i`` at ``i * width``;
- ``rows``: an ``array('I')`` of row numbers, where two reserved values mark a
  never-used slot (``EMPTY``) and a deleted one (``GONE``, a tombstone).

Probing is linear from Python's keyed hash of the key (SipHash: a peer who
picks its ports cannot aim at one chain). The table doubles when live entries
pass half of it, and is rebuilt at the same size when tombstones fill it, so
a probe always ends on an empty slot and entries cost ``width + 4`` bytes over a
load of 0.25 to 0.75.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

EMPTY = 0xFFFFFFFF
GONE = 0xFFFFFFFE
MAX_ROW = 0xFFFFFFFD
KEY_WIDTH = 20  # 16 address bytes (IPv4 mapped) + remote port + local listener number
_MAPPED = b"\0" * 10 + b"\xff\xff"
_MIN = 16


def tuple_key(remote: bytes, port: int, local: int) -> bytes:
    """The key of a client: its address (4 or 16 bytes), its port, and the number
    of the local address:port it reached (a tarpit has few, so 16 bits will do)."""
    address = _MAPPED + remote if len(remote) == 4 else remote
    return address + port.to_bytes(2, "big") + local.to_bytes(2, "big")


class Index:
    """Fixed-width byte keys to row numbers (0 to ``MAX_ROW``)."""

    def __init__(self, width: int = KEY_WIDTH, capacity: int = _MIN) -> None:
        self.width = width
        self._alloc(max(_MIN, 1 << (capacity - 1).bit_length()))

    def _alloc(self, size: int) -> None:
        self._mask = size - 1
        self._keys = bytearray(size * self.width)
        self._rows = array("I", [EMPTY]) * size
        self._live = 0
        self._used = 0  # live + tombstones: what makes probes long

    def __len__(self) -> int:
        return self._live

    @property
    def nbytes(self) -> int:
        """Bytes the two arrays hold (their Python headers are a constant 150 or so)."""
        return len(self._keys) + len(self._rows) * self._rows.itemsize

    def _slot(self, key: bytes) -> int:
        """The slot holding ``key``, or the first free one on its probe path, as
        ``~slot`` (negative) when it is absent."""
        if len(key) != self.width:
            raise ValueError(f"index keys are {self.width} bytes, not {len(key)}")
        rows, keys, width, mask = self._rows, self._keys, self.width, self._mask
        i = hash(key) & mask
        free = -1
        while True:
            row = rows[i]
            if row == EMPTY:
                return ~(i if free < 0 else free)
            if row == GONE:
                if free < 0:
                    free = i
            elif keys[i * width : i * width + width] == key:
                return i
            i = (i + 1) & mask

    def get(self, key: bytes) -> int:
        """The row of ``key``, or -1."""
        i = self._slot(key)
        return self._rows[i] if i >= 0 else -1

    def put(self, key: bytes, row: int) -> None:
        """Map ``key`` to ``row``, replacing any row it had."""
        if not 0 <= row <= MAX_ROW:
            raise ValueError(f"row {row} is out of range")
        i = self._slot(key)
        if i >= 0:
            self._rows[i] = row
            return
        i = ~i
        if self._rows[i] == EMPTY:
            self._used += 1
        self._rows[i] = row
        self._keys[i * self.width : (i + 1) * self.width] = key
        self._live += 1
        if self._used * 4 > (self._mask + 1) * 3:
            self._resize()

    def pop(self, key: bytes) -> int:
        """Remove ``key``; its row, or -1 when it was absent."""
        i = self._slot(key)
        if i < 0:
            return -1
        row = self._rows[i]
        self._rows[i] = GONE
        self._live -= 1
        return row

    def _resize(self) -> None:
        size = self._mask + 1
        if self._live * 2 > size:
            size *= 2
        elif self._live * 8 < size and size > _MIN:
            size //= 2
        old_keys, old_rows, width = self._keys, self._rows, self.width
        self._alloc(size)
        rows, keys, mask = self._rows, self._keys, self._mask
        for j, row in enumerate(old_rows):
            if row < GONE:
                key = bytes(old_keys[j * width : j * width + width])
                i = hash(key) & mask
                while rows[i] != EMPTY:
                    i = (i + 1) & mask
                rows[i] = row
                keys[i * width : i * width + width] = key
        self._live = self._used = sum(1 for row in old_rows if row < GONE)

    def items(self) -> list[tuple[bytes, int]]:
        """Every (key, row): for tests and for a sweep, not for the hot path."""
        width = self.width
        return [
            (bytes(self._keys[j * width : j * width + width]), row)
            for j, row in enumerate(self._rows)
            if row < GONE
        ]


class RowIndex:
    """The same map with the keys left where they already are: in the engine's
    row columns (listener, peer port, peer address). A slot is the key's 32-bit
    hash and its row, 8 bytes; ``key_of(row)`` rebuilds a row's key to confirm a
    hash match, which at our loads is almost always the first one. About 16
    bytes an entry instead of 40 to 64, for one call per lookup."""

    def __init__(self, key_of: Callable[[int], bytes], capacity: int = _MIN) -> None:
        self._key_of = key_of
        self._alloc(max(_MIN, 1 << (capacity - 1).bit_length()))

    def _alloc(self, size: int) -> None:
        self._mask = size - 1
        self._hashes = array("I", bytes(4 * size))
        self._rows = array("I", [EMPTY]) * size
        self._live = 0
        self._used = 0

    def __len__(self) -> int:
        return self._live

    @property
    def nbytes(self) -> int:
        return (len(self._hashes) + len(self._rows)) * 4

    def _slot(self, key: bytes) -> tuple[int, int]:
        """(slot holding ``key`` or ``~free slot``, its 32-bit hash)."""
        h = hash(key) & 0xFFFFFFFF
        rows, hashes, mask, key_of = self._rows, self._hashes, self._mask, self._key_of
        i = h & mask
        free = -1
        while True:
            row = rows[i]
            if row == EMPTY:
                return ~(i if free < 0 else free), h
            if row == GONE:
                if free < 0:
                    free = i
            elif hashes[i] == h and key_of(row) == key:
                return i, h
            i = (i + 1) & mask

    def get(self, key: bytes) -> int:
        i, _ = self._slot(key)
        return self._rows[i] if i >= 0 else -1

    def put(self, key: bytes, row: int) -> None:
        """Map ``key`` to ``row``; ``key_of(row)`` must already give ``key``."""
        if not 0 <= row <= MAX_ROW:
            raise ValueError(f"row {row} is out of range")
        i, h = self._slot(key)
        if i >= 0:
            self._rows[i] = row
            return
        i = ~i
        if self._rows[i] == EMPTY:
            self._used += 1
        self._rows[i], self._hashes[i] = row, h
        self._live += 1
        if self._used * 4 > (self._mask + 1) * 3:
            self._resize()

    def pop(self, key: bytes) -> int:
        """Remove ``key`` (call it before the row's columns change); its row or -1."""
        i, _ = self._slot(key)
        if i < 0:
            return -1
        row = self._rows[i]
        self._rows[i] = GONE
        self._live -= 1
        return row

    def _resize(self) -> None:
        size = self._mask + 1
        if self._live * 2 > size:
            size *= 2
        elif self._live * 8 < size and size > _MIN:
            size //= 2
        old = [(h, row) for h, row in zip(self._hashes, self._rows, strict=True) if row < GONE]
        self._alloc(size)
        rows, hashes, mask = self._rows, self._hashes, self._mask
        for h, row in old:
            i = h & mask
            while rows[i] != EMPTY:
                i = (i + 1) & mask
            rows[i], hashes[i] = row, h
        self._live = self._used = len(old)

    def rows(self) -> list[int]:
        """Every row in the index: for tests and sweeps."""
        return [row for row in self._rows if row < GONE]
