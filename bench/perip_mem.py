"""Memory of endlessh-go's per-IP series in tarry: N addresses, one SSH session each.

Run: python bench/perip_mem.py [N]   (prints bytes per address, tracemalloc)
"""

from __future__ import annotations

import sys
import tracemalloc

sys.path.insert(0, "src")

from tarry.events import ACCEPT, CLOSE, Event
from tarry.metrics import Metrics, exposition, registry


def main(n: int) -> None:
    m = Metrics(per_ip=True, per_ip_max=n, per_ip_expiry=1e9)
    reg = registry(m, process=False)
    exposition(reg)  # imports and caches out of the measurement
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        ip = f"::ffff:10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        m.emit(Event(ACCEPT, 1.0, "ssh", "[::]:22", ip, 40000, 7, country="CN"))
        m.emit(Event(CLOSE, 2.0, "ssh", "[::]:22", ip, 40000, 7, duration=1.0, reason="closed"))
    held = tracemalloc.get_traced_memory()[0] - base
    body, _ = exposition(reg)
    print(
        f"{n} addresses: {held / n:.0f} B each held, {held / 2**20:.1f} MiB; "
        f"scrape {len(body) / 2**20:.1f} MiB ({len(body) / n:.0f} B per address)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10000)
