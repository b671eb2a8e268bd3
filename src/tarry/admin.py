"""The admin listener: live dashboard, ``/metrics`` and a JSON API (aiohttp).

It runs in the engine's event loop. Every handler is short: figures come from
in-memory aggregates and from two callables the engine provides,
``snapshot(limit)`` (the longest-held current clients as plain dicts) and
``held()`` (clients held per protocol); charts are drawn in a worker thread and
cached until the data changes.

Binding anywhere but loopback requires a token: the page then takes it once
as ``?token=`` and keeps it in a cookie; scrapers send ``Authorization: Bearer``.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .adminguard import Gate, aiohttp_limits, guarded  # before a privilege drop
from .geo import Lookup
from .metrics import Live
from .net import unmapped
from .stats import LiveStats

Snapshot = Callable[[int], list[dict[str, Any]]]
Held = Callable[[], Mapping[str, int]]

DEFAULT_LISTEN = "127.0.0.1:8787"
COOKIE = "tarry_token"
CHART_MIN_AGE = {"world": 15.0}  # seconds a chart is reused even when data changed
CHART_DEFAULT_AGE = 2.0
CLIENTS_MAX = 1000  # rows one /api/clients request may ask for
CLIENTS_TTL = 1.0  # seconds an /api/clients answer is shared by callers
TOKEN_MIN = 16  # characters of a token that guards a public bind


class AdminError(Exception):
    """The admin listener cannot start; the text is one line for the operator."""


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


def host_allowed(header: str | None, names: frozenset[str]) -> bool:
    """Whether a request's ``Host`` may reach the API: an IP literal, ``localhost``
    or a configured name. A DNS-rebinding page reaches a loopback listener
    under a name of the attacker's, which is none of these."""
    if header is None:
        return True  # HTTP/1.0 scrapers; browsers always send Host
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host in ("localhost", "localhost.") or host in names:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _json_default(o: object) -> object:
    if isinstance(o, tuple | set | frozenset):
        return list(o)
    return str(o)


def client_row(c: Mapping[str, Any], lookup: Lookup | None) -> dict[str, Any]:
    """One current client for the API: plain JSON, IPv4 shown as IPv4, country added."""
    host = unmapped(str(c.get("host", "")))
    notes = c.get("notes") or {}
    if not isinstance(notes, Mapping):
        notes = dict(notes)
    return {
        "proto": c.get("proto", ""),
        "listener": c.get("listener", ""),
        "host": host,
        "port": c.get("port", 0),
        "age": round(float(c.get("age", 0.0)), 1),
        "sent": c.get("sent", 0),
        "country": c.get("country") or (lookup(host) if lookup else ""),
        "notes": {str(k): str(v) for k, v in notes.items()},
    }


