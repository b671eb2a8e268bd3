"""``/metrics`` with only the ``metrics`` extra: prometheus_client's own small server.

Without the ``dashboard`` extra (aiohttp) there is no admin app, but the
``[admin] listen`` address still serves the scrape, from prometheus_client's
threading WSGI server on a thread of its own. The same rules as the admin
listener hold: a public address needs the token (``Authorization: Bearer``),
and a ``Host`` that is not an IP literal, ``localhost`` or a configured name
is refused (a DNS-rebinding page reaching a loopback listener).
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from .admin import AdminError, bind_error, host_allowed, split_listen
from .metrics import Registry, exposition

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not news; stdout is the event log."""


class MetricsServer:
    """A started metrics-only listener: the admin listener's ``host``, ``port``,
    ``url`` and ``await close()``."""

    def __init__(self, server: Any, host: str) -> None:
        self.server = server
        self.host = host
        self.port: int = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, name="tarry-metrics", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def close(self) -> None:
        await asyncio.to_thread(self.server.shutdown)
        self.server.server_close()


def app(reg: Registry, token: str, hosts: frozenset[str]) -> Callable[..., Iterable[bytes]]:
    """The WSGI app: ``/metrics`` only, behind the token and the Host check."""
    want = f"Bearer {token}".encode()

    def serve(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def reply(
            status: str, body: bytes, ctype: str = "text/plain; charset=utf-8"
        ) -> list[bytes]:
            start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
            return [body]

        if not host_allowed(environ.get("HTTP_HOST"), hosts):
            return reply("421 Misdirected Request", b"unknown host name\n")
        if token:
            got = environ.get("HTTP_AUTHORIZATION", "").encode()
            if not hmac.compare_digest(got, want):
                return reply("401 Unauthorized", b"token required\n")
        if environ.get("PATH_INFO") != "/metrics":
            return reply(
                "404 Not Found", b"only /metrics: the dashboard needs 'tarry[dashboard]'\n"
            )
        body, ctype = exposition(reg)
        return reply("200 OK", body, ctype)

    return serve


async def serve_metrics(
    reg: Registry, listen: str, token: str = "", hosts: Iterable[str] = ()
) -> MetricsServer:
    """Start the listener; AdminError says why it cannot."""
    from prometheus_client.exposition import ThreadingWSGIServer

    problem = bind_error(listen, token)
    if problem:
        raise AdminError(problem)
    host, port = split_listen(listen)
    names = frozenset(h.lower() for h in hosts)

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    try:
        server = make_server(host, port, app(reg, token, names), Server, _Quiet)
    except OSError as exc:
        raise AdminError(f"admin.listen = {listen!r}: {exc.strerror or exc}") from exc
    return MetricsServer(server, host)
