"""Wiring of the observability sections of ``tarry.toml``: [log], [history],
[metrics], [geo] and [admin].

``validate_sections(doc)`` returns error texts naming the key (the config
module calls it); ``build(doc)`` makes the sinks for the event bus and a starter
for the admin listener, which the engine awaits in its loop once it can provide
``snapshot`` and ``held``.

Optional parts follow what is installed when they are not configured: without
the ``geo`` extra there is no country, without ``metrics`` no ``/metrics``,
without ``dashboard`` no admin listener. Configuring one explicitly without its
extra is an error.
"""

from __future__ import annotations

import errno
import importlib.util
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from .adminbind import DEFAULT_LISTEN, bind_error
from .bait import MAX_SECONDS, Bounds, LearningSource, is_numeric, shown
from .events import Sink
from .sinks import FACILITIES, _stderr, syslog_address, syslog_ident

Report = Callable[[str], None]


class ObserveError(Exception):
    """An observability part cannot start; the text is one line for the operator."""


@dataclass(frozen=True)
class Key:
    """One key of a section; as with ``bait.Option``, every numeric key has bounds."""

    default: Any
    kind: type | tuple[type, ...]
    check: Callable[[Any], str | None] | None = None
    bounds: Bounds | None = None

    def __post_init__(self) -> None:
        if is_numeric(self.kind) and self.bounds is None:
            raise TypeError("a numeric key declares its bounds")


def _host_names(v: list[Any]) -> str | None:
    for name in v:
        if not isinstance(name, str) or not name or any(c in name for c in " /:@[]"):
            return f'must be a list of host names, e.g. ["tarry.example.com"] (got {name!r})'
    return None


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in choices else "must be one of " + ", ".join(repr(c) for c in choices)

    return check


def _listen(v: str) -> str | None:
    if v == "":
        return None  # off
    from .adminbind import split_listen

    try:
        split_listen(v)
    except ValueError as exc:
        return str(exc)
    return None


def _raises(parse: Callable[[str], object]) -> Callable[[str], str | None]:
    """A key check from a parser that raises ValueError with the reason."""

    def check(v: str) -> str | None:
        try:
            parse(v)
        except ValueError as exc:
            return str(exc)
        return None

    return check


_syslog_address = _raises(syslog_address)
_syslog_ident = _raises(syslog_ident)


def _history_url(v: str) -> str | None:
    if v == "":
        return None  # the SQLite file
    from .pghistory import check_url

    return check_url(v)


def _host_name(v: str) -> str | None:
    if len(v) > 255 or any(not "!" <= c <= "~" for c in v):
        return "must be printable ASCII without spaces, at most 255 characters"
    return None


NUM = (int, float)
EVENTS = Bounds(1, 10_000_000)  # events buffered in memory
SESSIONS = Bounds(0, 10_000_000)
DAYS = Bounds(0, 36500, unit=" days")
SECONDS = Bounds(0, MAX_SECONDS, above=True, unit=" seconds")
SECTIONS: dict[str, dict[str, Key]] = {
    "log": {
        "level": Key("info", str, _one_of("none", "info", "debug")),
        "format": Key("endlessh", str, _one_of("endlessh", "json")),
        "file": Key("", str),
        "file_format": Key("json", str, _one_of("json", "endlessh")),
        "syslog": Key(False, bool),
        "syslog_address": Key("/dev/log", str, _syslog_address),
        "syslog_facility": Key("daemon", str, _one_of(*sorted(FACILITIES))),
        "syslog_format": Key("endlessh", str, _one_of("endlessh", "json")),
        "syslog_tcp": Key(False, bool),
        "syslog_ident": Key("tarry", str, _syslog_ident),
        "buffer": Key(10000, int, bounds=EVENTS),
    },
    "history": {
        "enabled": Key(True, bool),
        "path": Key("", str),
        "url": Key("", str, _history_url),
        "host": Key("", str, _host_name),
        "retention_days": Key(90, NUM, bounds=DAYS),
        "flush_interval": Key(1.0, NUM, bounds=Bounds(0, 3600, above=True, unit=" seconds")),
        "batch": Key(1000, int, bounds=Bounds(1, 1_000_000)),
        "buffer": Key(100000, int, bounds=EVENTS),
        "learn_days": Key(30, NUM, bounds=DAYS),
        "learn_sessions": Key(100000, int, bounds=SESSIONS),
        "learn_refresh": Key(60.0, NUM, bounds=Bounds(0, 86400, unit=" seconds")),
    },
    "metrics": {
        "enabled": Key(True, bool),
        "per_ip": Key(True, bool),  # endlessh-go's default; capped and expiring
        "per_ip_max": Key(1000, int, bounds=Bounds(1, 1_000_000)),
        "per_ip_expiry": Key(3600.0, NUM, bounds=SECONDS),
    },
    "geo": {
        "enabled": Key(True, bool),
        "mmdb": Key("", str),
    },
    "admin": {
        "listen": Key(DEFAULT_LISTEN, str, _listen),
        "token": Key("", str),
        "hosts": Key([], list, _host_names),
    },
}


