"""Give freed heap back to the system after a burst.

glibc keeps memory freed in the middle of the heap; after a flood (of accepts,
of events, of admin connections) it would stay resident as if every held
client cost that much. ``malloc_trim(0)`` returns it. Not glibc: nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc
        return None


MALLOC_TRIM = _malloc_trim()


def trim() -> None:
    """Return the heap's free pages to the system, where the C library can."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)
