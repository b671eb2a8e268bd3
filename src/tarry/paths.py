"""Where tarry keeps its files (history, generated certificates)."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """systemd's StateDirectory=, then $XDG_STATE_HOME/tarry, then /var/lib/tarry
    for root and ~/.local/state/tarry for anyone else."""
    for var in ("STATE_DIRECTORY", "XDG_STATE_HOME"):
        value = os.environ.get(var, "").split(":")[0]
        if value:
            return Path(value) / ("" if var == "STATE_DIRECTORY" else "tarry")
    if os.geteuid() == 0:
        return Path("/var/lib/tarry")
    return Path.home() / ".local" / "state" / "tarry"
