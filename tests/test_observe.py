"""Config checks and wiring of the observability sections; metrics details."""

from __future__ import annotations

import io
import re

import pytest

from obs_support import session
from tarry.events import Bus
from tarry.geo import CountryTagger
from tarry.history import HistoryStore
from tarry.metrics import Metrics, exposition, registry
from tarry.observe import ObserveError, build, validate_sections
from tarry.sinks import LineSink
from tarry.software import family
from tarry.stats import LiveStats


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"admin": {"listen": "0.0.0.0:8787"}}, "is not a loopback address: set admin.token"),
        ({"admin": {"listen": "[::]:8787", "token": ""}}, "is not a loopback address"),
        ({"admin": {"listen": "8787"}}, "admin.listen: must be host:port"),
        ({"admin": {"listen": "127.0.0.1:99999"}}, "admin.listen: port '99999'"),
        (
            {"admin": {"listen": "0.0.0.0:8787", "token": "t0ken"}},
            "admin.token: a token that guards a public address must have at least 16",
        ),
        ({"admin": {"hosts": ["a b"]}}, "admin.hosts: must be a list of host names"),
        ({"admin": {"hosts": "x.example"}}, "admin.hosts: must be"),
        ({"admin": {"tokn": "x"}}, "admin.tokn: unknown key"),
        ({"history": {"retention_days": -1}}, "retention_days: must be from 0 to 36500 days"),
        ({"history": {"retention_days": True}}, "history.retention_days: must be a number"),
        ({"history": {"path": 5}}, "history.path: must be a string"),
        ({"log": {"format": "xml"}}, "log.format: must be one of 'endlessh', 'json'"),
        ({"log": {"syslog_address": "nohost"}}, "log.syslog_address: not a socket path"),
        ({"log": {"syslog_facility": "kernel"}}, "log.syslog_facility: must be one of"),
        ({"metrics": {"per_ip": "yes"}}, "metrics.per_ip: must be true or false"),
        ({"metrics": {"per_ip_max": 0}}, "metrics.per_ip_max: must be from 1 to"),
        ({"geo": "NL"}, "[geo] must be a table"),
    ],
)
def test_validation_names_the_key(doc, needle):
    errors = validate_sections(doc)
    assert len(errors) == 1 and needle in errors[0], errors


def test_valid_sections_pass():
    assert (
        validate_sections(
            {
                "admin": {
                    "listen": "0.0.0.0:8787",
                    "token": "t0ken-of-16-chars",
                    "hosts": ["tarry.example.net"],
                },
                "history": {"path": "/x/h.sqlite3", "retention_days": 7},
                "log": {"level": "info", "format": "json", "syslog": True, "file": "/x.log"},
                "metrics": {"per_ip": True, "per_ip_max": 50, "per_ip_expiry": 60},
                "geo": {"mmdb": ""},
            }
        )
        == []
    )


def test_build_makes_the_sinks_in_order(tmp_path):
    out = io.StringIO()
    sinks, start = build(
        {
            "history": {"path": str(tmp_path / "h.sqlite3")},
            "log": {"file": str(tmp_path / "events.jsonl")},
            "admin": {"listen": "127.0.0.1:0"},
        },
        stdout=out,
    )
    kinds = [type(s) for s in sinks]
    assert kinds == [CountryTagger, LineSink, LineSink, HistoryStore, Metrics, LiveStats]
    assert start is not None
    bus = Bus(sinks)
    for e in session(1, "ssh", 3.0, 10):
        bus.emit(e)
    bus.close()
    assert out.getvalue().count("\n") == 2
    assert (tmp_path / "events.jsonl").read_text().count("\n") == 2


def test_build_without_admin_or_history(tmp_path):
    sinks, start = build(
        {"admin": {"listen": ""}, "history": {"enabled": False}, "log": {"level": "none"}}
    )
    assert start is None
    assert not any(isinstance(s, HistoryStore | LineSink) for s in sinks)


