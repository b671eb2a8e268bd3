"""``/metrics`` with only the ``metrics`` extra (issue 18 item 5).

tarry runs on an interpreter that sees the standard library, tarry's source
and prometheus_client, nothing else (``python -S``: no site-packages, so no
aiohttp and no pygal); the admin address then serves the scrape from
prometheus_client's own server, and the dashboard's pages are 404.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import prometheus_client
import pytest

from support import Tarry, wait_until

SRC = Path(__file__).resolve().parent.parent / "src"


def metrics_only_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "prometheus_client").symlink_to(Path(prometheus_client.__file__).parent)
    return {"PYTHONPATH": f"{SRC}{os.pathsep}{site}"}


def test_metrics_are_served_without_the_dashboard_extra(tmp_path: Path) -> None:
    env = metrics_only_env(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "import aiohttp"],
        env={**os.environ, **env},
        capture_output=True,
    )
    assert probe.returncode != 0  # the dashboard extra is out of reach
    fd, path = tempfile.mkstemp(suffix=".toml", dir=tmp_path)
    os.write(
        fd,
        f"""
[[tarpit]]
protocol = "ssh"
listen = ["127.0.0.1:0"]
delay = 0.05

[admin]
listen = "127.0.0.1:0"

[history]
path = "{tmp_path / "h.db"}"

[privileges]
allow_root = true
""".encode(),
    )
    os.close(fd)
    t = Tarry(["serve", "-c", path], env=env, python=[sys.executable, "-S"])
    try:
        admin = int(t.wait_for(r"ADMIN listener=\S+:(\d+)", timeout=15).group(1))
        s = socket.create_connection(("127.0.0.1", t.port("ssh")), timeout=5)
        s.recv(1)

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
                return r.read().decode()

        body = wait_until(
            lambda: "endlessh_client_open_count{" in scrape() and scrape(), 10, "a scrape"
        )
        assert "# TYPE endlessh_client_open_count_total counter" in body
        assert "tarry_connections_total" in body
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/", timeout=5)
        assert err.value.code == 404
        s.close()
    finally:
        assert t.stop() == 0
    assert not any("Traceback" in line for line in t.err), t.err
