"""Addresses and listening sockets: parsing ``host:port``, binding, tuning.

Config checks, systemd socket activation and both run modes need these
without the engine, so they live here. An IPv4 peer of a dual-stack socket is
``::ffff:a.b.c.d``; ``unmapped`` is the one place that turns it into
``a.b.c.d``.
"""

from __future__ import annotations

import errno
import resource
import socket


def unmapped(host: str) -> str:
    """``a.b.c.d`` for an IPv4-mapped ``::ffff:a.b.c.d``; any other address as is."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host


class BindError(Exception):
    """A listen address could not be bound; the message says why in words."""


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` with ``[v6]:port``; host ``*`` or empty means every address."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError("must be host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ValueError("brackets are only for IPv6 addresses")
    elif ":" in host:
        raise ValueError("an IPv6 address must be in brackets, e.g. [::1]:2222")
    if host in ("", "*"):
        host = "*"
    else:
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                socket.inet_pton(family, host)
                break
            except OSError:
                continue
        else:
            raise ValueError(f"{host!r} is not an IP address (or * for every address)")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number from 0 to 65535")
    return host, int(port_text)


def format_address(family: int, host: str, port: int) -> str:
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


def bind_listener(text: str, reuseport: bool = False, listen: bool = True) -> socket.socket:
    """A listening socket for ``text``: ``*`` is dual-stack where IPv6 exists;
    ``[::]`` is IPv6 only, so it can sit beside ``0.0.0.0`` on the same port.
    ``reuseport`` lets several sockets share the address (workers);
    ``listen=False`` only binds, to see whether the address is free."""
    host, port = parse_address(text)
    if host == "*":
        if socket.has_ipv6:
            try:
                return _bind(socket.AF_INET6, "::", port, False, reuseport, listen)
            except BindError as exc:
                if not isinstance(exc.__cause__, OSError) or exc.__cause__.errno not in (
                    errno.EAFNOSUPPORT,
                    errno.EADDRNOTAVAIL,
                ):
                    raise
        return _bind(socket.AF_INET, "0.0.0.0", port, True, reuseport, listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return _bind(family, host, port, True, reuseport, listen)


def _bind(
    family: int,
    host: str,
    port: int,
    v6only: bool = True,
    reuseport: bool = False,
    listen: bool = True,
) -> socket.socket:
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise BindError(f"cannot create a socket: {exc.strerror}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        tune_listener(sock)
        sock.bind((host, port))
        if listen:
            sock.listen(min(socket.SOMAXCONN * 16, 65535))
    except OSError as exc:
        sock.close()
        where = format_address(family, host, port)
        if exc.errno == errno.EADDRINUSE:
            why = f"{where}: address already in use"
        elif exc.errno == errno.EACCES and port < 1024:
            why = (
                f"{where}: permission denied (ports below 1024 need root or "
                "CAP_NET_BIND_SERVICE; or use systemd socket activation)"
            )
        else:
            why = f"{where}: {exc.strerror or exc}"
        raise BindError(why) from exc
    return sock


def tune_listener(sock: socket.socket) -> None:
    """Accepted sockets inherit these: tiny buffers, so a peer that floods us or
    never reads costs the least kernel memory, and no Nagle delay on drips."""
    sock.setblocking(False)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 1)
        except OSError:
            pass
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


def raise_fd_limit() -> int:
    """Every held client is an fd: use all the descriptors the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
        except (ValueError, OSError):
            pass
    return soft
