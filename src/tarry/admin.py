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

__all__ = ["DEFAULT_LISTEN", "TOKEN_MIN", "bind_error", "is_loopback", "split_listen"]

from .adminbind import DEFAULT_LISTEN, TOKEN_MIN, bind_error, is_loopback, split_listen
from .adminguard import Gate, aiohttp_limits, guarded  # before a privilege drop
from .charts import OTHER_COLOURS, PROTO_COLOURS
from .geo import Lookup
from .metrics import Live
from .net import unmapped
from .stats import LiveStats

Snapshot = Callable[[int], list[dict[str, Any]]]
Held = Callable[[], Mapping[str, int]]

COOKIE = "tarry_token"
CHART_MIN_AGE = {"world": 15.0}  # seconds a chart is reused even when data changed
CHART_DEFAULT_AGE = 2.0
CLIENTS_MAX = 1000  # rows one /api/clients request may ask for
CLIENTS_TTL = 1.0  # seconds an /api/clients answer is shared by callers
HISTORY_TTL = 5.0  # seconds a read of the whole history is shared by every caller


class AdminError(Exception):
    """The admin listener cannot start; the text is one line for the operator."""


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
    history_report: Callable[[], dict[str, Any]] | None = None
    """Reads the whole history as ``tarry report --format json`` does (blocking)."""
    charts: dict[str, tuple[int, float, str]] = field(default_factory=dict)
    _history: tuple[float, int, dict[str, Any]] | None = None  # read at, generation, data
    _history_pending: asyncio.Future[dict[str, Any]] | None = None
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

    async def history(self) -> dict[str, Any] | None:
        """The whole history as the report reads it, at most HISTORY_TTL old; one
        read at a time in a worker thread, however many viewers; None when off."""
        if self.history_report is None:
            return None
        kept = self._history
        if kept is not None and time.monotonic() - kept[0] < HISTORY_TTL:
            return kept[2]
        if self._history_pending is None:
            self._history_pending = asyncio.ensure_future(asyncio.to_thread(self.history_report))
            try:
                data = await self._history_pending
            except Exception:  # a locked or vanished file: keep what was read last
                data = kept[2] if kept is not None else {}
            finally:
                self._history_pending = None
            gen = kept[1] + 1 if kept is not None else 1
            self._history = (time.monotonic(), gen, data)
            return data
        try:
            return await asyncio.shield(self._history_pending)
        except Exception:
            return kept[2] if kept is not None else {}

    def chart_data(self) -> dict[str, Any]:
        """What the charts draw: connections from the live ring (seeded from the
        history), the rest from the whole history when there is one."""
        data = self.stats.chart_data()
        kept = self._history
        if kept is None or not kept[2]:
            return data
        hist = kept[2]
        families: dict[str, int] = {}
        for r in hist["by_family"]:
            if r["family"] != "none":
                families[r["family"]] = families.get(r["family"], 0) + r["sessions"]
        data.update(
            version=data["version"] + (kept[1] << 32),
            range="all history",
            durations=hist["durations_by_proto"],
            countries=[(r["country"], r["sessions"]) for r in hist["top_countries"]],
            families=sorted(families.items(), key=lambda kv: -kv[1]),
        )
        return data

    async def chart(self, name: str) -> tuple[int, str]:
        """The SVG of chart ``name`` and the data version it shows."""
        from .charts import render

        await self.history()
        cached = self.charts.get(name)
        now = time.monotonic()
        version = self.chart_data()["version"]
        if cached is not None and (
            cached[0] == version or now - cached[1] < CHART_MIN_AGE.get(name, CHART_DEFAULT_AGE)
        ):
            return cached[0], cached[2]
        pending = self._rendering.get(name)
        if pending is None:  # one render at a time per chart, however many viewers
            data = self.chart_data()
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

    async def history(request: web.Request) -> web.Response:
        data = await admin.history()
        body = json.dumps(data if data is not None else {"off": True}, default=_json_default)
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
    app.router.add_get("/api/history", history)
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
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,sans-serif;background:#2e3440;color:#d8dee9}
header{padding:10px 16px;background:#3b4252;display:flex;gap:8px 24px;
 align-items:baseline;flex-wrap:wrap}
header h1{margin:0;font-size:20px;color:#eceff4}
#status,#holds{font-size:12px;color:#a0a8b7;overflow-wrap:anywhere}
#holds{padding:8px 16px 0}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;
 padding:12px 16px 0}
