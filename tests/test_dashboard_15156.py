"""Grafana dashboard 15156 (endlessh-go's) works unchanged on tarry (issue 18 item 3).

A real Prometheus (own config and data in a temp dir, loopback, 1 s scrapes,
ended by PID) scrapes ``tarry serve`` running the embedded default config
(``tarry default-config``: per-IP series on, as endlessh-go) with only the
listen addresses moved to free loopback ports and the history file put in the
temp dir, while real OpenSSH clients are held. Then every PromQL query of the
dashboard runs as Grafana runs it (a range query, ``$__interval`` as its step)
and must return data.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from support import end_process, free_port, need, ssh_argv, start_tarry, wait_until
from tarry.config import DEFAULT_CONFIG

# The queries of Grafana dashboard 15156, "Endlessh" by shizunge, as published in
# endlessh-go's repository (github.com/shizunge/endlessh-go, dashboard/endlessh.json).
# Its other panels (Trapped Time, Unique IPs, Latest Connection, Concurrent
# Connections, Connections by Country, Locations, Clients) take the results of
# the "Connections" panel (datasource "-- Dashboard --") and transform them.
SEL = 'instance=~"$host",local_port=~"$port",job=~"$job"'
PANEL_QUERIES = {
    # panel "Connections", refId A: new connections per client address
    "connections-A": (
        f"(endlessh_client_open_count{{{SEL}}} - endlessh_client_open_count{{{SEL}}}"
        f" offset $__interval) > 0 or (endlessh_client_open_count{{{SEL}}}!=0"
        f" unless endlessh_client_open_count{{{SEL}}} offset $__interval)"
    ),
    # panel "Connections", refId B: seconds trapped per client address
    "connections-B": (
        f"(endlessh_client_trapped_time_seconds{{{SEL}}}"
        f" - endlessh_client_trapped_time_seconds{{{SEL}}} offset $__interval) > 0"
        f" or (endlessh_client_trapped_time_seconds{{{SEL}}}!=0"
        f" unless endlessh_client_trapped_time_seconds{{{SEL}}} offset $__interval)"
    ),
    # panel "Sent Bytes"
    "sent-bytes": f"sum(increase(endlessh_sent_bytes_total{{{SEL}}}[$__range]))",
    # panel "Current Connections"
    "current-connections": (
        f"sum((endlessh_client_open_count_total{{{SEL}}})"
        f" - (endlessh_client_closed_count_total{{{SEL}}}"
        f" or endlessh_client_open_count_total{{{SEL}}} * 0))"
    ),
}
# Its template variables: label_values(metric{match}, label), which Grafana asks
# of Prometheus's label-values API.
VARIABLES = {
    "job": ("endlessh_client_open_count_total", "job"),
    "host": ('endlessh_client_open_count_total{job=~"$job"}', "instance"),
    "port": ('endlessh_client_open_count_total{job=~"$job", instance=~"$host"}', "local_port"),
}
STEP = 2  # seconds: $__interval, the range query's step


def api(port: int, path: str, **params: str) -> object:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]


def fill(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace(f"${name}", value)
    return text


def default_config(tmp_path: Path) -> str:
    """The embedded defaults; listen addresses on free loopback ports, history in
    tmp, and (tests run as root) the test's user kept, as support.start_tarry does."""
    text = re.sub(r'listen = \["\*:\d+"\]', 'listen = ["127.0.0.1:0"]', DEFAULT_CONFIG)
    text = text.replace("allow_root = false", "allow_root = true")
    return text + f'\n[admin]\nlisten = "127.0.0.1:0"\n\n[history]\npath = "{tmp_path / "h.db"}"\n'


@pytest.mark.realclient
def test_every_query_of_dashboard_15156_returns_data(tmp_path: Path) -> None:
    binary = need("prometheus")
    t = start_tarry(default_config(tmp_path))
    clients: list[subprocess.Popen[bytes]] = []
    prom = None
    try:
        ssh_port = t.port("ssh")
        admin = int(t.wait_for(r"ADMIN listener=\S+:(\d+)", timeout=10).group(1))
        prom_port = free_port()
        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: tarry\n"
            f'    static_configs:\n      - targets: ["127.0.0.1:{admin}"]\n'
        )
        prom = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "prometheus.log", "w"),  # noqa: SIM115
        )
        start = time.time()
        wait_until(lambda: _up(prom_port), 60, "prometheus to scrape tarry (see prometheus.log)")
        # real OpenSSH clients, held; one more leaves, so a close is counted too
        clients = [_ssh(ssh_port) for _ in range(3)]
        wait_until(lambda: t.count(r" ACCEPT host=") >= 3, 20, "three SSH clients held")
        brief = socket.create_connection(("127.0.0.1", ssh_port), timeout=5)
        wait_until(lambda: t.count(r" ACCEPT host=") >= 4, 10, "the brief client")
        brief.close()
        t.wait_for(r" CLOSE host=", timeout=10)
        # a web client is no endlessh client: it must not show up in the dashboard
        web = socket.create_connection(("127.0.0.1", t.port("http")), timeout=5)

        values = {"job": "tarry", "host": f"127.0.0.1:{admin}", "port": str(ssh_port)}
        for name, (match, label) in VARIABLES.items():
            got = wait_until(
                lambda m=match, lab=label: api(
                    prom_port, f"label/{lab}/values", **{"match[]": fill(m, values)}
                ),
                20,
                f"template variable ${name}",
            )
            assert got == [values[name]], (name, got)

        def run(expr: str) -> list[dict]:
            end = time.time()
            filled = fill(expr, {"__interval": f"{STEP}s", "__range": f"{int(end - start)}s"})
            data = api(
                prom_port,
                "query_range",
                query=fill(filled, values),
                start=f"{start:.3f}",
                end=f"{end:.3f}",
                step=str(STEP),
            )
            assert isinstance(data, dict)
            return data["result"]

        # every query, once Prometheus has seen the clients come and stay a while
        wait_until(lambda: all(run(q) for q in PANEL_QUERIES.values()), 30, "every query")
        results = {name: run(q) for name, q in PANEL_QUERIES.items()}
        addresses = {r["metric"]["ip"] for r in results["connections-A"]}
        assert addresses == {"127.0.0.1"}, results["connections-A"]
        labels = results["connections-A"][0]["metric"]
        assert {"geohash", "country", "location", "local_port"} <= set(labels)
        assert labels["local_port"] == str(ssh_port)
        # trapped time grows while the clients are held: it rises step after step
        wait_until(
            lambda: max(len(r["values"]) for r in run(PANEL_QUERIES["connections-B"])) >= 3,
            20,
            "trapped time rising over three steps",
        )
        current = float(results["current-connections"][0]["values"][-1][1])
        assert current == 3, results["current-connections"]
        web.close()
    finally:
        for c in clients:
            c.kill()
            c.wait(5)
        if prom is not None:
            end_process(prom)
        t.stop()


def _up(port: int) -> bool:
    try:
        data = api(port, "query", query='up{job="tarry"}')
    except OSError:
        return False
    assert isinstance(data, dict)
    return bool(data["result"]) and data["result"][0]["value"][1] == "1"


def _ssh(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ssh_argv(port, "-o", "ConnectTimeout=60"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
