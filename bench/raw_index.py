"""Bytes per entry and time per operation of the raw stack's 4-tuple indexes.

    .venv/bin/python bench/raw_index.py [-n 100000 -n 1000000]

``Index`` keeps 20-byte keys itself (8-byte keys for an IPv4-only tarpit);
``RowIndex`` keeps a hash and a row and reads keys from the row's columns.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from tarry.raw.index import Index, RowIndex, tuple_key


def measure(name: str, index: Index | RowIndex, keys: list[bytes]) -> None:
    n = len(keys)
    start = time.perf_counter()
    for row, key in enumerate(keys):
        index.put(key, row)
    mid = time.perf_counter()
    for key in keys:
        index.get(key)
    end = time.perf_counter()
    print(
        f"{name:<22} n={n:>9,}  {index.nbytes / n:5.1f} B/entry  "
        f"put {(mid - start) / n * 1e9:5.0f} ns  get {(end - mid) / n * 1e9:5.0f} ns"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, action="append")
    for n in ap.parse_args().n or [100_000, 1_000_000]:
        keys = [tuple_key(i.to_bytes(4, "big"), i & 0xFFFF, 0) for i in range(n)]
        measure("Index (20-byte keys)", Index(), keys)
        short = [key[12:18] + key[18:] for key in keys]  # IPv4 address, port, listener
        measure("Index (8-byte keys)", Index(width=8), short)
        measure("RowIndex", RowIndex(keys.__getitem__), keys)


if __name__ == "__main__":
    main()