@dataclass
class Admin:
    """What the app serves from; one per process."""

    stats: LiveStats
    snapshot: Snapshot
    held: Held
    token: str = ""
    registry: Any = None
    """A prometheus_client registry, or None (then /metrics is 404)."""
    lookup: Lookup | None = None
    live: Live | None = None
    history_totals: tuple[int, float] | None = None
    """(sessions, seconds) in the history store at start-up, for all-time figures."""
    hosts: tuple[str, ...] = ()
    """Host names the API answers to besides IP literals and localhost."""
    charts: dict[str, tuple[int, float, str]] = field(default_factory=dict)
    _rendering: dict[str, asyncio.Future[str]] = field(default_factory=dict)
    _clients: dict[int, tuple[float, str]] = field(default_factory=dict)

    def clients_json(self, limit: int) -> str:
        """The longest-held clients as JSON, made at most once per ``CLIENTS_TTL``
        per limit: callers polling together share one pass over the table, so
        the API's cost on the tarpits' loop is bounded whoever asks."""
        now = time.monotonic()
        cached = self._clients.get(limit)
        if cached is not None and now - cached[0] < CLIENTS_TTL:
            return cached[1]
        rows = [client_row(c, self.lookup) for c in self.snapshot(limit)]
        body = json.dumps(rows, default=_json_default)
        if len(self._clients) >= 8:
            self._clients.clear()
        self._clients[limit] = (now, body)
        return body

    def summary(self, limit: int = 20) -> dict[str, Any]:
        s = self.stats
        held = dict(self.held())
        live: Mapping[tuple[str, str], tuple[int, float, int]] = {}
        if self.live is not None:
            try:
                live = self.live()
            except Exception:
                live = {}
        live_secs = sum(v[1] for v in live.values())
        wasted = sum(s.seconds.values()) + live_secs
        out: dict[str, Any] = {
            "now": time.time(),
            "uptime": round(time.time() - s.started, 1),
            "held": held,
            "held_total": sum(held.values()),
            "protocols": sorted(set(held) | s.protocols),
            "connections": dict(s.connections),
            "sessions": dict(s.sessions),
            "time_wasted": round(wasted, 1),
            "time_wasted_by_proto": {p: round(v, 1) for p, v in s.seconds.items()},
            "bytes_sent": sum(s.sent.values()),
            "countries": s.countries.most_common(10),
            "software": s.families.most_common(10),
            "software_seconds": [
                (f, round(v, 1))
                for f, v in sorted(s.family_seconds.items(), key=lambda kv: -kv[1])[:10]
            ],
            "clients": [client_row(c, self.lookup) for c in self.snapshot(limit)],
            "recent": list(reversed(s.recent))[:limit],
        }
        if self.history_totals is not None:
            n, secs = self.history_totals
            out["all_time"] = {
                "sessions": n + sum(s.sessions.values()),
                "time_wasted": round(secs + wasted, 1),
            }
        return out

    async def chart(self, name: str) -> tuple[int, str]:
        """The SVG of chart ``name`` and the data version it shows."""
        from .charts import render

        cached = self.charts.get(name)
        now = time.monotonic()
        version = self.stats.version
        if cached is not None and (
            cached[0] == version or now - cached[1] < CHART_MIN_AGE.get(name, CHART_DEFAULT_AGE)
        ):
            return cached[0], cached[2]
        pending = self._rendering.get(name)
        if pending is None:  # one render at a time per chart, however many viewers
            data = self.stats.chart_data()
            pending = asyncio.ensure_future(asyncio.to_thread(render, name, data))
            self._rendering[name] = pending
            try:
                svg = await pending
            finally:
                del self._rendering[name]
            self.charts[name] = (data["version"], time.monotonic(), svg)
            return data["version"], svg
        svg = await asyncio.shield(pending)
        return self.charts.get(name, (version, now, svg))[0], svg


