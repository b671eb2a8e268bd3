"""Where a server's memory went: Rss growth per mapping between two smaps snapshots.

Reads the files `bench/run.py --smaps DIR` saves (idle-PID, end-PID, trimmed-PID) and prints,
for each process, the mappings whose resident size changed, largest first, labelled by what they
are ([heap], a file, or an anonymous mapping with its size, which tells pymalloc's 1 MiB arenas
from the engine's table columns and glibc's mmapped chunks).

Usage: python bench/smapsdiff.py DIR [--to end|trimmed] [--top 12]
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$")


def parse(path: Path) -> dict[tuple[int, int], tuple[str, int]]:
    """(start, end) -> (name, Rss in kB) for every mapping."""
    maps: dict[tuple[int, int], tuple[str, int]] = {}
    key: tuple[int, int] | None = None
    name = ""
    for line in path.read_text().splitlines():
        m = HEADER.match(line)
        if m:
            key = (int(m.group(1), 16), int(m.group(2), 16))
            name = m.group(3) or f"anon {(key[1] - key[0]) >> 10} kB"
            maps[key] = (name, 0)
        elif line.startswith("Rss:") and key is not None:
            maps[key] = (name, int(line.split()[1]))
    return maps


def label(name: str) -> str:
    return name.rsplit("/", 1)[-1] if name.startswith("/") else name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=Path)
    p.add_argument("--to", default="end", choices=("end", "trimmed"))
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args()
    total = 0
    for before in sorted(args.dir.glob("idle-*")):
        pid = before.name.split("-", 1)[1]
        after = args.dir / f"{args.to}-{pid}"
        if not after.exists():
            continue
        a, b = parse(before), parse(after)
        grown: dict[str, int] = defaultdict(int)
        count: dict[str, int] = defaultdict(int)
        for key in a.keys() | b.keys():
            name = (b.get(key) or a[key])[0]
            delta = b.get(key, ("", 0))[1] - a.get(key, ("", 0))[1]
            if delta:
                tag = label(name) + ("" if key in a else " (new)") + ("" if key in b else " (gone)")
                grown[tag] += delta
                count[tag] += 1
        sum_ = sum(grown.values())
        total += sum_
        print(f"pid {pid}: {sum_:+,} kB")
        for tag, kb in sorted(grown.items(), key=lambda kv: -abs(kv[1]))[: args.top]:
            print(
                f"  {kb:+8,} kB  {tag}" + (f"  ({count[tag]} mappings)" if count[tag] > 1 else "")
            )
    print(f"all: {total:+,} kB")


if __name__ == "__main__":
    main()
