"""Prometheus metrics, served by the admin listener at ``/metrics``.

Two families of names:

* endlessh-go's six, exactly (names, counter types, labels; tarry.endlessh_metrics
  writes them), from SSH tarpits only, so that Grafana dashboard 15156 works
  unchanged: totals by ``local_port``, and per client address (on by default,
  as in endlessh-go, but capped at ``per_ip_max`` addresses and expired after
  ``per_ip_expiry`` seconds unseen; ~1.2 kB per address, bench/perip_mem.py).
* tarry's own, ``tarry_*``, labelled by protocol and listener, for every protocol.

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
from dataclasses import dataclass
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
    seconds, or pushed out by ``cap`` newer ones, loses its series. An address
    with a client held is seen at every scrape (endlessh-go's sends refresh it
    the same way), and its held seconds are counted as they pass.
    """

    def __init__(
        self,
        cap: int,
        expiry: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.cap = cap
        self.expiry = expiry
        self.clock = clock
        self.wall = wall
        # ip -> {"seen": t, "country": cc, "open": {(port, proto): n},
        #        "secs": {(port, proto): s}, "held": {(fd, port, proto): [accept times]}}
        self.ips: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.evicted = 0

    def _entry(self, ip: str) -> dict[str, Any]:
        e = self.ips.get(ip)
        if e is None:
            e = self.ips[ip] = {"seen": 0.0, "country": "", "open": {}, "secs": {}, "held": {}}
        else:
            self.ips.move_to_end(ip)
        e["seen"] = self.clock()
        return e

    def opened(
        self, ip: str, port: str, proto: str, country: str, fd: int = -1, at: float = 0.0
    ) -> None:
        e = self._entry(ip)
        if country:
            e["country"] = country
        key = (port, proto)
        e["open"][key] = e["open"].get(key, 0) + 1
        if at:
            e["held"].setdefault((fd, port, proto), []).append(at)
        self.expire()

    def closed(self, ip: str, port: str, proto: str, seconds: float, fd: int = -1) -> None:
        e = self._entry(ip)
        key = (port, proto)
        starts = e["held"].get((fd, port, proto))
        if starts:
            # never less than what a scrape showed while it was held: a counter
            # that went down would read as a reset
            seconds = max(seconds, self.wall() - starts.pop(0))
            if not starts:
                del e["held"][(fd, port, proto)]
        e["secs"][key] = e["secs"].get(key, 0.0) + seconds
        self.expire()

    def seconds(self, e: dict[str, Any]) -> dict[tuple[str, str], float]:
        """(port, proto) -> seconds held, the clients held now included."""
        out = dict(e["secs"])
        now = self.wall()
        for (_fd, port, proto), starts in e["held"].items():
            _add(out, (port, proto), sum(max(0.0, now - t) for t in starts))
        return out

    def refresh(self) -> None:
        """Mark addresses with a client held as seen, then expire the rest."""
        now = self.clock()
        for ip in [ip for ip, e in self.ips.items() if e["held"]]:
            self.ips[ip]["seen"] = now
            self.ips.move_to_end(ip)
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
        per_ip: bool = True,
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
                self.per_ip.opened(
                    event.ip,
                    local_port(event.listener),
                    event.proto,
                    event.country,
                    event.fd,
                    event.time,
                )
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
            self.per_ip.closed(event.ip, local_port(event.listener), event.proto, d, event.fd)

    # -- the collector ---------------------------------------------------------------

    def _live(self) -> Mapping[tuple[str, str], tuple[int, float, int]]:
        """The engine's figures for the clients held now; none when it cannot say."""
        if self.live is not None:
            try:
                return self.live()
            except Exception:
                pass
        return {}

    def describe(self) -> list[Any]:
        return []  # names are checked at scrape time; no collisions in our own registry

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        live = self._live()
        keys = set(self.opened) | set(live)

        def secs(k: tuple[str, str]) -> float:
            return self.seconds.get(k, 0.0) + (live[k][1] if k in live else 0.0)

        def sent(k: tuple[str, str]) -> float:
            return self.sent.get(k, 0) + (live[k][2] if k in live else 0)

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
            self.per_ip.refresh()
            yield from self._per_ip(CounterMetricFamily)

    @staticmethod
    def _pairs(cls: Any, name: str, doc: str, label: str, values: Mapping[Any, float]) -> Any:
        m = cls(name, doc, labels=["proto", label])
        for k, n in sorted(values.items()):
            m.add_metric(list(k), n)
        return m

    def _per_ip(self, counter: Any) -> Iterable[Any]:
        assert self.per_ip is not None
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
            for (_port, proto), n in e["open"].items():
                t_opens.add_metric([ip, proto, e["country"]], n)
            for (_port, proto), s in self.per_ip.seconds(e).items():
                t_secs.add_metric([ip, proto], s)
        return (t_opens, t_secs)

    def endlessh_text(self) -> str:
        """endlessh-go's six families (tarry.endlessh_metrics), from SSH tarpits only."""
        from .endlessh_metrics import HELP, TOTALS, family, place

        live = self._live()
        by_port: dict[str, list[float]] = {}  # listeners on one port add up, as labels do
        for k in set(self.opened) | set(live):
            if k[0] != "ssh":
                continue
            p = by_port.setdefault(local_port(k[1]), [0, 0, 0, 0.0])
            p[0] += self.opened.get(k, 0)
            p[2] += self.sent.get(k, 0) + (live[k][2] if k in live else 0)
            p[3] += self.seconds.get(k, 0.0) + (live[k][1] if k in live else 0.0)
        for (proto, listener, _reason), n in self.closed.items():
            if proto == "ssh":
                by_port.setdefault(local_port(listener), [0, 0, 0, 0.0])[1] += n
        ports = sorted(by_port.items())
        parts = [
            family(name, HELP[name], [([("local_port", port)], v[i]) for port, v in ports])
            for i, name in enumerate(TOTALS)
        ]
        if self.per_ip is None:
            return "".join(parts)
        self.per_ip.refresh()
        opens: list[tuple[list[tuple[str, str]], float]] = []
        secs: list[tuple[list[tuple[str, str]], float]] = []
        for ip, e in self.per_ip.ips.items():
            country, location, gh = place(e["country"])
            for (port, proto), n in e["open"].items():
                if proto == "ssh":
                    labels = [("ip", ip), ("local_port", port), ("geohash", gh)]
                    opens.append(([*labels, ("country", country), ("location", location)], n))
            for (port, proto), s in self.per_ip.seconds(e).items():
                if proto == "ssh":
                    secs.append(([("ip", ip), ("local_port", port)], s))
        for name, samples in (
            ("endlessh_client_open_count", opens),
            ("endlessh_client_trapped_time_seconds", secs),
        ):
            if samples:
                parts.append(family(name, HELP[name], samples))
        return "".join(parts)


@dataclass(frozen=True)
class Registry:
    """What ``/metrics`` serves: a prometheus_client registry of its own (not
    the global one) with the tarry collector, and the Metrics whose endlessh-go
    families are written after it."""

    collectors: Any
    metrics: Metrics


def registry(metrics: Metrics, process: bool = True) -> Registry:
    """The registry for ``metrics``, with the process collectors unless told not to."""
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
    return Registry(reg, metrics)


def exposition(reg: Registry) -> tuple[bytes, str]:
    """The scrape body (prometheus_client's text, then endlessh-go's families)
    and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    body = generate_latest(reg.collectors) + reg.metrics.endlessh_text().encode()
    return body, CONTENT_TYPE_LATEST