def make_app(admin: Admin) -> Any:
    """The aiohttp application."""
    from aiohttp import web

    from .charts import CHARTS

    token = admin.token.encode()
    names = frozenset(h.lower() for h in admin.hosts)

    def authorised(request: web.Request) -> bool:
        if not token:
            return True
        auth = request.headers.get("Authorization", "")
        offered = auth[7:] if auth.startswith("Bearer ") else request.cookies.get(COOKIE, "")
        offered = offered or request.query.get("token", "")
        # peers' bytes that are not UTF-8 arrive as surrogates: compare them as bytes
        return hmac.compare_digest(offered.encode("utf-8", "surrogateescape"), token)

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if not host_allowed(request.headers.get("Host"), names):
            return web.Response(status=421, text="unknown host name\n")
        if request.path != "/healthz" and not authorised(request):
            return web.Response(status=401, text="token required\n")
        resp = await handler(request)
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp

    async def index(request: web.Request) -> web.StreamResponse:
        resp = web.Response(text=PAGE, content_type="text/html")
        if token and "token" in request.query:  # keep it in a cookie, out of the address bar
            resp = web.Response(status=302, headers={"Location": "./"})
            resp.set_cookie(
                COOKIE, admin.token, httponly=True, samesite="Strict", secure=request.secure
            )
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; img-src 'self' data:"
        )
        return resp

    async def summary(request: web.Request) -> web.Response:
        try:
            limit = max(1, min(int(request.query.get("limit", "20")), 500))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be a number\n") from None
        body = json.dumps(admin.summary(limit), default=_json_default)
        return web.Response(text=body, content_type="application/json")

    async def clients(request: web.Request) -> web.Response:
        try:
            limit = max(1, min(int(request.query.get("limit", "100")), CLIENTS_MAX))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be a number\n") from None
        return web.Response(text=admin.clients_json(limit), content_type="application/json")

    async def chart(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in CHARTS:
            raise web.HTTPNotFound()
        version, svg = await admin.chart(name)
        etag = f'"{name}-{version}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(text=svg, content_type="image/svg+xml", headers={"ETag": etag})

    async def metrics(request: web.Request) -> web.Response:
        if admin.registry is None:
            raise web.HTTPNotFound(text="metrics are off (install the 'metrics' extra)\n")
        from .metrics import exposition

        body, ctype = exposition(admin.registry)
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = ctype
        return resp

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", index)
    app.router.add_get("/api/summary", summary)
    app.router.add_get("/api/clients", clients)
    app.router.add_get("/chart/{name}.svg", chart)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


class AdminServer:
    """A started admin listener."""

    def __init__(
        self, runner: Any, host: str, port: int, server: asyncio.Server, gate: Any
    ) -> None:
        self.runner = runner
        self.host = host
        self.port = port
        self.server = server
        self.gate = gate
        """The connection count and what the guard refused (``adminguard.Gate``)."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def close(self) -> None:
        self.server.close()  # no new connections; the runner closes the open ones
        await self.runner.cleanup()


async def serve(admin: Admin, listen: str = DEFAULT_LISTEN) -> AdminServer:
    """Start the admin listener on the running loop; AdminError says why it cannot."""
    problem = bind_error(listen, admin.token)
    if problem:
        raise AdminError(problem)
    try:
        from aiohttp import web
    except ImportError as exc:
        raise AdminError(
            "the dashboard needs the 'dashboard' extra (pip install 'tarry[dashboard]')"
        ) from exc
    host, port = split_listen(listen)
    runner = web.AppRunner(
        make_app(admin),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=1.0,
        **aiohttp_limits(),
    )
    await runner.setup()
    assert runner.server is not None
    gate = Gate()
    try:
        server = await asyncio.get_running_loop().create_server(
            guarded(runner.server, gate), host or None, port, reuse_address=True, backlog=128
        )
    except OSError as exc:
        await runner.cleanup()
        raise AdminError(f"admin.listen = {listen!r}: {exc.strerror or exc}") from exc
    real_port = server.sockets[0].getsockname()[1] if server.sockets else port
    return AdminServer(runner, host, real_port, server, gate)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tarry</title>
<style>
body{margin:0;font:14px/1.4 system-ui,sans-serif;background:#2e3440;color:#d8dee9}
header{padding:12px 20px;background:#3b4252;display:flex;gap:24px;
 align-items:baseline;flex-wrap:wrap}
header h1{margin:0;font-size:20px;color:#eceff4}
.tiles{display:flex;gap:12px;flex-wrap:wrap;padding:16px 20px 0}
.tile{background:#3b4252;border-radius:6px;padding:10px 16px;min-width:120px}
.tile .v{font-size:26px;color:#eceff4;font-variant-numeric:tabular-nums}
.tile .k{font-size:12px;color:#a0a8b7;text-transform:uppercase;letter-spacing:.05em}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:12px;
 padding:16px 20px}
.card{background:#3b4252;border-radius:6px;padding:8px;min-height:120px;overflow:auto}
.card svg{width:100%;height:auto}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #4c566a;white-space:nowrap}
td.notes{white-space:normal;word-break:break-all;color:#a0a8b7}
#status{font-size:12px;color:#a0a8b7}
#chart-world .country:not(.series){fill:#4c566a}
</style></head><body>
<header><h1>tarry</h1><span id="status">connecting…</span></header>
<div class="tiles" id="tiles"></div>
<div class="grid">
<div class="card" id="chart-connections" data-chart="connections"></div>
<div class="card" id="chart-durations" data-chart="durations"></div>
<div class="card"><h3>Longest-held clients now</h3>
<table id="clients"><thead><tr><th>proto</th><th>client</th><th>country</th><th>held</th>
<th>bytes</th><th>what it said</th></tr></thead><tbody></tbody></table></div>
<div class="card" id="chart-countries" data-chart="countries"></div>
<div class="card" id="chart-software" data-chart="software"></div>
<div class="card"><h3>Seconds held by client family (since start)</h3>
<table id="families"><thead><tr><th>family</th><th>time wasted</th></tr></thead>
<tbody></tbody></table></div>
<div class="card" id="chart-world" data-chart="world"></div>
</div>
<script>
"use strict";
const etags = {};
function hms(s) {
  s = Math.round(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
        m = Math.floor(s % 3600 / 60), r = s % 60;
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  if (m) return m + "m " + r + "s";
  return r + "s";
}
function tile(k, v) {
  const t = document.createElement("div"); t.className = "tile";
  const a = document.createElement("div"); a.className = "v"; a.textContent = v;
  const b = document.createElement("div"); b.className = "k"; b.textContent = k;
  t.append(a, b); return t;
}
function cell(tr, text, cls) {
  const td = document.createElement("td"); td.textContent = text;
  if (cls) td.className = cls; tr.append(td);
}
async function poll() {
  try {
    const r = await fetch("api/summary?limit=20", {credentials: "same-origin"});
    if (!r.ok) throw new Error(r.status + " " + r.statusText);
    const s = await r.json();
    const tiles = [tile("held now", s.held_total)];
    for (const p of s.protocols) tiles.push(tile(p + " held", s.held[p] || 0));
    tiles.push(tile("time wasted", hms(s.time_wasted)));
    if (s.all_time) tiles.push(tile("all time wasted", hms(s.all_time.time_wasted)));
    let conns = 0; for (const p in s.connections) conns += s.connections[p];
    tiles.push(tile("connections", conns));
    document.getElementById("tiles").replaceChildren(...tiles);
    const body = document.querySelector("#clients tbody");
    const rows = s.clients.map(c => {
      const tr = document.createElement("tr");
      cell(tr, c.proto); cell(tr, c.host + ":" + c.port); cell(tr, c.country || "");
      cell(tr, hms(c.age)); cell(tr, c.sent);
      cell(tr, Object.entries(c.notes).map(([k, v]) => k + "=" + v).join(" "), "notes");
      return tr;
    });
    body.replaceChildren(...rows);
    document.querySelector("#families tbody").replaceChildren(...s.software_seconds.map(
      ([f, secs]) => { const tr = document.createElement("tr");
                       cell(tr, f); cell(tr, hms(secs)); return tr; }));
    document.getElementById("status").textContent =
      "live · updated " + new Date().toLocaleTimeString() + " · up " + hms(s.uptime);
  } catch (e) {
    document.getElementById("status").textContent = "disconnected: " + e.message;
  }
}
async function charts() {
  for (const el of document.querySelectorAll("[data-chart]")) {
    const name = el.dataset.chart;
    try {
      const headers = etags[name] ? {"If-None-Match": etags[name]} : {};
      const r = await fetch("chart/" + name + ".svg", {credentials: "same-origin", headers});
      if (r.status === 200) {
        etags[name] = r.headers.get("ETag");
        // parsed as XML: the world map nests prefixed SVG elements that HTML parsing drops
        const doc = new DOMParser().parseFromString(await r.text(), "image/svg+xml");
        el.replaceChildren(document.importNode(doc.documentElement, true));
        el.dataset.version = etags[name];
      }
    } catch (e) { /* next round */ }
  }
}
poll(); charts();
setInterval(poll, 2000);
setInterval(charts, 5000);
</script></body></html>
"""
