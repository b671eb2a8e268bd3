"""endlessh-go's metric families, exactly (issue 18 item 3): names, types, labels,
SSH only, per-address seconds that grow while a client is held."""

from __future__ import annotations

import re

from obs_support import event, session
from tarry.endlessh_metrics import HELP, geohash, place
from tarry.events import ACCEPT, CLOSE
from tarry.metrics import Metrics, exposition, registry

# endlessh-go metrics/metrics.go: every family a CounterVec, with these labels
ENDLESSH_GO = {
    "endlessh_client_open_count_total": {"local_port"},
    "endlessh_client_closed_count_total": {"local_port"},
    "endlessh_sent_bytes_total": {"local_port"},
    "endlessh_trapped_time_seconds_total": {"local_port"},
    "endlessh_client_open_count": {"ip", "local_port", "geohash", "country", "location"},
    "endlessh_client_trapped_time_seconds": {"ip", "local_port"},
}
SAMPLE = re.compile(r"^(endlessh_\w+)\{([^}]*)\} (\S+)$", re.M)


def scrape(m: Metrics) -> str:
    return exposition(registry(m, process=False))[0].decode()


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for name, labels, value in SAMPLE.findall(text):
        out.append((name, dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value)))
    return out


def test_the_six_families_are_counters_with_endlessh_gos_labels() -> None:
    m = Metrics()
    for e in session(1, "ssh", 3.0, 10, country="CN"):
        m.emit(e)
    text = scrape(m)
    types = dict(re.findall(r"^# TYPE (endlessh_\w+) (\w+)$", text, re.M))
    assert types == {name: "counter" for name in ENDLESSH_GO}
    for name in ENDLESSH_GO:
        assert f"# HELP {name} {HELP[name]}\n" in text
    seen = {name: set(labels) for name, labels, _ in samples(text)}
    assert seen == ENDLESSH_GO


def test_http_and_smtp_are_not_endlessh_clients() -> None:
    m = Metrics()
    for e in session(1, "http", 5.0, 100) + session(2, "smtp", 5.0, 100):
        m.emit(e)
    text = scrape(m)
    assert [s for s in samples(text)] == []  # no endlessh_* sample at all
    assert 'tarry_connections_total{listener="127.0.0.1:8080",proto="http"} 1.0' in text
    for e in session(3, "ssh", 2.0, 7):
        m.emit(e)
    got = {(n, tuple(sorted(lab.items()))): v for n, lab, v in samples(scrape(m))}
    assert got[("endlessh_client_open_count_total", (("local_port", "2222"),))] == 1
    assert got[("endlessh_sent_bytes_total", (("local_port", "2222"),))] == 7


def test_per_address_trapped_time_grows_while_held_and_never_goes_down() -> None:
    now = [1000.0]
    m = Metrics()
    assert m.per_ip is not None
    m.per_ip.wall = lambda: now[0]
    m.emit(event(ACCEPT, 1, "ssh", time=1000.0))

    def trapped() -> float:
        vals = [v for n, _, v in samples(scrape(m)) if n == "endlessh_client_trapped_time_seconds"]
        assert len(vals) == 1
        return vals[0]

    now[0] = 1030.0
    assert trapped() == 30.0
    now[0] = 1090.0
    assert trapped() == 90.0
    # the session's own measured duration is a little shorter: the counter keeps 90+
    m.emit(event(CLOSE, 1, "ssh", duration=89.5, reason="closed"))
    assert trapped() == 90.0
    now[0] = 2000.0
    assert trapped() == 90.0  # closed: no longer grows


def test_places_are_names_with_a_geohash() -> None:
    # the geohash of Wikipedia's worked example, 57.64911 N 10.40744 E: u4pruydqqvj
    assert geohash(57.64911, 10.40744, 11) == "u4pruydqqvj"
    name, location, gh = place("US")
    assert (name, location) == ("United States", "United States") and len(gh) == 9
    assert gh[0] == "9"  # the cell of North America west of 90 W
    assert place("") == ("Unknown", "Unknown", "s000")
    assert place("XK")[0].startswith("Unknown")  # no table row: said, with the code


def test_unknown_country_is_endlessh_gos_unknown() -> None:
    m = Metrics()
    for e in session(1, "ssh", 1.0, 1):
        m.emit(e)
    labels = [lab for n, lab, _ in samples(scrape(m)) if n == "endlessh_client_open_count"]
    assert labels[0]["country"] == "Unknown" and labels[0]["geohash"] == "s000"