def test_build_reports_one_line_errors(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("")
    with pytest.raises(ObserveError, match=r"^history: "):
        build({"history": {"path": str(blocker / "h.sqlite3")}})
    with pytest.raises(ObserveError, match=r"geo\.mmdb: no such file"):
        build({"history": {"enabled": False}, "geo": {"mmdb": str(tmp_path / "none.mmdb")}})
    with pytest.raises(ObserveError, match=r"log\.file: "):
        build({"history": {"enabled": False}, "log": {"file": str(blocker / "x.log")}})
    with pytest.raises(ObserveError, match=r"admin\.token"):
        build({"admin": {"listen": "0.0.0.0:1"}})


def scrape(m: Metrics) -> str:
    return exposition(registry(m, process=False))[0].decode()


def test_per_ip_series_are_capped_and_expire():
    now = [1000.0]
    m = Metrics(per_ip=True, per_ip_max=3, per_ip_expiry=60)
    assert m.per_ip is not None
    m.per_ip.clock = lambda: now[0]
    for i in range(5):  # five addresses, a cap of three: the two oldest go
        for e in session(i, "ssh", 1.0, 1, country="NL"):
            m.emit(e)
    text = scrape(m)
    ips = {line.split('ip="')[1].split('"')[0] for line in text.splitlines() if 'ip="' in line}
    assert ips == {"203.0.113.3", "203.0.113.4", "203.0.113.5"}
    # a name, a location and the geohash of the Netherlands (u1...: 52.4 N, 4.9 E)
    assert re.search(
        r'^endlessh_client_open_count\{country="Netherlands",geohash="u1[0-9b-z]{7}",'
        r'ip="203\.0\.113\.5",local_port="2222",location="Netherlands"\} 1$',
        text,
        re.M,
    ), text
    assert m.per_ip.evicted == 2
    now[0] += 61  # nobody seen for longer than the expiry
    assert 'ip="' not in scrape(m)
    # the totals are not per-IP and stay
    assert 'endlessh_client_open_count_total{local_port="2222"} 5' in scrape(m)


def test_per_ip_can_be_turned_off():
    m = Metrics(per_ip=False)
    for e in session(1, "ssh", 1.0, 1):
        m.emit(e)
    assert 'ip="' not in scrape(m)


def test_live_totals_move_counters_while_clients_are_held():
    live = {("ssh", "127.0.0.1:2222"): (2, 30.0, 500)}
    m = Metrics(live=lambda: live)
    for e in session(1, "ssh", 10.0, 100):
        m.emit(e)
    text = scrape(m)
    assert 'endlessh_trapped_time_seconds_total{local_port="2222"} 40\n' in text
    assert 'endlessh_sent_bytes_total{local_port="2222"} 600\n' in text
    assert 'tarry_clients_held{listener="127.0.0.1:2222",proto="ssh"} 2.0' in text


def test_software_families_are_short_and_label_safe():
    assert family("ssh_id", "SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13") == "OpenSSH"
    assert family("ssh_id", "SSH-2.0-libssh2_1.10.0") == "libssh2"
    assert family("ssh_id", "SSH-2.0-Go") == "Go"
    assert family("ssh_id", "SSH-2.0-PuTTY_Release_0.78") == "PuTTY"
    assert family("user_agent", "curl/8.5.0") == "curl"
    assert family("user_agent", "Mozilla/5.0 (compatible; Googlebot/2.1)") == "Googlebot"
    assert family("user_agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0") == "Mozilla"
    assert family("ehlo", "[192.0.2.1]") == "address-literal"
    assert family("ehlo", "mail.example.com") == "domain"
    assert family("ehlo", "User") == "User"
    assert family("ehlo", "<script>") == "other"
    assert len(family("user_agent", "x" * 500)) == 32


def test_seconds_held_by_software_family_metric():
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry

    from tarry.events import CLOSE, Event
    from tarry.metrics import Metrics

    m = Metrics()
    for ua, d in (("gobuster/3.6", 80.0), ("gobuster/3.5", 8.5), ("curl/8.5", 2.0)):
        m.emit(Event(CLOSE, 0.0, "http", "[::]:80", "::ffff:192.0.2.1", 1, 7, duration=d,
                     reason="closed", notes=(("user_agent", ua),)))  # fmt: skip
    reg = CollectorRegistry()
    reg.register(m)
    text = generate_latest(reg).decode()
    assert (
        'tarry_time_wasted_by_software_seconds_total{family="gobuster",proto="http"} 88.5' in text
    )
    assert 'tarry_time_wasted_by_software_seconds_total{family="curl",proto="http"} 2.0' in text
