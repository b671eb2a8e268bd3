"""Since-start aggregates for the dashboard, kept in memory by a sink.

Everything is bounded: a ring of per-minute connection counts, fixed hold
duration buckets, and counters of countries (at most a few hundred codes) and
software families (capped). The dashboard works with or without the history
store and without Prometheus.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from typing import Any

from .events import ACCEPT, CLOSE, BaseSink, Event
from .software import family, software

MINUTES = 180  # connections-over-time window, one bucket a minute
FAMILIES_MAX = 200
RECENT = 50  # latest closed sessions kept for the dashboard and tarry top

DURATION_BUCKETS: tuple[tuple[float, str], ...] = (
    (1.0, "<1s"),
    (10.0, "1-10s"),
    (60.0, "10s-1m"),
    (300.0, "1-5m"),
    (900.0, "5-15m"),
    (3600.0, "15m-1h"),
    (4 * 3600.0, "1-4h"),
    (86400.0, "4h-1d"),
    (float("inf"), ">1d"),
)


def duration_bucket(seconds: float) -> int:
    for i, (le, _label) in enumerate(DURATION_BUCKETS):
        if seconds < le:
            return i
    return len(DURATION_BUCKETS) - 1


class LiveStats(BaseSink):
    """A sink: counts per protocol, per minute, per country and per software family."""

    name = "stats"

    def __init__(self, clock: Any = time.time) -> None:
        self.clock = clock
        self.started = clock()
        self.version = 0
        """Bumped on every event, so that charts are redrawn only when data changed."""
        self.connections: Counter[str] = Counter()
        self.sessions: Counter[str] = Counter()
        self.seconds: dict[str, float] = defaultdict(float)
        self.sent: Counter[str] = Counter()
        self.countries: Counter[str] = Counter()
        self.families: Counter[str] = Counter()
        self.family_seconds: dict[str, float] = defaultdict(float)  # seconds held, per family
        self.durations: dict[str, list[int]] = {}
        self.minutes: deque[tuple[int, Counter[str]]] = deque(maxlen=MINUTES)
        self.protocols: set[str] = set()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        """The latest closed sessions, newest last; notes are the bait's, bounded."""

    def emit(self, event: Event) -> None:
        kind = event.kind
        if kind != ACCEPT and kind != CLOSE:
            return
        self.version += 1
        proto = event.proto
        self.protocols.add(proto)
        if kind == ACCEPT:
            self.connections[proto] += 1
            self.countries[event.country or "??"] += 1
            minute = int(event.time // 60)
            if not self.minutes or self.minutes[-1][0] != minute:
                self.minutes.append((minute, Counter()))
            self.minutes[-1][1][proto] += 1
            return
        self.sessions[proto] += 1
        self.recent.append(
            {
                "time": round(event.time, 3),
                "proto": proto,
                "host": event.ip,
                "country": event.country,
                "duration": round(event.duration, 1),
                "reason": event.reason,
                "sent": event.sent,
                "notes": {str(k): str(v) for k, v in event.notes},
            }
        )
        self.seconds[proto] += event.duration
        self.sent[proto] += event.sent
        fam = family(*software(event))
        if fam:
            if fam not in self.families and len(self.families) >= FAMILIES_MAX:
                fam = "other"
            self.families[fam] += 1
            self.family_seconds[fam] += event.duration
        d = self.durations.get(proto)
        if d is None:
            d = self.durations[proto] = [0] * len(DURATION_BUCKETS)
        d[duration_bucket(event.duration)] += 1

    def seed(self, rows: list[tuple[int, str, int]]) -> None:
        """Connections per (epoch minute, proto) from before the start (the history store)."""
        by_minute: dict[int, Counter[str]] = {}
        for minute, proto, n in rows:
            by_minute.setdefault(minute, Counter())[proto] += n
            self.protocols.add(proto)
        start = int(self.started // 60)
        merged = sorted((m, c) for m, c in by_minute.items() if m < start)
        merged += [(m, c) for m, c in self.minutes if m >= start or m not in by_minute]
        self.minutes = deque(sorted(merged, key=lambda mc: mc[0])[-MINUTES:], maxlen=MINUTES)
        self.version += 1

    def per_minute(self, now: float | None = None) -> tuple[list[int], dict[str, list[int]]]:
        """The last MINUTES minutes (epoch minutes) and per-protocol counts, gaps filled."""
        end = int((now if now is not None else self.clock()) // 60)
        oldest = int(self.started // 60)
        if self.minutes:
            oldest = min(oldest, self.minutes[0][0])
        first = max(end - MINUTES + 1, oldest)
        minutes = list(range(first, end + 1))
        index = {m: i for i, m in enumerate(minutes)}
        series = {p: [0] * len(minutes) for p in sorted(self.protocols)}
        for m, counts in self.minutes:
            i = index.get(m)
            if i is not None:
                for p, n in counts.items():
                    series[p][i] = n
        return minutes, series

    def chart_data(self) -> dict[str, Any]:
        """A plain copy for rendering off the loop thread."""
        minutes, series = self.per_minute()
        return {
            "version": self.version,
            "minutes": minutes,
            "series": series,
            "durations": {p: list(v) for p, v in sorted(self.durations.items())},
            "countries": self.countries.most_common(),
            "families": self.families.most_common(12),
        }
