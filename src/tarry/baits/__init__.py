"""Protocol baits, one module per protocol, found by name at run time.

A module here that defines ``PROTOCOL``, ``DEFAULTS``, ``OPTIONS`` and
``make(spec)`` is a protocol: adding one needs no edit anywhere else.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from ..bait import BaitModule


@cache
def registry() -> dict[str, BaitModule]:
    found: dict[str, BaitModule] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "PROTOCOL") and hasattr(module, "make"):
            found[module.PROTOCOL] = module
    return found
