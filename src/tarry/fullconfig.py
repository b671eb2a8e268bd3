"""``tarry default-config``: the embedded defaults with every other section.

The keys of [log], [history], [metrics], [geo] and [admin] come from
``tarry.observe.SECTIONS``, so a key added there is printed here too. They are
commented out, headers included: an uncommented ``[metrics]`` would ask for
the metrics extra even where it is not installed, and the printed config must
run as the embedded one does.
"""

from __future__ import annotations

from typing import Any

from .config import DEFAULT_CONFIG

# a few words on the keys whose name does not say it all
HELP = {
    "log.format": "stdout lines: endlessh's, or one JSON object a line",
    "log.file": 'also write events to this file ("" = no)',
    "log.syslog": "also send events to syslog",
    "log.buffer": "events queued for a slow sink; then dropped and counted",
    "history.enabled": "keep every session in a SQLite file (tarry report reads it)",
    "history.path": '"" = the state directory\'s history.sqlite3',
    "history.url": "a fleet's shared PostgreSQL instead (docs/fleet.md)",
    "history.host": '"" = this machine\'s hostname',
    "history.retention_days": "0 = keep forever",
    "history.flush_interval": "seconds between two writes; a kill -9 loses at most this",
    "metrics.enabled": "Prometheus /metrics on the admin listener (tarry[metrics])",
    "metrics.per_ip": "a series per client address (bounded by per_ip_max)",
    "geo.enabled": "countries (tarry[geo]), or from a MaxMind .mmdb",
    "geo.mmdb": '"" = the bundled IP-to-country table',
    "admin.listen": 'dashboard and JSON API (tarry[dashboard]); "" = off',
    "admin.token": "required unless listen is loopback",
    "admin.hosts": "Host names the dashboard answers to besides its address",
}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _lines(section: str, keys: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    out = []
    for key, spec in keys.items():
        if key in skip:
            continue
        line = f"# {key} = {_toml(spec.default)}"
        why = HELP.get(f"{section}.{key}")
        out.append(f"{line:<35}# {why}" if why else line)
    return out


def text() -> str:
    """The whole default config, every section present."""
    from .observe import SECTIONS

    lines = DEFAULT_CONFIG.splitlines()
    log = lines.index("[log]")
    end = next(i for i in range(log + 1, len(lines)) if not lines[i].strip())
    lines[end:end] = _lines("log", SECTIONS["log"], skip=("level",))
    first = lines.index("[[tarpit]]")
    extra: list[str] = []
    for section in ("history", "metrics", "geo", "admin"):
        extra += [f"# [{section}]", *_lines(section, SECTIONS[section]), ""]
    lines[first:first] = extra
    return "\n".join(lines) + "\n"
