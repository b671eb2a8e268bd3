"""Prometheus metrics, served by the admin listener at ``/metrics``.

Two families of names:

* endlessh-go's, with its label (``local_port``) and meanings, so that dashboards
  made for it (Grafana 15156) work unchanged:
  ``endlessh_client_open_count_total`` (connections accepted),
  ``endlessh_client_closed_count_total`` (connections closed),
  ``endlessh_sent_bytes_total`` (bytes sent to clients),
  ``endlessh_trapped_time_seconds_total`` (seconds clients spent trapped); with
  ``per_ip`` also ``endlessh_client_open_count`` and
  ``endlessh_client_trapped_time_seconds`` per client address.
* tarry's own, ``tarry_*``, labelled by protocol and listener.

Counting happens in plain dicts on the event loop thread (a few dict updates
per event, no locks); a custom collector turns them into samples when scraped.
Seconds and bytes of the clients held right now are added at scrape time when
the engine provides ``live()``, so the counters move while a client is held
(as endlessh-go's do) instead of jumping when it leaves.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from .events import ACCEPT, CLOSE, BaseSink, Counted, Event
from .software import family, software

Live = Callable[[], Mapping[tuple[str, str], tuple[int, float, int]]]
"""(proto, listener) -> (clients held, seconds held so far, bytes sent so far)."""
Refusals = Callable[[], Mapping[str, int]]
"""reason -> connections closed without a greeting (the engine's counters)."""

HOLD_BUCKETS = (1.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0)
FAMILIES_MAX = 200  # distinct (proto, family) label pairs; more become "other"


class MetricsError(Exception):
    """Metrics cannot be served; the text is one line for the operator."""


def local_port(listener: str) -> str:
    """endlessh-go's ``local_port`` label: the port of ``host:port``."""
    return listener.rpartition(":")[2] or listener


class PerIp:
    """Per-address series with a cap and an expiry, so the label set stays bounded.

    Addresses are kept in least-recently-seen order; one not seen for ``expiry``
    seconds, or pushed out by ``cap`` newer ones, loses its series.
    """

    def __init__(self, cap: int, expiry: float, clock: Callable[[], float] = time.monotonic):
        self.cap = cap
        self.expiry = expiry
        self.clock = clock
        # ip -> {"seen": t, "country": cc, "open": {(port, proto): n}, "secs": {(port, proto): s}}
        self.ips: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.evicted = 0

    def _entry(self, ip: str) -> dict[str, Any]:
        e = self.ips.get(ip)
        if e is None:
            e = self.ips[ip] = {"seen": 0.0, "country": "", "open": {}, "secs": {}}
        else:
            self.ips.move_to_end(ip)
        e["seen"] = self.clock()
        return e

    def opened(self, ip: str, port: str, proto: str, country: str) -> None:
        e = self._entry(ip)
        if country:
            e["country"] = country
        key = (port, proto)
        e["open"][key] = e["open"].get(key, 0) + 1
        self.expire()

    def closed(self, ip: str, port: str, proto: str, seconds: float) -> None:
        e = self._entry(ip)
        key = (port, proto)
        e["secs"][key] = e["secs"].get(key, 0.0) + seconds
        self.expire()

    def expire(self) -> None:
        ips = self.ips
        limit = self.clock() - self.expiry
        while ips:
            ip, e = next(iter(ips.items()))
            if len(ips) <= self.cap and e["seen"] >= limit:
                break
            del ips[ip]
            self.evicted += 1


def _add(d: dict[Any, Any], key: Any, value: float) -> None:
    d[key] = d.get(key, 0) + value


class Metrics(BaseSink):
    """A sink that counts events, and the collector that exports the counts."""

    name = "metrics"

    def __init__(
        self,
        per_ip: bool = False,
        per_ip_max: int = 1000,
        per_ip_expiry: float = 3600.0,
        sinks: Sequence[Counted] = (),
        live: Live | None = None,
        refusals: Refusals | None = None,
    ) -> None:
        self.live = live
        self.refusals = refusals
        self.sinks: list[Counted] = list(sinks)
        """Sinks whose ``dropped``/``failed`` counts are exported."""
        self.per_ip = PerIp(per_ip_max, per_ip_expiry) if per_ip else None
        k2 = tuple[str, str]
        self.opened: dict[k2, int] = {}  # (proto, listener)
        self.closed: dict[tuple[str, str, str], int] = {}  # (proto, listener, reason)
        self.seconds: dict[k2, float] = {}
        self.sent: dict[k2, int] = {}
        self.received: dict[k2, int] = {}
        self.held: dict[k2, int] = {}
        self.by_country: dict[k2, int] = {}  # (proto, country) connections
        self.seconds_by_country: dict[k2, float] = {}
        self.by_family: dict[k2, int] = {}  # (proto, family) closed sessions
        self.seconds_by_family: dict[k2, float] = {}  # ... and the seconds they were held
        self.hold: dict[str, list[float]] = {}  # proto -> bucket counts, +Inf, sum

    # -- the sink ------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        kind = event.kind
        if kind != ACCEPT and kind != CLOSE:
            return
        key = (event.proto, event.listener)
        country = event.country or "unknown"
        if kind == ACCEPT:
            _add(self.opened, key, 1)
            _add(self.held, key, 1)
            _add(self.by_country, (event.proto, country), 1)
            if self.per_ip is not None:
                self.per_ip.opened(event.ip, local_port(event.listener), event.proto, event.country)
            return
        d = event.duration
        _add(self.closed, (event.proto, event.listener, event.reason or "unknown"), 1)
        _add(self.held, key, -1)
        _add(self.seconds, key, d)
        _add(self.sent, key, event.sent)
        _add(self.received, key, event.received)
        _add(self.seconds_by_country, (event.proto, country), d)
        fam = family(*software(event)) or "none"
        fkey = (event.proto, fam)
        if fkey not in self.by_family and len(self.by_family) >= FAMILIES_MAX:
            fkey = (event.proto, "other")
        _add(self.by_family, fkey, 1)
        _add(self.seconds_by_family, fkey, d)
        h = self.hold.get(event.proto)
        if h is None:
            h = self.hold[event.proto] = [0.0] * (len(HOLD_BUCKETS) + 2)
        for i, le in enumerate(HOLD_BUCKETS):
            if d <= le:
                h[i] += 1
                break
        else:
            h[len(HOLD_BUCKETS)] += 1
        h[-1] += d
        if self.per_ip is not None:
            self.per_ip.closed(event.ip, local_port(event.listener), event.proto, d)

    # -- the collector ---------------------------------------------------------------

    def describe(self) -> list[Any]:
        return []  # names are checked at scrape time; no collisions in our own registry

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            UnknownMetricFamily,
        )

        live: Mapping[tuple[str, str], tuple[int, float, int]] = {}
        if self.live is not None:
            try:
                live = self.live()
            except Exception:
                live = {}
        keys = set(self.opened) | set(live)

        def secs(k: tuple[str, str]) -> float:
            return self.seconds.get(k, 0.0) + (live[k][1] if k in live else 0.0)

        def sent(k: tuple[str, str]) -> float:
            return self.sent.get(k, 0) + (live[k][2] if k in live else 0)

        # endlessh-go's names: one label, local_port (listeners on one port add up)
        by_port: dict[str, list[float]] = {}
        closed_by_key: dict[tuple[str, str], int] = {}
        for (proto, listener, _reason), n in self.closed.items():
            _add(closed_by_key, (proto, listener), n)
        for k in keys:
            p = by_port.setdefault(local_port(k[1]), [0, 0, 0, 0.0])
            p[0] += self.opened.get(k, 0)
            p[1] += closed_by_key.get(k, 0)
            p[2] += sent(k)
            p[3] += secs(k)
        for i, (name, doc) in enumerate(
            (
                ("endlessh_client_open_count", "Total number of clients that tried to connect."),
                (
                    "endlessh_client_closed_count",
                    "Total number of clients that stopped connecting.",
                ),
                ("endlessh_sent_bytes", "Total bytes sent to clients."),
                ("endlessh_trapped_time_seconds", "Total seconds clients spent trapped."),
            )
        ):
            m = CounterMetricFamily(name, doc, labels=["local_port"])
            for port, vals in sorted(by_port.items()):
                m.add_metric([port], vals[i])
            yield m

        labels = ["proto", "listener"]
        held = GaugeMetricFamily("tarry_clients_held", "Clients held now.", labels=labels)
        for k in sorted(keys):
            held.add_metric(list(k), live[k][0] if k in live else max(self.held.get(k, 0), 0))
        yield held
        for name, doc, values in (
            ("tarry_connections", "Connections accepted.", self.opened),
            ("tarry_received_bytes", "Bytes received from closed clients.", self.received),
        ):
            m = CounterMetricFamily(name, doc, labels=labels)
            for k in sorted(keys):
                m.add_metric(list(k), values.get(k, 0))
            yield m
        m = CounterMetricFamily(
            "tarry_time_wasted_seconds", "Seconds clients spent trapped.", labels=labels
        )
        for k in sorted(keys):
            m.add_metric(list(k), secs(k))
        yield m
        m = CounterMetricFamily("tarry_sent_bytes", "Bytes sent to clients.", labels=labels)
        for k in sorted(keys):
            m.add_metric(list(k), sent(k))
        yield m
        m = CounterMetricFamily(
            "tarry_disconnections", "Connections closed, by reason.", labels=[*labels, "reason"]
        )
        for k3, n in sorted(self.closed.items()):
            m.add_metric(list(k3), n)
        yield m
        yield self._pairs(
            CounterMetricFamily,
            "tarry_connections_by_country",
            "Connections accepted, by ISO 3166 country code of the client.",
            "country",
            self.by_country,
        )
        yield self._pairs(
            CounterMetricFamily,
            "tarry_time_wasted_by_country_seconds",
            "Seconds closed clients spent trapped, by country.",
            "country",
            self.seconds_by_country,
        )
        yield self._pairs(
            CounterMetricFamily,
            "tarry_sessions_by_software",
            "Closed sessions, by client software family (SSH id, User-Agent, EHLO shape).",
            "family",
            self.by_family,
        )
        yield self._pairs(
            CounterMetricFamily,
            "tarry_time_wasted_by_software_seconds",
            "Seconds closed sessions were held, by client software family.",
            "family",
            self.seconds_by_family,
        )
        hist = HistogramMetricFamily(
            "tarry_hold_duration_seconds", "How long closed clients were held.", labels=["proto"]
        )
        for proto, h in sorted(self.hold.items()):
            acc = 0.0
            buckets = []
            for i, le in enumerate(HOLD_BUCKETS):
                acc += h[i]
                buckets.append((repr(le), acc))
            acc += h[len(HOLD_BUCKETS)]
            buckets.append(("+Inf", acc))
            hist.add_metric([proto], buckets, sum_value=h[-1])
        yield hist

        dropped = CounterMetricFamily(
            "tarry_sink_dropped_events",
            "Events a sink dropped: its buffer was full.",
            labels=["sink"],
        )
        failed = CounterMetricFamily(
            "tarry_sink_failed_events", "Events a sink could not write.", labels=["sink"]
        )
        stuck = GaugeMetricFamily(
            "tarry_sink_stuck",
            "1 while a sink has not drained for a while: nothing waits for it, its overflow is dropped.",
            labels=["sink"],
        )
        for s in self.sinks:
            dropped.add_metric([s.name], s.dropped)
            failed.add_metric([s.name], s.failed)
            stuck.add_metric([s.name], int(s.stuck))
        yield dropped
        yield failed
        yield stuck

        m = CounterMetricFamily(
            "tarry_refused_connections",
            "Connections closed without a greeting, by reason: per_ip (past max_clients_per_ip),"
            " proxy (no valid PROXY header in time).",
            labels=["reason"],
        )
        if self.refusals is not None:
            try:
                refusals = dict(self.refusals())
            except Exception:
                refusals = {}
            for reason, n in sorted(refusals.items()):
                m.add_metric([reason], n)
        yield m

        if self.per_ip is not None:
            self.per_ip.expire()
            yield from self._per_ip(UnknownMetricFamily, CounterMetricFamily)

    @staticmethod
    def _pairs(cls: Any, name: str, doc: str, label: str, values: Mapping[Any, float]) -> Any:
        m = cls(name, doc, labels=["proto", label])
        for k, n in sorted(values.items()):
            m.add_metric(list(k), n)
        return m

    def _per_ip(self, unknown: Any, counter: Any) -> Iterable[Any]:
        assert self.per_ip is not None
        # endlessh-go exposes these without the _total suffix; prometheus_client adds
        # it to every counter, so they go out untyped to keep the names.
        opens = unknown(
            "endlessh_client_open_count",
            "Number of connections of clients.",
            labels=["ip", "local_port", "geohash", "country", "location"],
        )
        secs = unknown(
            "endlessh_client_trapped_time_seconds",
            "Seconds a client spends trapped.",
            labels=["ip", "local_port"],
        )
        t_opens = counter(
            "tarry_client_connections",
            "Connections, per client address.",
            labels=["ip", "proto", "country"],
        )
        t_secs = counter(
            "tarry_client_time_wasted_seconds",
            "Seconds held, per client address.",
            labels=["ip", "proto"],
        )
        for ip, e in self.per_ip.ips.items():
            cc = e["country"]
            port_opens: dict[str, int] = {}
            for (port, proto), n in e["open"].items():
                _add(port_opens, port, n)
                t_opens.add_metric([ip, proto, cc], n)
            for port, n in port_opens.items():
                opens.add_metric([ip, port, "", cc, ""], n)
            port_secs: dict[str, float] = {}
            for (port, proto), s in e["secs"].items():
                _add(port_secs, port, s)
                t_secs.add_metric([ip, proto], s)
            for port, s in port_secs.items():
                secs.add_metric([ip, port], s)
        return (opens, secs, t_opens, t_secs)


def registry(metrics: Metrics, process: bool = True) -> Any:
    """A registry of its own (not the global one) with the tarry collector."""
    try:
        from prometheus_client import (
            CollectorRegistry,
            GCCollector,
            PlatformCollector,
            ProcessCollector,
        )
    except ImportError as exc:
        raise MetricsError(
            "metrics need the 'metrics' extra (pip install 'tarry[metrics]')"
        ) from exc
    reg = CollectorRegistry()
    reg.register(metrics)
    if process:
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
    return reg


def exposition(reg: Any) -> tuple[bytes, str]:
    """The scrape body and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(reg), CONTENT_TYPE_LATEST
