#!/usr/bin/env python3
"""Write man/tarry.1 from tarry's own help texts (``tarry --help`` and each
command's ``--help``), so the man page never says anything the help does not.

Run: python scripts/gen-manpage.py > man/tarry.1   (make man does this; a test
checks that the committed page is what this writes.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("serve", "ssh", "check-config", "default-config", "report")


def helptext(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "XDG_STATE_HOME"}
    # the same page from any user and machine: a service's state directory
    env.update(PYTHONPATH=str(ROOT / "src"), COLUMNS="80", STATE_DIRECTORY="/var/lib/tarry")
    out = subprocess.run(
        [sys.executable, "-m", "tarry", *args, "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    # argparse names the program after argv[0]; the page is about "tarry"
    return out.replace("__main__.py", "tarry")


def roff(text: str) -> str:
    """Preformatted text, safe for roff: backslashes doubled, no line read as a request."""
    lines = []
    for line in text.rstrip("\n").split("\n"):
        line = line.replace("\\", "\\e")
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return ".nf\n" + "\n".join(lines) + "\n.fi\n"


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from tarry import __version__

    parts = [
        f'.TH TARRY 1 "" "tarry {__version__}" "User Commands"\n',
        ".SH NAME\ntarry \\- a multi-protocol network tarpit (SSH, HTTP, SMTP)\n",
        ".SH SYNOPSIS\n.B tarry\n.I COMMAND\n[options]\n",
        ".SH DESCRIPTION\n",
        roff(helptext()),
    ]
    for command in COMMANDS:
        parts.append(f".SH tarry {command}\n")
        parts.append(roff(helptext(command)))
    parts.append(
        ".SH FILES\n.TP\n/etc/tarry/tarry.toml\nwhat \\fBtarry serve\\fR runs without \\-c"
        " (\\fBTARRY_CONFIG_FILE\\fR names another).\n.TP\n/etc/endlessh/config\n"
        "what \\fBtarry ssh\\fR reads, as endlessh does.\n.TP\n/var/lib/tarry\n"
        "the state directory (history store, generated certificates) when run as root.\n"
    )
    parts.append(
        ".SH SEE ALSO\n.BR endlessh (1),\n.BR systemd.socket (5),\n"
        "the documents installed in /usr/local/share/doc/tarry (deploy.md).\n"
    )
    sys.stdout.write("".join(parts))


if __name__ == "__main__":
    main()
