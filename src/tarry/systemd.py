"""systemd integration with the standard library: socket activation and sd_notify.

Socket activation lets systemd (or ``systemd-socket-activate``) bind port 22
and hand tarry the listening socket, so tarry never needs root or
CAP_NET_BIND_SERVICE. The sockets arrive as fds 3, 4, ... with
``LISTEN_FDS``, ``LISTEN_PID`` and ``LISTEN_FDNAMES`` (sd_listen_fds(3)).
Each goes to the ``[[tarpit]]`` whose ``name`` equals the socket's
FileDescriptorName=, or else to the tarpit whose ``listen`` address it is bound
to. sd_notify(3) is one datagram to ``$NOTIFY_SOCKET`` per message.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from .bait import TarpitSpec
from .net import bind_listener, format_address, parse_address

SD_LISTEN_FDS_START = 3


@dataclass
class Inherited:
    """A listening socket systemd passed, and what it is called."""

    name: str
    sock: socket.socket
    address: str  # as tarry writes addresses: host:port or [v6]:port
    lent: bool = False  # the engine listens on it now


def listen_fds(environ: dict[str, str] | None = None, unset: bool = True) -> list[Inherited]:
    """The sockets passed to this process, if any; the variables are then unset,
    so children (there are none) would not take them too."""
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    names = env.get("LISTEN_FDNAMES", "")
    if unset:
        for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(var, None)
    if not count or not pid.isdigit() or int(pid) != os.getpid():
        return []
    if not count.isdigit():
        raise ActivationError(f"LISTEN_FDS={count!r} is not a number")
    n = int(count)
    labels = names.split(":") if names else []
    found = []
    for i in range(n):
        fd = SD_LISTEN_FDS_START + i
        name = labels[i] if i < len(labels) else "unknown"
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ActivationError(f"passed fd {fd} ({name}): {exc.strerror or exc}") from None
        os.set_inheritable(fd, False)
        if sock.type != socket.SOCK_STREAM or sock.family not in (
            socket.AF_INET,
            socket.AF_INET6,
        ):
            raise ActivationError(
                f"passed fd {fd} ({name}) is not a TCP socket (use ListenStream= with an IP port)"
            )
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ActivationError(
                f"passed fd {fd} ({name}) is not listening (Accept=yes is not supported)"
            )
        host, port = sock.getsockname()[:2]
        found.append(Inherited(name, sock, format_address(sock.family, host, port)))
    return found


class ActivationError(Exception):
    """The passed sockets cannot be used as they are; one line of text."""


def _matches(inherited: Inherited, address: str) -> bool:
    """Whether a passed socket is the one a ``listen`` address asks for."""
    try:
        host, port = parse_address(address)
    except ValueError:
        return False
    got_host, got_port = parse_address(inherited.address)
    if port != got_port:
        return False
    if host == "*":
        return got_host in ("::", "0.0.0.0")
    return socket.inet_pton(_family(host), host) == socket.inet_pton(_family(got_host), got_host)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


@dataclass
class Activation:
    """The passed sockets, lent to the engine in place of binding."""

    sockets: list[Inherited] = field(default_factory=list)
    log: Callable[[str], None] = print

    def assign(self, specs: list[TarpitSpec]) -> list[TarpitSpec]:
        """Give each tarpit the passed sockets named after it: their addresses
        replace its ``listen`` list. Other listen addresses are served, through
        ``bind``, by a passed socket bound there, or else bound by tarry itself."""
        for spec in specs:
            named = [s.address for s in self.sockets if spec.name and s.name == spec.name]
            if named:
                spec.listen = named
        return specs

    def unused(self) -> list[Inherited]:
        return [s for s in self.sockets if not s.lent]

    def bind(self, address: str) -> socket.socket:
        """A passed socket for ``address`` if there is one, else a new one."""
        return self.lend(address) or bind_listener(address)

    def lend(self, address: str) -> socket.socket | None:
        """A passed socket for ``address``, or None when tarry must bind it."""
        for inh in self.sockets:
            if not inh.lent and _matches(inh, address):
                inh.lent = True
                return inh.sock
        return None

    def discard(self, sock: socket.socket) -> None:
        """The engine lets go of a socket: close ours, keep systemd's for a later reload."""
        for inh in self.sockets:
            if inh.sock is sock:
                inh.lent = False
                return
        sock.close()


# ---- sd_notify ------------------------------------------------------------------


class Notifier:
    """Sends sd_notify messages; does nothing without $NOTIFY_SOCKET."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.sock: socket.socket | None = None
        self.address: str | bytes = ""
        if address and address[0] in "/@":
            # an abstract socket name starts with @, which stands for a NUL byte
            self.address = "\0" + address[1:] if address[0] == "@" else address
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            except OSError:
                self.sock = None
            else:
                # connected now, while the path is reachable: after a privilege
                # drop it may not be
                try:
                    self.sock.connect(self.address)
                except OSError:
                    pass
        usec = env.get("WATCHDOG_USEC", "")
        wpid = env.get("WATCHDOG_PID", "")
        self.watchdog = (
            int(usec) / 1e6
            if usec.isdigit() and int(usec) > 0 and (not wpid or wpid == str(os.getpid()))
            else 0.0
        )
        self.last_status = ""

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def send(self, *fields: str) -> bool:
        if self.sock is None:
            return False
        data = "\n".join(fields).encode("utf-8", "replace")
        try:
            self.sock.send(data)
            return True
        except OSError:
            pass
        try:  # not connected, or systemd re-created its socket
            self.sock.sendto(data, self.address)
            return True
        except OSError:
            return False  # systemd is gone or busy; the service goes on

    def status(self, text: str) -> None:
        if text != self.last_status:
            self.last_status = text
            self.send(f"STATUS={text}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, for RELOADING=1 (Type=notify-reload)."""
    import time

    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
