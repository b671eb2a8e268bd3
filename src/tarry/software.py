"""What a trapped client says it is, and a coarse family name for it.

The full string (an SSH identification, a User-Agent, an EHLO name, the name a
database client gives itself) goes into
the history store and reports. Metrics and the dashboard need a short family
name instead ("OpenSSH", "libssh", "curl"), so that hostile clients cannot blow
up the number of label values.
"""

from __future__ import annotations

import re

from .events import Event

SOFTWARE_KEYS = ("ssh_id", "user_agent", "ehlo", "client")
"""Note keys that identify client software, in order of preference."""

FAMILY_MAX = 32  # longest family name kept

_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9.+-]*")
_COMPATIBLE = re.compile(r"compatible;\s*([A-Za-z][A-Za-z0-9._+-]*)")


def software(event: Event) -> tuple[str, str]:
    """(note key, value) of the first software note present, or ("", "")."""
    for key in SOFTWARE_KEYS:
        value = event.note(key)
        if value:
            return key, value
    return "", ""


def family(key: str, value: str) -> str:
    """A short, label-safe family name for a software string ("" when none)."""
    if not value:
        return ""
    if key == "ssh_id":
        # "SSH-2.0-OpenSSH_9.6p1 Ubuntu" -> "OpenSSH"; "SSH-2.0-Go" -> "Go"
        parts = value.split("-", 2)
        rest = parts[2] if value.startswith("SSH-") and len(parts) == 3 else value
        m = _TOKEN.match(rest)
        name = m.group(0).rstrip(".-+") if m else ""
        name = re.split(r"[_]", name)[0] if name else ""
    elif key == "user_agent":
        m = _COMPATIBLE.search(value)  # "Mozilla/5.0 (compatible; Googlebot/2.1; ...)"
        if m:
            name = m.group(1).split("/")[0]
        else:
            m = _TOKEN.match(value.strip())
            name = m.group(0) if m else ""
        name = name.split("/")[0]
    elif key == "ehlo":
        # Names are per-sender and endless; keep only their shape.
        v = value.strip()
        if v.startswith("["):
            name = "address-literal"
        elif "." in v:
            name = "domain"
        else:
            m = _TOKEN.fullmatch(v)
            name = v if m else "other"
    elif key == "client":
        # a database driver's own name: "mysql/3.3.8", "redis-py", "psql"
        m = _TOKEN.match(value.strip())
        name = m.group(0).split("/")[0] if m else ""
    else:
        name = ""
    return name[:FAMILY_MAX] or "other"
