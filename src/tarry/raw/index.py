"""A compact open-addressing index from a client's 4-tuple to its row number.

The raw stack has no socket, hence no fd, to find a client by; it finds the
row from the packet's addresses and ports instead. A dict would cost a key
object and a boxed int per client, over 100 bytes; this index keeps two flat
arrays and no Python object per entry:

- ``rows``: an ``array('I')`` of row numbers, where two reserved values mark a
  never-used slot (``EMPTY``) and a deleted one (``GONE``, a tombstone);
- what tells keys apart: in ``Index`` the fixed-width packed keys themselves
  (a bytearray, slot ``i`` at ``i * width``); in ``RowIndex`` each key's 32-bit
  hash, the key itself being read back from the row's own columns.

Probing is linear from Python's keyed hash of the key (SipHash: a peer who
picks its ports cannot aim at one chain). The table doubles when live entries
pass half of it, and is rebuilt at the same size when tombstones fill it, so
a probe always ends on an empty slot and a slot is used at a load of 0.375
to 0.75 (``bench/raw_parts.py index`` gives the bytes per entry).
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


class _Table:
    """What both indexes share: slots, tombstones, growth. A subclass says how a
    slot tells its key (``_same``, ``_store``) and how to move a live slot."""

    _rows: array[int]

    def __init__(self, capacity: int) -> None:
        self._alloc(max(_MIN, 1 << (capacity - 1).bit_length()))

    def _alloc(self, size: int) -> None:
        self._mask = size - 1
        self._rows = array("I", [EMPTY]) * size
        self._live = 0
        self._used = 0  # live + tombstones: what makes probes long

    def __len__(self) -> int:
        return self._live

    def _same(self, i: int, key: bytes, h: int) -> bool:
        raise NotImplementedError

    def _store(self, i: int, key: bytes, h: int) -> None:
        raise NotImplementedError

    def _slot(self, key: bytes) -> tuple[int, int]:
        """(the slot holding ``key``, or ``~`` the first free one on its path; its hash)."""
        h = hash(key) & 0xFFFFFFFF
        rows, mask = self._rows, self._mask
        i = h & mask
        free = -1
        while True:
            row = rows[i]
            if row == EMPTY:
                return ~(i if free < 0 else free), h
            if row == GONE:
                if free < 0:
                    free = i
            elif self._same(i, key, h):
                return i, h
            i = (i + 1) & mask

    def get(self, key: bytes) -> int:
        """The row of ``key``, or -1."""
        i, _ = self._slot(key)
        return self._rows[i] if i >= 0 else -1

    def put(self, key: bytes, row: int) -> None:
        """Map ``key`` to ``row``, replacing any row it had."""
        if not 0 <= row <= MAX_ROW:
            raise ValueError(f"row {row} is out of range")
        i, h = self._slot(key)
        if i >= 0:
            self._rows[i] = row
            return
        i = ~i
        if self._rows[i] == EMPTY:
            self._used += 1
        self._rows[i] = row
        self._store(i, key, h)
        self._live += 1
        if self._used * 4 > (self._mask + 1) * 3:
            self._resize()

    def pop(self, key: bytes) -> int:
        """Remove ``key``; its row, or -1 when it was absent."""
        i, _ = self._slot(key)
        if i < 0:
            return -1
        row = self._rows[i]
        self._rows[i] = GONE
        self._live -= 1
        return row

    def _live_slots(self) -> list[int]:
        return [i for i, row in enumerate(self._rows) if row < GONE]

    def rows(self) -> list[int]:
        """Every row in the index: for tests and sweeps, not for the hot path."""
        return [self._rows[i] for i in self._live_slots()]

    def _new_size(self) -> int:
        """Double when half full of live entries, halve when mostly empty, else
        the same size: a rebuild that clears the tombstones."""
        size = self._mask + 1
        if self._live * 2 > size:
            return size * 2
        if self._live * 8 < size and size > _MIN:
            return size // 2
        return size

    def _place(self, h: int) -> int:
        """A free slot for hash ``h`` in a table being rebuilt (no tombstones yet)."""
        rows, mask = self._rows, self._mask
        i = h & mask
        while rows[i] != EMPTY:
            i = (i + 1) & mask
        return i

    def _resize(self) -> None:
        raise NotImplementedError


class Index(_Table):
    """Fixed-width byte keys to row numbers (0 to ``MAX_ROW``), keys kept here."""

    def __init__(self, width: int = KEY_WIDTH, capacity: int = _MIN) -> None:
        self.width = width
        super().__init__(capacity)

    def _alloc(self, size: int) -> None:
        super()._alloc(size)
        self._keys = bytearray(size * self.width)

    @property
    def nbytes(self) -> int:
        """Bytes the two arrays hold (their Python headers are a constant 150 or so)."""
        return len(self._keys) + len(self._rows) * self._rows.itemsize

    def _key(self, i: int) -> bytes:
        return bytes(self._keys[i * self.width : (i + 1) * self.width])

    def _same(self, i: int, key: bytes, h: int) -> bool:
        width = self.width
        return self._keys[i * width : i * width + width] == key

    def _store(self, i: int, key: bytes, h: int) -> None:
        self._keys[i * self.width : (i + 1) * self.width] = key

    def _slot(self, key: bytes) -> tuple[int, int]:
        if len(key) != self.width:
            raise ValueError(f"index keys are {self.width} bytes, not {len(key)}")
        return super()._slot(key)

    def _resize(self) -> None:
        old = [(self._key(i), self._rows[i]) for i in self._live_slots()]
        self._alloc(self._new_size())
        for key, row in old:
            i = self._place(hash(key) & 0xFFFFFFFF)
            self._rows[i] = row
            self._store(i, key, 0)
        self._live = self._used = len(old)

    def items(self) -> list[tuple[bytes, int]]:
        """Every (key, row): for tests and for a sweep, not for the hot path."""
        return [(self._key(i), self._rows[i]) for i in self._live_slots()]


class RowIndex(_Table):
    """The same map with the keys left where they already are: in the engine's
    row columns (listener, peer port, peer address). A slot is the key's 32-bit
    hash and its row, 8 bytes; ``key_of(row)`` rebuilds a row's key to confirm a
    hash match, which at our loads is almost always the first one. About 16
    bytes an entry instead of 25 to 64, for one call per lookup. Put a key once
    ``key_of(row)`` gives it, and pop it before the row's columns change."""

    def __init__(self, key_of: Callable[[int], bytes], capacity: int = _MIN) -> None:
        self._key_of = key_of
        super().__init__(capacity)

    def _alloc(self, size: int) -> None:
        super()._alloc(size)
        self._hashes = array("I", bytes(4 * size))

    @property
    def nbytes(self) -> int:
        return (len(self._hashes) + len(self._rows)) * 4

    def _same(self, i: int, key: bytes, h: int) -> bool:
        return self._hashes[i] == h and self._key_of(self._rows[i]) == key

    def _store(self, i: int, key: bytes, h: int) -> None:
        self._hashes[i] = h

    def _resize(self) -> None:
        old = [(self._hashes[i], self._rows[i]) for i in self._live_slots()]
        self._alloc(self._new_size())
        for h, row in old:
            i = self._place(h)
            self._rows[i], self._hashes[i] = row, h
        self._live = self._used = len(old)
