"""A real Prometheus server scrapes /metrics; PromQL answers with the counts fed in."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from obs_support import LoopThread, session
from support import IN_CI, end_process, free_port, wait_until
from tarry.admin import Admin, serve
from tarry.events import Bus
from tarry.metrics import Metrics, registry
from tarry.stats import LiveStats

TOKEN = "s3cret-scrape-token"


def need_prometheus() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if IN_CI:
            pytest.fail("prometheus is not installed, and CI must not skip real-client tests")
        pytest.skip("prometheus is not installed")
    return path


def promql(port: int, query: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def scalar(port: int, query: str) -> float | None:
    try:
        result = promql(port, query)
    except OSError:
        return None
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_expected_counts(tmp_path):
    binary = need_prometheus()
    lt = LoopThread()
    metrics = Metrics()
    stats = LiveStats()
    bus = Bus([metrics, stats])
    admin = Admin(
        stats=stats,
        snapshot=lambda n: [],
        held=lambda: {},
        token=TOKEN,
        registry=registry(metrics),
    )
    server = lt.run(serve(admin, "127.0.0.1:0"))

    # 5 SSH sessions of 10 s and 100 bytes, 3 HTTP sessions of 2 s and 7 bytes, 2 SSH still held
    def feed() -> None:
        for i in range(5):
            for e in session(i, "ssh", 10.0, 100, country="CN"):
                bus.emit(e)
        for i in range(5, 8):
            for e in session(i, "http", 2.0, 7, country="US"):
                bus.emit(e)
        for i in range(8, 10):
            bus.emit(session(i, "ssh", 0, 0, country="BR")[0])

    lt.call(feed)
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: tarry
    authorization:
      credentials: {TOKEN}
    static_configs:
      - targets: ["127.0.0.1:{server.port}"]
"""
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "prometheus.log", "w"),  # noqa: SIM115
    )
    try:
        wait_until(
            lambda: scalar(port, 'up{job="tarry"}') == 1.0,
            timeout=60,
            what="prometheus to scrape tarry (see prometheus.log)",
        )
        # endlessh-go's families count the SSH tarpit only (the HTTP one is on 8080)
        assert scalar(port, "sum(endlessh_client_open_count_total)") == 7
        assert scalar(port, 'endlessh_client_open_count_total{local_port="2222"}') == 7
        assert scalar(port, 'endlessh_client_closed_count_total{local_port="2222"}') == 5
        assert scalar(port, 'endlessh_sent_bytes_total{local_port="8080"}') is None
        assert scalar(port, 'tarry_sent_bytes_total{proto="http"}') == 21
        assert scalar(port, 'endlessh_trapped_time_seconds_total{local_port="2222"}') == 50
        assert scalar(port, 'tarry_clients_held{proto="ssh"}') == 2
        assert scalar(port, 'sum by (proto) (tarry_time_wasted_seconds_total{proto="http"})') == 6
        by_country = {
            r["metric"]["country"]: float(r["value"][1])
            for r in promql(port, "sum by (country) (tarry_connections_by_country_total)")
        }
        assert by_country == {"CN": 5, "US": 3, "BR": 2}
        assert scalar(port, 'tarry_hold_duration_seconds_count{proto="ssh"}') == 5
        assert scalar(port, 'tarry_hold_duration_seconds_bucket{proto="ssh",le="10.0"}') == 5
        assert scalar(port, 'tarry_hold_duration_seconds_bucket{proto="http",le="1.0"}') == 0

        # Counts move on: one more SSH close shows up at the next scrape.
        lt.call(lambda: [bus.emit(e) for e in session(20, "ssh", 4.0, 1)])
        wait_until(
            lambda: scalar(port, 'endlessh_client_closed_count_total{local_port="2222"}') == 6,
            timeout=20,
            what="the next scrape",
        )
        # Every query of the shipped Grafana dashboard parses and runs; the map has the countries.
        board = json.loads((Path(__file__).resolve().parents[1] / "grafana/tarry.json").read_text())
        for p in board["panels"]:
            for target in p["targets"]:
                expr = (
                    target["expr"]
                    .replace("$job", ".*")
                    .replace("$host", ".*")
                    .replace("$__rate_interval", "1m")
                    .replace("$__range", "5m")
                )
                result = promql(port, expr)  # raises on a syntax error
                if p["type"] == "geomap":
                    assert {r["metric"]["country"] for r in result} == {"CN", "US", "BR"}
        # Without the token, /metrics is refused.
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{server.url}metrics", timeout=5)
        assert err.value.code == 401
    finally:
        end_process(proc)
        lt.run(server.close())
        lt.stop()
