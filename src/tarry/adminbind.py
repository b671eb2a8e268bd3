"""The admin listener's address and who may bind it: what config checks need,
without the admin app (so that a config without a dashboard loads none of it)."""

from __future__ import annotations

import ipaddress

DEFAULT_LISTEN = "127.0.0.1:8787"
TOKEN_MIN = 16  # characters of a token that guards a public bind


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` into its parts; raises ValueError with the reason."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host:
        raise ValueError("must be host:port, e.g. 127.0.0.1:8787")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} is not a number from 0 to 65535")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_error(listen: str, token: str) -> str | None:
    """Why ``listen`` may not be used with ``token``, or None."""
    try:
        host, _port = split_listen(listen)
    except ValueError as exc:
        return f"admin.listen = {listen!r}: {exc}"
    if not is_loopback(host) and not token:
        return (
            f"admin.listen = {listen!r} is not a loopback address: "
            "set admin.token to a secret to expose the dashboard, or listen on 127.0.0.1"
        )
    if not is_loopback(host) and len(token) < TOKEN_MIN:
        return (
            f"admin.token: a token that guards a public address must have at least "
            f"{TOKEN_MIN} characters (got {len(token)})"
        )
    return None