def _type_name(kind: type | tuple[type, ...], bounds: Bounds | None = None) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    name = "a number" if kinds == NUM else " or ".join(names.get(k, k.__name__) for k in kinds)
    return f"{name} {bounds.text()}" if bounds is not None else name


def validate_sections(doc: Mapping[str, Any]) -> list[str]:
    """Errors in the observability sections of a parsed config, each naming its key."""
    errors: list[str] = []
    for section, keys in SECTIONS.items():
        table = doc.get(section)
        if table is None:
            continue
        if not isinstance(table, Mapping):
            errors.append(f"[{section}] must be a table")
            continue
        for key, value in table.items():
            spec = keys.get(key)
            name = f"{section}.{key}"
            if spec is None:
                errors.append(f"{name}: unknown key (known: {', '.join(keys)})")
                continue
            kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                errors.append(
                    f"{name}: must be {_type_name(spec.kind, spec.bounds)}, not {shown(value)}"
                )
                continue
            problem = spec.bounds.problem(value) if spec.bounds else None
            if problem:
                errors.append(f"{name}: {problem} (got {shown(value)})")
                continue
            problem = spec.check(value) if spec.check else None
            if problem:
                errors.append(f"{name}: {problem}")
    admin = doc.get("admin")
    if isinstance(admin, Mapping):
        listen = admin.get("listen", DEFAULT_LISTEN)
        token = admin.get("token", "")
        if isinstance(listen, str) and listen and isinstance(token, str) and not _listen(listen):
            problem = bind_error(listen, token)
            if problem:
                errors.append(problem)
    history = doc.get("history")
    if isinstance(history, Mapping) and history.get("path") and history.get("url"):
        errors.append("history: set path (a SQLite file) or url (PostgreSQL), not both")
    return errors


