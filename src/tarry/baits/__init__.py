"""Protocol baits, one module per protocol, found by name at run time.

A module here that names a ``BaitModule`` as ``BAIT`` is a protocol: adding
one needs no edit anywhere else. Other packages add protocols through entry
points in the group ``tarry.baits`` (docs/baits.md); a built-in name wins.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from functools import cache
from importlib.metadata import entry_points
from types import ModuleType

from ..bait import BaitModule

GROUP = "tarry.baits"


def _bait_of(found: object) -> BaitModule | None:
    if isinstance(found, BaitModule):
        return found
    if isinstance(found, ModuleType):
        bait = vars(found).get("BAIT")
        return bait if isinstance(bait, BaitModule) else None
    return None


@cache
def registry() -> dict[str, BaitModule]:
    found: dict[str, BaitModule] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        bait = _bait_of(importlib.import_module(f"{__name__}.{info.name}"))
        if bait is not None:
            found[bait.protocol] = bait
    for ep in entry_points(group=GROUP):
        where = f"plugin {ep.name!r} ({ep.value})"
        try:
            bait = _bait_of(ep.load())
        except Exception as exc:  # a broken plugin must not stop the built-in tarpits
            print(f"tarry: {where}: cannot load: {exc!r}", file=sys.stderr)
            continue
        if bait is None:
            print(f"tarry: {where}: not a tarry.bait.BaitModule", file=sys.stderr)
        elif bait.protocol in found:
            print(f"tarry: {where}: protocol {bait.protocol!r} is taken", file=sys.stderr)
        else:
            found[bait.protocol] = bait
    return found
