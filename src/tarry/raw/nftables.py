"""Keep the kernel's own TCP stack silent on the raw stack's ports.

With no socket bound, the kernel would answer every SYN to a tarpit port with
a RST, and conntrack would keep an entry per client. tarry's own nftables
table, ``table inet tarry``, stops both:

- ``notrack`` in raw prerouting (what arrives) and raw output (what we send):
  no conntrack entry per client;
- ``drop`` in input: the segments the packet ring has already seen never
  reach the kernel's TCP, so it sends no RST.

The whole table is written in one ``nft -j -f -`` transaction that first adds
and deletes it, so a stale one left by a crash goes in the same step, and
nothing is half-installed. ``remove`` deletes it on exit. nft is run as a
program with JSON on stdin: no hand-built netlink.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterable
from typing import Any

FAMILY, TABLE = "inet", "tarry"
TIMEOUT = 10.0  # seconds for one nft run; it takes milliseconds
RAW_PRIORITY = -300  # before conntrack (-200), so notrack works
_REF = {"family": FAMILY, "table": TABLE}


class NftError(Exception):
    """nft is missing, not permitted, or refused the rules: one line saying which."""


def _match(proto: str, field: str, value: Any) -> dict[str, Any]:
    return {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": proto, "field": field}},
            "right": value,
        }
    }


def _rules(chain: str, targets: Iterable[tuple[str, int]], verdict: dict[str, Any]) -> list[Any]:
    """One rule per target; ``sport``/``saddr`` in output, where we are the source."""
    side = "s" if chain == "out" else "d"
    rules = []
    for host, port in targets:
        expr = []
        if host not in ("*", ""):
            proto = "ip6" if ":" in host else "ip"
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            try:
                socket.inet_pton(family, host)
            except OSError:
                raise NftError(f"{host!r} is not an IP address for the tarry table") from None
            expr.append(_match(proto, side + "addr", host))
        expr.append(_match("tcp", side + "port", port))
        expr.append(verdict)
        rules.append({"add": {"rule": {**_REF, "chain": chain, "expr": expr}}})
    return rules


def _chain(name: str, hook: str, prio: int) -> dict[str, Any]:
    return {
        "add": {
            "chain": {
                **_REF,
                "name": name,
                "type": "filter",
                "hook": hook,
                "prio": prio,
                "policy": "accept",
            }
        }
    }


def ruleset(targets: list[tuple[str, int]]) -> dict[str, Any]:
    """The JSON transaction that replaces any ``table inet tarry`` with ours for
    ``targets``: (address or ``*``, port) pairs."""
    table = {"table": {"family": FAMILY, "name": TABLE}}
    commands: list[Any] = [{"add": table}, {"delete": table}, {"add": table}]
    commands += [
        _chain("pre", "prerouting", RAW_PRIORITY),
        _chain("out", "output", RAW_PRIORITY),
        _chain("in", "input", 0),
    ]
    commands += _rules("pre", targets, {"notrack": None})
    commands += _rules("out", targets, {"notrack": None})
    commands += _rules("in", targets, {"drop": None})
    return {"nftables": commands}


def _which(nft: str) -> str:
    path = shutil.which(nft)
    if path is None:
        raise NftError(f'stack = "raw" needs the nft program (nftables) and {nft!r} is not on PATH')
    return path


def _run(doc: dict[str, Any], nft: str) -> str:
    path = _which(nft)
    try:
        done = subprocess.run(
            [path, "-j", "-f", "-"],
            input=json.dumps(doc),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NftError(f"could not run {path}: {exc}") from None
    if done.returncode != 0:
        err = " ".join(done.stderr.split())[:300] or f"exit status {done.returncode}"
        if "Operation not permitted" in err or "Permission denied" in err:
            raise NftError(
                'stack = "raw" needs CAP_NET_ADMIN to install its nftables table '
                "(nft: Operation not permitted)"
            )
        raise NftError(f"nft refused the tarry table: {err}")
    return done.stdout


def install(targets: list[tuple[str, int]], nft: str = "nft") -> None:
    """Install the table for ``targets``, replacing a stale one in the same step."""
    _run(ruleset(targets), nft)


def remove(nft: str = "nft") -> None:
    """Delete the table if it is there (add-then-delete: no error when it is not)."""
    table = {"table": {"family": FAMILY, "name": TABLE}}
    _run({"nftables": [{"add": table}, {"delete": table}]}, nft)


def present(nft: str = "nft") -> bool:
    """Whether ``table inet tarry`` exists (for tests and start-up notices)."""
    done = subprocess.run(
        [_which(nft), "-j", "list", "tables", FAMILY],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        return False
    tables = json.loads(done.stdout or '{"nftables": []}').get("nftables", [])
    return any(item.get("table", {}).get("name") == TABLE for item in tables)