def settings(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every key of every section, defaults filled in (after validation)."""
    out: dict[str, dict[str, Any]] = {}
    for section, keys in SECTIONS.items():
        table = doc.get(section) or {}
        out[section] = {k: table.get(k, spec.default) for k, spec in keys.items()}
    return out


def history_where(doc: Mapping[str, Any]) -> str:
    """Where the history is written, for the start-up line: a path, a URL with
    its password hidden, or "off"."""
    hist = settings(doc)["history"]
    if not hist["enabled"]:
        return "off"
    if hist["url"]:
        from .pghistory import redact

        return redact(hist["url"])
    from .history import default_path

    return str(hist["path"] or default_path())


def modules(doc: Mapping[str, Any], checked: Preflight | None) -> list[str]:
    """The modules these sections will import, for loading before a privilege
    drop: only what the config uses (an idle tarry holds no library it does not
    need). Without ``checked`` (no preflight), the admin listener and the
    country lookup count as on."""
    cfg = settings(doc)
    out: list[str] = []
    if cfg["log"]["syslog"]:
        out.append("syslog")
    hist = cfg["history"]
    if hist["enabled"]:
        out += ["tarry.history", "sqlite3"]
        if hist["url"]:
            out += ["tarry.pghistory", "psycopg"]
    if cfg["metrics"]["enabled"] and ("metrics" in doc or _have("prometheus_client")):
        out += ["tarry.metrics", "prometheus_client", "prometheus_client.core"]
    if checked is None or checked.lookup is not None:
        out += ["tarry.geo", "iptocc", "maxminddb"]
    if checked is None or checked.admin:
        out += ["tarry.admin", "tarry.charts", "tarry.report", "aiohttp.web"]
        out += ["pygal", "pygal.style", "pygal_maps_world.maps"]
    return out


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


Starter = Callable[..., Awaitable[Any]]


@dataclass
class Observability:
    """What ``build`` made: the sinks in bus order and the parts the admin app needs."""

    sinks: list[Sink]
    stats: Any
    metrics: Any
    registry: Any
    history: Any
    lookup: Any
    admin_listen: str
    admin_token: str
    admin_hosts: tuple[str, ...] = ()
    history_source: str = ""  # the history's file or URL, for the dashboard to read


def admin_bind_error(listen: str) -> str | None:
    """Why the admin listener could not bind ``listen``, or None: found by
    binding every address it resolves to as asyncio's ``create_server`` does
    for aiohttp (SO_REUSEADDR, IPv6 only on IPv6), listening, and letting go."""
    from .adminbind import split_listen

    host, port = split_listen(listen)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return f"admin.listen = {listen!r}: {exc.strerror or exc}"
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:
                continue  # as asyncio does: a family this kernel cannot make
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
                sock.listen(1)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    continue  # asyncio skips a family the host does not have
                why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                return f"admin.listen = {listen!r}: {why or exc}"
    finally:
        for sock in socks:
            sock.close()
    return None


@dataclass
class Preflight:
    """What ``preflight`` found that ``assemble`` uses rather than finding it again."""

    lookup: Any  # the country lookup, None when off
    admin: bool  # start the admin listener


def preflight(doc: Mapping[str, Any], bind: bool = True, report: Report = _stderr) -> Preflight:
    """Every start-up check of these sections that writes nothing: ``serve``
    runs it (through ``build``) and so does ``check-config``, so that a config
    check-config passes is not refused by serve. Raises ObserveError (one line).

    ``bind`` tries the admin listen address (bind, then release). A configured
    [admin] that cannot bind is an error; the default one only a warning, as
    serve then runs without the dashboard."""
    errors = validate_sections(doc)
    if errors:
        raise ObserveError(errors[0])
    cfg = settings(doc)
    admin = doc.get("admin")
    explicit = (
        isinstance(admin, Mapping) and bool(admin) and admin.get("listen", DEFAULT_LISTEN) != ""
    )
    dashboard = _have("aiohttp") and _have("pygal")
    # without the dashboard, the listener still serves /metrics (tarry.metricsserver)
    scrape = cfg["metrics"]["enabled"] and _have("prometheus_client")
    if explicit and not dashboard and not scrape:
        raise ObserveError(
            "[admin] needs the 'dashboard' extra, or 'metrics' for /metrics alone"
            " (pip install 'tarry[dashboard]')"
        )

    from .geo import GeoError, make_lookup

    geo = cfg["geo"]
    lookup = None
    if geo["enabled"] and (geo["mmdb"] or "geo" in doc or _have("iptocc")):
        try:
            lookup = make_lookup(geo["mmdb"])
        except GeoError as exc:
            raise ObserveError(str(exc)) from exc

    listen = cfg["admin"]["listen"]
    start = bool(listen) and (dashboard or scrape)
    if start and bind:
        problem = admin_bind_error(listen)
        if problem and "admin" in doc:
            raise ObserveError(problem)
        if problem:
            report(f"tarry: dashboard off: {problem}")
            start = False
    return Preflight(lookup, start)


def build(
    doc: Mapping[str, Any],
    stdout: TextIO | None = None,
    report: Report = _stderr,
    checked: Preflight | None = None,
) -> tuple[list[Sink], Starter | None]:
    """Sinks for the bus, and ``start(snapshot, held, live=None)`` for the admin listener.

    Raises ObserveError (one line) when a configured part cannot be used. The
    starter is None when the admin listener is off, its extra is missing and
    it was not configured, or the default address is taken. ``await start(...)``
    returns an ``AdminServer`` (``.port``, ``.url``, ``await .close()``) or
    raises ``AdminError``. ``checked`` is what ``preflight`` found, when the
    caller ran it (serve does, before it drops privileges).
    """
    if checked is None:
        checked = preflight(doc, report=report)
    obs = assemble(doc, stdout=stdout, report=report, checked=checked)
    return obs.sinks, starter(obs, report) if checked.admin else None


def assemble(
    doc: Mapping[str, Any],
    stdout: TextIO | None = None,
    report: Report = _stderr,
    checked: Preflight | None = None,
) -> Observability:
    if checked is None:
        checked = preflight(doc, bind=False, report=report)
    cfg = settings(doc)
    sinks: list[Sink] = []

    # Country first: it fills Event.country for every sink after it.
    from .geo import CountryTagger

    lookup = checked.lookup
    if lookup is not None:
        sinks.append(CountryTagger(lookup))

    log = cfg["log"]
    from .sinks import LineSink, SyslogSink

    cap = log["buffer"]
    if log["level"] == "none":
        pass  # nothing on stdout
    else:
        s = LineSink(stdout or sys.stdout, log["format"], capacity=cap, report=report)
        s.start()
        sinks.append(s)
    if log["file"]:
        try:
            s = LineSink(log["file"], log["file_format"], capacity=cap, report=report)
        except OSError as exc:
            raise ObserveError(f"log.file: {log['file']}: {exc.strerror or exc}") from exc
        s.start()
        sinks.append(s)
    if log["syslog"]:
        syslog = SyslogSink(
            log["syslog_address"],
            log["syslog_facility"],
            log["syslog_format"],
            tcp=log["syslog_tcp"],
            ident=log["syslog_ident"],
            capacity=cap,
            report=report,
        )
        syslog.start()
        sinks.append(syslog)

    hist = cfg["history"]
    history = None
    where: Any = ""
    if hist["enabled"]:
        from .history import HistoryError, HistoryStore, default_path

        try:
            store: Any = HistoryStore
            where = hist["path"] or default_path()
            if hist["url"]:
                from .pghistory import PgHistoryStore

                store, where = PgHistoryStore, hist["url"]
            history = store(
                where,
                host=hist["host"],
                retention_days=hist["retention_days"],
                capacity=hist["buffer"],
                batch=hist["batch"],
                interval=hist["flush_interval"],
                report=report,
            )
        except HistoryError as exc:
            raise ObserveError(str(exc)) from exc
        history.start()
        sinks.append(history)
        learn_from(history, hist, verbose=log["level"] == "debug")

    met = cfg["metrics"]
    metrics = registry = None
    if met["enabled"] and ("metrics" in doc or _have("prometheus_client")):
        from .metrics import Metrics, MetricsError
        from .metrics import registry as make_registry

        metrics = Metrics(
            per_ip=met["per_ip"],
            per_ip_max=met["per_ip_max"],
            per_ip_expiry=met["per_ip_expiry"],
            sinks=[s for s in sinks if s.buffered],
        )
        try:
            registry = make_registry(metrics)
        except MetricsError as exc:
            raise ObserveError(str(exc)) from exc
        sinks.append(metrics)

    from .stats import LiveStats

    stats = LiveStats()
    sinks.append(stats)
    admin = cfg["admin"]
    return Observability(
        sinks,
        stats,
        metrics,
        registry,
        history,
        lookup,
        admin["listen"],
        admin["token"],
        tuple(admin["hosts"]),
        str(where) if history is not None else "",
    )


def learn_from(history: LearningSource, hist: Mapping[str, Any], verbose: bool = False) -> None:
    """Back what baits learn about addresses (the SSH adaptive mode) with the
    history, so it outlives restarts; a shared history is re-read for what the
    other hosts learned."""
    from .baits import registry

    for module in registry().values():
        if module.use_history is not None and hist["learn_sessions"] > 0:
            module.use_history(
                history,
                hist["learn_days"],
                hist["learn_sessions"],
                hist["learn_refresh"] if history.shared else 0.0,
                verbose,
            )


def _metrics_only(obs: Observability) -> Starter | None:
    """Without the dashboard extra: ``/metrics`` alone, from prometheus_client's server."""
    registry = obs.registry
    if registry is None:
        return None

    async def start(
        snapshot: Callable[[int], list[dict[str, Any]]],
        held: Callable[[], Mapping[str, int]],
        live: Callable[[], Mapping[tuple[str, str], tuple[int, float, int]]] | None = None,
        refusals: Callable[[], Mapping[str, int]] | None = None,
    ) -> Any:
        from .metricsserver import serve_metrics

        if obs.metrics is not None:
            obs.metrics.live = live
            obs.metrics.refusals = refusals
        return await serve_metrics(registry, obs.admin_listen, obs.admin_token, obs.admin_hosts)

    return start


def starter(obs: Observability, report: Report = _stderr) -> Starter | None:
    if not obs.admin_listen:
        return None
    if not _have("aiohttp") or not _have("pygal"):
        return _metrics_only(obs)  # the default listener follows the extras

    async def start(
        snapshot: Callable[[int], list[dict[str, Any]]],
        held: Callable[[], Mapping[str, int]],
        live: Callable[[], Mapping[tuple[str, str], tuple[int, float, int]]] | None = None,
        refusals: Callable[[], Mapping[str, int]] | None = None,
    ) -> Any:
        import asyncio
        import time

        from .admin import Admin, serve
        from .stats import MINUTES

        totals = None
        if obs.history is not None:
            try:
                totals = await asyncio.to_thread(obs.history.totals)
                since = time.time() - MINUTES * 60
                obs.stats.seed(await asyncio.to_thread(obs.history.per_minute, since))
            except Exception as exc:
                report(f"tarry: history: cannot read totals: {exc}")
        if obs.metrics is not None:
            obs.metrics.live = live
            obs.metrics.refusals = refusals
        history_report = None
        if obs.history is not None:
            from functools import partial

            from .report import dashboard

            history_report = partial(dashboard, obs.history_source)
        admin = Admin(
            history_report=history_report,
            stats=obs.stats,
            snapshot=snapshot,
            held=held,
            token=obs.admin_token,
            registry=obs.registry,
            lookup=obs.lookup,
            live=live,
            history_totals=totals,
            hosts=obs.admin_hosts,
        )
        return await serve(admin, obs.admin_listen)

    return start
