"""What a reload changed, one line per change, for the operator who sent SIGHUP.

A listener is a protocol on an address; one that stays keeps its clients, so
its option changes are said against it. Sections a reload does not apply
([history], [admin], ...) are named with "at the next start", so that an edit
that did nothing is not a surprise.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from .bait import TarpitSpec, shown
from .config import Config

# Config fields a reload applies (cli.serve's reload); the others wait for a restart
APPLIED = ("write_timeout", "max_clients")
RESTART = ("loop", "workers", "user", "group", "allow_root")
_SPEC_SKIP = {"protocol", "listen", "options"}


def _settings(spec: TarpitSpec) -> dict[str, Any]:
    out = {f.name: getattr(spec, f.name) for f in fields(spec) if f.name not in _SPEC_SKIP}
    out.update(spec.options)
    return out


def _by_address(cfg: Config) -> dict[tuple[str, str], TarpitSpec]:
    return {(s.protocol, addr): s for s in cfg.tarpits for addr in s.listen}


def _value(v: Any) -> str:
    return shown(v) if isinstance(v, str) else str(v)


def changes(old: Config, new: Config) -> list[str]:
    """The differences between two configs, listeners first; [] when none."""
    before, after = _by_address(old), _by_address(new)
    lines = [f"listener added: {p} {a}" for p, a in after if (p, a) not in before]
    lines += [f"listener removed: {p} {a}" for p, a in before if (p, a) not in after]
    said: dict[tuple[int, int], list[str]] = {}  # one line per changed tarpit, all its addresses
    for key in after.keys() & before.keys():
        said.setdefault((id(before[key]), id(after[key])), []).append(key[1])
    for (old_id, new_id), addrs in sorted(said.items(), key=lambda kv: sorted(kv[1])):
        was = _settings(next(s for s in old.tarpits if id(s) == old_id))
        spec = next(s for s in new.tarpits if id(s) == new_id)
        now = _settings(spec)
        for k in sorted(was.keys() | now.keys()):
            if was.get(k) != now.get(k):
                where = f"{spec.protocol} {', '.join(sorted(addrs))}"
                lines.append(f"{where}: {k} {_value(was.get(k))} -> {_value(now.get(k))}")
    for k in APPLIED:
        if getattr(old, k) != getattr(new, k):
            lines.append(f"{k} {getattr(old, k)} -> {getattr(new, k)}")
    for k in RESTART:
        if getattr(old, k) != getattr(new, k):
            lines.append(f"{k} changed: applies at the next start")
    for section in sorted(old.sections.keys() | new.sections.keys()):
        if section in ("engine", "limits", "privileges"):
            continue  # their keys are the Config fields above
        if old.sections.get(section) != new.sections.get(section):
            lines.append(f"[{section}] changed: applies at the next start")
    return lines
