"""``tarry top``: the tarpit live in a terminal, from the admin API.

Once a second it reads ``/api/summary`` of a running ``tarry serve`` and draws,
with rich (the ``top`` extra): the clients held now per protocol, the
longest-held clients, the latest closes with what each client said, and the
seconds wasted. It fits 80x24, so it works over SSH; ``q`` quits. Only the
drawing is rich's; keys are read from the terminal in cbreak mode.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import termios
import time
import tty
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .bait import shown
from .report import human

PROG = "tarry top"
DEFAULT_URL = "http://127.0.0.1:8787/"
INTERVAL = 1.0  # seconds between two reads of the API
TIMEOUT = 0.9  # seconds one read may take, so the view keeps its pace
BODY_MAX = 1 << 20  # bytes of one API answer we read
SAID_KEYS = (  # the notes that say what a client did, in the order shown
    ("method", ""),
    ("path", ""),
    ("ssh_id", ""),
    ("user_agent", ""),
    ("ehlo", "EHLO "),
    ("mail_from", "from "),
    ("rcpt_to", "to "),
    ("auth_user", "user "),
)


class TopError(Exception):
    """Bad input or no tarry to read; the text is one line for the operator."""


def said(notes: Mapping[str, str]) -> str:
    """What a client said, as a few readable words (the notes are sanitised already)."""
    return " ".join(f"{label}{notes[k]}" for k, label in SAID_KEYS if notes.get(k))


def fetch(url: str, token: str) -> dict[str, Any]:
    req = urllib.request.Request(url + "api/summary?limit=20")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            data = json.loads(resp.read(BODY_MAX))
    except urllib.error.HTTPError as exc:
        raise TopError(f"{url}: HTTP {exc.code} (a token? pass --token)") from None
    except (OSError, ValueError) as exc:
        raise TopError(f"{url}: {getattr(exc, 'reason', None) or exc}") from None
    if not isinstance(data, dict):
        raise TopError(f"{url}: not tarry's admin API")
    return data


def view(data: dict[str, Any], height: int, url: str) -> Any:
    """The screen for one answer of /api/summary, in ``height`` lines."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    held = data.get("held", {})
    protos = data.get("protocols", [])
    wasted = float(data.get("time_wasted", 0))
    line = f"tarry top  {url}  up {human(float(data.get('uptime', 0)))}  "
    line += f"held {data.get('held_total', 0)}  wasted {human(wasted)} since start"
    all_time = data.get("all_time")
    if isinstance(all_time, dict):
        line += f", {human(float(all_time.get('time_wasted', 0)))} all history"
    head = Text(line, style="bold", no_wrap=True, overflow="ellipsis")
    # fixed lines: head, 3 titles + 3 table heads, footer; the rest is shared by two lists
    rows = max(1, (height - 8 - len(protos)) // 2)

    def table(title: str, *cols: str) -> Table:
        t = Table(title=title, title_justify="left", box=None, pad_edge=False, expand=True)
        t.title_style = "bold cyan"
        for i, c in enumerate(cols):
            last = i == len(cols) - 1
            t.add_column(
                c,
                no_wrap=True,
                overflow="ellipsis",
                justify="left" if last or i < 2 else "right",
                ratio=1 if last else None,
            )
        return t

    by = table("Held now (by protocol)", "proto", "held", "sessions", "seconds")
    for p in protos:
        by.add_row(
            p,
            str(held.get(p, 0)),
            str(data.get("sessions", {}).get(p, 0)),
            human(float(data.get("time_wasted_by_proto", {}).get(p, 0))),
        )
    longest = table("Longest held now", "proto", "address", "held", "said")
    for c in data.get("clients", [])[:rows]:
        longest.add_row(
            c["proto"],
            f"{c['host']} {c.get('country') or ''}".strip(),
            human(float(c["age"])),
            shown_text(said(c.get("notes", {}))),
        )
    latest = table("Latest closes", "proto", "address", "held", "reason", "said")
    for c in data.get("recent", [])[:rows]:
        latest.add_row(
            c["proto"],
            f"{c['host']} {c.get('country') or ''}".strip(),
            human(float(c["duration"])),
            c.get("reason", ""),
            shown_text(said(c.get("notes", {}))),
        )
    foot = Text("q quits; refreshed every second (since start = this run of tarry)", style="dim")
    return Group(head, by, longest, latest, foot)


def shown_text(text: str) -> str:
    """Peer text is sanitised by the baits; rich markup is not applied to cells,
    and control characters are shown escaped all the same."""
    return text if text.isprintable() else shown(text)[1:-1]


@contextmanager
def cbreak() -> Iterator[None]:
    """Keys one at a time, without echo, while the view runs (a no-op off a terminal)."""
    fd = sys.stdin.fileno()
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def key(timeout: float) -> str:
    """One key pressed within ``timeout`` seconds, or ""."""
    ready, _, _ = select.select([sys.stdin], [], [], max(0.0, timeout))
    return os.read(sys.stdin.fileno(), 1).decode(errors="replace") if ready else ""


def run(url: str, token: str) -> int:
    try:
        from rich.console import Console
        from rich.live import Live
    except ImportError:
        raise TopError("needs the 'top' extra: pip install 'tarry[top]'") from None
    data = fetch(url, token)  # a wrong address is said at once, not drawn
    console = Console()
    trouble = ""
    with cbreak(), Live(console=console, screen=True, auto_refresh=False) as live:
        while True:
            live.update(view(data, console.size.height, url + trouble), refresh=True)
            deadline = time.monotonic() + INTERVAL
            while (left := deadline - time.monotonic()) > 0:
                if key(left) in ("q", "Q"):
                    return 0
            try:
                data, trouble = fetch(url, token), ""
            except TopError as exc:  # tarry restarting: keep the last view, say why
                trouble = f" (stale: {exc})"


def admin_url(config: str | None) -> str:
    """The dashboard's URL from a tarry.toml's [admin] listen, or the default."""
    if not config:
        return DEFAULT_URL
    from .adminbind import split_listen
    from .config import ConfigError, load

    try:
        listen = str(load(config).sections.get("admin", {}).get("listen", "127.0.0.1:8787"))
    except ConfigError as exc:
        raise TopError(str(exc)) from None
    if not listen:
        raise TopError(f"{config}: [admin] listen is off: tarry top reads the admin API")
    host, port = split_listen(listen)
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="A live view of a running tarry serve, from its admin API; q quits.",
    )
    p.add_argument("--url", help=f"the admin listener (default: from -c, else {DEFAULT_URL})")
    p.add_argument("-c", "--config", metavar="FILE", help="take the URL from this tarry.toml")
    p.add_argument(
        "--token",
        default=os.environ.get("TARRY_ADMIN_TOKEN", ""),
        help="admin.token, for a listener that is not on loopback (or TARRY_ADMIN_TOKEN)",
    )
    return p


def top_main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        url = args.url or admin_url(args.config)
        if not url.endswith("/"):
            url += "/"
        if not url.startswith(("http://", "https://")):
            raise TopError(f"--url: {shown(url)} is not an http:// URL")
        return run(url, args.token)
    except TopError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