.tile{background:#3b4252;border-radius:6px;padding:8px 12px;min-width:0;
 border-top:3px solid var(--c,#4c566a)}
.tile .v{font-size:24px;color:#eceff4;font-variant-numeric:tabular-nums;white-space:nowrap;
 overflow:hidden;text-overflow:ellipsis}
.tile .k{font-size:12px;color:#a0a8b7;text-transform:uppercase;letter-spacing:.04em}
.r{font-size:11px;color:#88909f;text-transform:none;letter-spacing:0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,480px),1fr));
 gap:12px;padding:12px 16px}
.card{background:#3b4252;border-radius:6px;padding:8px;min-width:0;overflow:hidden}
.card h3{margin:2px 4px 6px;font-size:14px;color:#eceff4}
.card svg{width:100%;height:auto;display:block}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;
 table-layout:auto}
th,td{text-align:left;padding:3px 6px;border-bottom:1px solid #4c566a;vertical-align:top}
th{white-space:nowrap}
td{overflow-wrap:anywhere}
td.addr{white-space:nowrap}
.card{container-type:inline-size}
@container (max-width:720px){
 table.sessions thead{display:none}
 table.sessions tr{display:flex;flex-wrap:wrap;gap:0 10px;padding:4px 0;
  border-bottom:1px solid #4c566a}
 table.sessions td{border:0;padding:0 2px}
 table.sessions td.said{flex-basis:100%}
 table.sessions td.bytes{display:none}
}
td.n,th.n{text-align:right;white-space:nowrap}
td.said{color:#c0c8d4;min-width:8em}
td.said b{font-weight:normal;color:#88909f}
.sw{display:inline-block;width:.7em;height:.7em;border-radius:2px;margin-right:4px;
 background:var(--c)}
.maplegend{font-size:12px;color:#a0a8b7;display:flex;gap:6px 14px;flex-wrap:wrap;padding:4px}
.scale{display:inline-block;width:90px;height:10px;vertical-align:middle;
 background:linear-gradient(to right,rgba(136,192,208,.35),rgba(136,192,208,1))}
.nodata{display:inline-block;width:10px;height:10px;background:#4c566a;vertical-align:middle}
#chart-world .country:not(.series){fill:#4c566a}
@media (max-width:640px){.wide{display:none}.tile .v{font-size:20px}}
</style></head><body>
<header><h1>tarry</h1><span id="status">connecting…</span></header>
<div id="holds"></div>
<div class="tiles" id="tiles"></div>
<div class="grid">
<div class="card" id="chart-connections" data-chart="connections"></div>
<div class="card"><h3>Longest-held clients <span class="r">now</span></h3>
<table id="clients" class="sessions"><thead><tr><th>proto</th><th>client</th><th class="wide">country</th>
<th class="n">held</th><th class="n wide">bytes</th><th>what it said</th></tr></thead>
<tbody></tbody></table></div>
<div class="card"><h3>Recent sessions <span class="r" id="recent-range"></span></h3>
<table id="recent" class="sessions"><thead><tr><th>started</th><th>proto</th><th>client</th>
<th class="wide">country</th><th class="n">held</th><th class="wide">reason</th>
<th>what it said</th></tr></thead><tbody></tbody></table></div>
<div class="card"><h3>By protocol <span class="r" data-range></span></h3>
<table id="by-proto"><thead><tr><th>proto</th><th class="n">sessions</th>
<th class="n wide">addresses</th><th class="n">time wasted</th></tr></thead><tbody></tbody>
</table></div>
<div class="card"><h3>Seconds held by client family <span class="r" data-range></span></h3>
<table id="families"><thead><tr><th>proto</th><th>family</th><th class="n">sessions</th>
<th class="n">time wasted</th></tr></thead><tbody></tbody></table></div>
<div class="card"><h3>Disconnect reasons <span class="r" data-range></span></h3>
<table id="reasons"><thead><tr><th>proto</th><th>reason</th><th class="n">sessions</th>
</tr></thead><tbody></tbody></table></div>
<div class="card" id="chart-durations" data-chart="durations"></div>
<div class="card"><h3>Top HTTP paths <span class="r" data-range></span></h3>
<table id="top-paths"><thead><tr><th>path</th><th class="n">sessions</th></tr></thead>
<tbody></tbody></table></div>
<div class="card"><h3>Top SMTP senders and recipients <span class="r" data-range></span></h3>
<table id="top-mail"><thead><tr><th>sender or recipient</th><th class="n">sessions</th></tr>
</thead><tbody></tbody></table></div>
<div class="card"><h3>Top commands <span class="r" data-range></span></h3>
<table id="top-commands"><thead><tr><th>command</th><th class="n">sessions</th></tr></thead>
<tbody></tbody></table></div>
<div class="card"><h3>Top credentials tried <span class="r" data-range></span></h3>
<table id="top-credentials"><thead><tr><th>proto</th><th>user</th><th>password</th>
<th class="n">sessions</th></tr></thead><tbody></tbody></table></div>
<div class="card" id="chart-countries" data-chart="countries"></div>
<div class="card" id="chart-software" data-chart="software"></div>
<div class="card"><div id="chart-world" data-chart="world"></div>
<div class="maplegend"><span>fewer <span class="scale"></span> more connections</span>
<span><span class="nodata"></span> none</span><span>point at a country for its count</span>
</div></div>
</div>
<script>
"use strict";
const etags = {};
const COLOURS = __COLOURS__;
const OTHER = __OTHER__;
function colour(p) {
  if (COLOURS[p]) return COLOURS[p];
  let n = 0; for (const c of new TextEncoder().encode(p)) n += c;
  return OTHER[n % OTHER.length];
}
function hms(s) {
  s = Math.round(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
        m = Math.floor(s % 3600 / 60), r = s % 60;
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  if (m) return m + "m " + r + "s";
  return r + "s";
}
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
function tile(k, range, v, c) {
  const t = el("div", undefined, "tile"); if (c) t.style.setProperty("--c", c);
  const key = el("div", k, "k"); key.append(" ", el("span", range, "r"));
  t.append(el("div", String(v), "v"), key); return t;
}
function addr(tr, host) {  // an IPv6 address may wrap; IPv4 stays on one line
  cell(tr, host, host.split(":").length > 2 ? "" : "addr");
}
function cell(tr, text, cls, raw) {
  const td = el("td", String(text), cls);
  if (raw !== undefined) td.dataset.v = raw;
  tr.append(td); return td;
}
function proto(tr, p) {
  const td = el("td", undefined, "addr"); const sw = el("span", undefined, "sw");
  sw.style.setProperty("--c", colour(p)); td.append(sw, p); tr.append(td);
}
const SAID = [["method", ""], ["path", ""], ["ssh_id", ""], ["user_agent", ""],
  ["ehlo", "EHLO"], ["mail_from", "from"], ["rcpt_to", "to"], ["auth_user", "user"]];
function said(tr, notes) {
  const td = el("td", undefined, "said");
  for (const [k, label] of SAID) {
    if (!notes[k]) continue;
    if (td.childNodes.length) td.append(" ");
    if (label) td.append(el("b", label + " "));
    td.append(notes[k]);
  }
  tr.append(td);
}
function rows(id, items, fill) {
  const body = document.querySelector("#" + id + " tbody");
  const out = items.map(r => { const tr = el("tr"); fill(tr, r); return tr; });
  if (!out.length) {
    const tr = el("tr"); const td = el("td", "none yet", "r");
    td.colSpan = document.querySelectorAll("#" + id + " th").length; tr.append(td);
    out.push(tr);
  }
  body.replaceChildren(...out);
}
function country(cc) { return cc && cc !== "??" ? cc : ""; }
function when(iso) { return iso.slice(5, 16).replace("T", " "); }
let hist = null;
async function history() {
  try {
    const r = await fetch("api/history", {credentials: "same-origin"});
    if (r.ok) hist = await r.json();
  } catch (e) { /* next round */ }
  if (!hist || hist.off) {
    document.getElementById("holds").textContent =
      "No history store: figures are since this tarry started.";
    return;
  }
  const s = hist.summary;
  document.getElementById("holds").textContent = s.sessions
    ? "The history holds " + s.sessions + " sessions from " + s.unique_ips +
      " addresses, " + s.first + " to " + s.last + " (UTC)."
    : "The history is empty so far.";
  for (const e of document.querySelectorAll("[data-range]")) e.textContent = "all history";
  rows("by-proto", hist.by_proto, (tr, r) => { proto(tr, r.proto);
    cell(tr, r.sessions, "n"); cell(tr, r.unique_ips, "n wide");
    cell(tr, hms(r.seconds), "n", r.seconds); });
  rows("families", hist.by_family, (tr, r) => { proto(tr, r.proto); cell(tr, r.family);
    cell(tr, r.sessions, "n"); cell(tr, hms(r.seconds), "n", r.seconds); });
  rows("reasons", hist.reasons, (tr, r) => { proto(tr, r.proto); cell(tr, r.reason);
    cell(tr, r.sessions, "n"); });
  rows("top-paths", hist.top_paths, (tr, r) => { cell(tr, r.path); cell(tr, r.sessions, "n"); });
  rows("top-mail", hist.top_senders.map(r => ["from " + r.sender, r.sessions]).concat(
    hist.top_recipients.map(r => ["to " + r.recipient, r.sessions])),
    (tr, r) => { cell(tr, r[0]); cell(tr, r[1], "n"); });
  rows("top-commands", hist.top_commands, (tr, r) => { cell(tr, r.command);
    cell(tr, r.sessions, "n"); });
  rows("top-credentials", hist.top_credentials, (tr, r) => { proto(tr, r.proto);
    cell(tr, r.user); cell(tr, r.password); cell(tr, r.sessions, "n"); });
}
async function poll() {
  try {
    const r = await fetch("api/summary?limit=20", {credentials: "same-origin"});
    if (!r.ok) throw new Error(r.status + " " + r.statusText);
    const s = await r.json();
    const tiles = [tile("held now", "now", s.held_total)];
    for (const p of s.protocols) tiles.push(tile(p + " held", "now", s.held[p] || 0, colour(p)));
    let conns = 0; for (const p in s.connections) conns += s.connections[p];
    tiles.push(tile("connections", "since start", conns));
    tiles.push(tile("time wasted", "since start", hms(s.time_wasted)));
    if (hist && !hist.off) {
      tiles.push(tile("sessions", "all history", hist.summary.sessions));
      tiles.push(tile("time wasted", "all history", hms(hist.summary.time_wasted_seconds)));
    }
    document.getElementById("tiles").replaceChildren(...tiles);
    rows("clients", s.clients, (tr, c) => { proto(tr, c.proto); addr(tr, c.host.includes(":") ? "[" + c.host + "]:" + c.port : c.host + ":" + c.port);
      cell(tr, country(c.country), "wide"); cell(tr, hms(c.age), "n");
      cell(tr, c.sent, "n wide bytes"); said(tr, c.notes); });
    const recent = hist && !hist.off ? hist.recent.map(c => ({...c, at: when(c.start)}))
      : s.recent.map(c => ({...c, ip: c.host,
          at: when(new Date((c.time - c.duration) * 1000).toISOString())}));
    document.getElementById("recent-range").textContent =
      hist && !hist.off ? "all history (UTC)" : "since start (UTC)";
    rows("recent", recent, (tr, c) => { cell(tr, c.at, "addr"); proto(tr, c.proto);
      addr(tr, c.ip); cell(tr, country(c.country), "wide"); cell(tr, hms(c.duration), "n");
      cell(tr, c.reason, "wide"); said(tr, c.notes); });
    if (!hist || hist.off) {
      rows("families", s.software_seconds, (tr, [f, secs]) => { cell(tr, "");
        cell(tr, f); cell(tr, ""); cell(tr, hms(secs), "n", secs); });
      for (const e of document.querySelectorAll("[data-range]")) e.textContent = "since start";
    }
    document.getElementById("status").textContent =
      "live · updated " + new Date().toLocaleTimeString() + " · up " + hms(s.uptime);
  } catch (e) {
    document.getElementById("status").textContent = "disconnected: " + e.message;
  }
}
const SVGNS = "http://www.w3.org/2000/svg";
function mapHints(svg) {
  const groups = [...svg.querySelectorAll("desc.value")].map(d => [d.parentNode, d.textContent]);
  let most = 1;
  for (const [, t] of groups) most = Math.max(most, Number(t.split(": ").pop()) || 0);
  for (const [g, t] of groups) {
    const n = Number(t.split(": ").pop()) || 0;
    const title = document.createElementNS(SVGNS, "title");
    title.textContent = t + (n === 1 ? " connection" : " connections");
    g.prepend(title);
    g.style.fillOpacity = String(0.35 + 0.65 * n / most);
  }
}
async function charts() {
  for (const e of document.querySelectorAll("[data-chart]")) {
    const name = e.dataset.chart;
    try {
      const headers = etags[name] ? {"If-None-Match": etags[name]} : {};
      const r = await fetch("chart/" + name + ".svg", {credentials: "same-origin", headers});
      if (r.status === 200) {
        etags[name] = r.headers.get("ETag");
        // parsed as XML: the world map nests prefixed SVG elements that HTML parsing drops
        const doc = new DOMParser().parseFromString(await r.text(), "image/svg+xml");
        const svg = document.importNode(doc.documentElement, true);
        if (name === "world") mapHints(svg);
        e.replaceChildren(svg);
        e.dataset.version = etags[name];
      }
    } catch (err) { /* next round */ }
  }
}
history().then(poll); charts();
setInterval(poll, 2000);
setInterval(history, 10000);
setInterval(charts, 5000);
</script></body></html>
"""
# the page colours each protocol as the charts do (tarry.charts.colour)
PAGE = PAGE.replace("__COLOURS__", json.dumps(PROTO_COLOURS)).replace(
    "__OTHER__", json.dumps(OTHER_COLOURS)
)
