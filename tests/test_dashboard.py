"""The dashboard end to end: `tarry serve`, real SSH clients trapped, headless Chromium."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from support import ADMIN_DEFAULT_GROUP, need, need_module, ssh_argv, start_tarry, wait_until
from tarry.report import report_main
from test_geo import write_mmdb

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

CHARTS_READY = """() => {
  const held = [...document.querySelectorAll('.tile')]
    .find(t => t.querySelector('.k').firstChild.textContent === 'held now');
  if (!held || Number(held.querySelector('.v').textContent) < %d) return false;
  const bars = name => document.querySelectorAll(
    `#chart-${name} svg .series .reactive`).length;
  return bars('connections') > 0 && bars('durations') > 0 && bars('countries') > 0
    && bars('software') > 0
    && document.querySelectorAll('#chart-world svg .country.series').length > 0
    && document.querySelectorAll('#clients tbody tr').length >= %d;
}"""


def launch(playwright):
    """Debian's chromium, headless, no browser download; playwright gives it a fresh profile."""
    return playwright.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )


def ssh_client(port: int) -> subprocess.Popen:
    return subprocess.Popen(
        ssh_argv(port, "-o", "ConnectTimeout=60"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def raw_client(port: int, ident: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(ident)
    s.recv(100)  # a banner line: the tarpit has it
    return s


@pytest.mark.realclient
def test_dashboard_shows_trapped_clients_live(tmp_path):
    need("chromium")
    need_module("playwright")
    from playwright.sync_api import sync_playwright

    mmdb = write_mmdb(tmp_path / "test.mmdb", {"127.0.0.0/8": "NL"})
    db = tmp_path / "history.sqlite3"
    t = start_tarry(
        f"""
[[tarpit]]
protocol = "ssh"
listen = ["127.0.0.1:0"]
delay = 0.2

[admin]
listen = "127.0.0.1:0"

[history]
path = "{db}"

[geo]
mmdb = "{mmdb}"
"""
    )
    procs: list[subprocess.Popen] = []
    socks: list[socket.socket] = []
    try:
        port = t.port("ssh")
        admin = int(t.wait_for(r"ADMIN listener=\S+:(\d+)", timeout=10).group(1))
        procs += [ssh_client(port) for _ in range(2)]
        for ident in (b"SSH-2.0-libssh_0.9.6\r\n", b"SSH-2.0-Go\r\n", b"SSH-2.0-paramiko_3.4\r\n"):
            socks.append(raw_client(port, ident))
        wait_until(lambda: t.count(r" ACCEPT ") >= 5, 15, "five clients accepted")
        for s in socks[:2]:  # two leave: hold durations and client software to plot
            s.close()
        t.wait_for(r"CLOSE .*ssh_id=SSH-2.0-Go", timeout=10)
        t.wait_for(r"CLOSE .*ssh_id=SSH-2.0-libssh_0.9.6", timeout=10)

        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as p:
            # Debian's chromium, no browser download; playwright gives it a fresh profile.
            browser = launch(p)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1500})
                page.goto(f"http://127.0.0.1:{admin}/")
                page.wait_for_function(CHARTS_READY % (3, 3), timeout=30000)
                table = page.inner_text("#clients")
                assert "SSH-2.0-OpenSSH" in table  # what the real ssh client said
                assert "NL" in table
                assert "paramiko" in table
                # Live, without a reload: one more client shows up in the tiles.
                socks.append(raw_client(port, b"SSH-2.0-PuTTY_Release_0.78\r\n"))
                page.wait_for_function(CHARTS_READY % (4, 4), timeout=30000)
                soft = page.inner_text("#chart-software")
                assert "libssh" in soft and "Go" in soft
                page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
                dom = page.content()
                (ARTIFACTS / "dashboard.html").write_text(dom)
            finally:
                browser.close()

        summary = json.load(urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/summary"))
        assert summary["held"] == {"ssh": 4}
        assert summary["countries"] == [["NL", 6]]
    finally:
        for s in socks:
            s.close()
        for proc in procs:
            proc.kill()
            proc.wait(5)
        assert t.stop() == 0

    # SIGTERM flushed the history: every session is there, and the report counts them.
    out = tmp_path / "report.json"
    with open(out, "w") as f:
        import contextlib

        with contextlib.redirect_stdout(f):
            assert report_main(["--db", str(db), "--format", "json"]) == 0
    data = json.loads(out.read_text())
    assert data["summary"]["sessions"] == 6
    assert data["summary"]["unique_ips"] == 1
    assert data["top_countries"][0]["country"] == "NL"
    softwares = {r["software"] for r in data["top_software"]}
    assert {"SSH-2.0-libssh_0.9.6", "SSH-2.0-Go", "SSH-2.0-PuTTY_Release_0.78"} <= softwares
    assert any(s.startswith("SSH-2.0-OpenSSH") for s in softwares)


def test_admin_refuses_a_public_bind_without_token(tmp_path):
    config = """
[[tarpit]]
protocol = "ssh"
listen = ["127.0.0.1:0"]

[admin]
listen = "0.0.0.0:0"

[history]
enabled = false
"""
    t = start_tarry(config)
    assert t.proc.wait(15) != 0
    wait_until(lambda: t.err, 5, "the error line")
    assert len(t.err) == 1, t.err
    assert "admin.listen = '0.0.0.0:0' is not a loopback address" in t.err[0]
    assert "admin.token" in t.err[0]
    assert not any("Traceback" in line for line in t.err)


def test_admin_token_guards_every_page(tmp_path):
    t = start_tarry(
        """
[[tarpit]]
protocol = "ssh"
listen = ["127.0.0.1:0"]

[admin]
listen = "127.0.0.1:0"
token = "hunter2-but-longer"

[history]
enabled = false
"""
    )
    try:
        admin = int(t.wait_for(r"ADMIN listener=\S+:(\d+)", timeout=10).group(1))
        base = f"http://127.0.0.1:{admin}"
        for path in ("/", "/api/summary", "/metrics", "/chart/durations.svg"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(base + path, timeout=5)
            assert err.value.code == 401
        req = urllib.request.Request(
            base + "/metrics", headers={"Authorization": "Bearer hunter2-but-longer"}
        )
        body = urllib.request.urlopen(req, timeout=5).read().decode()
        assert "endlessh_client_open_count_total" in body
        wrong = urllib.request.Request(base + "/metrics", headers={"Authorization": "Bearer nope"})
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(wrong, timeout=5)
        # The page takes the token once and keeps it in a cookie.
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        page = opener.open(base + "/?token=hunter2-but-longer", timeout=5)
        assert page.url == base + "/" and b"<title>tarry</title>" in page.read()
        assert json.load(opener.open(base + "/api/summary", timeout=5))["held_total"] == 0
        assert urllib.request.urlopen(base + "/healthz", timeout=5).read() == b"ok\n"
    finally:
        t.stop()


@ADMIN_DEFAULT_GROUP
def test_default_admin_port_taken_is_only_a_warning(tmp_path):
    """With no [admin] table the dashboard is best effort: a busy 8787 does not stop the tarpit."""
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        blocker.bind(("127.0.0.1", 8787))
        blocker.listen()
    except OSError:
        pass  # something else holds it already: just as good
    t = start_tarry(
        f"""
[[tarpit]]
protocol = "ssh"
listen = ["127.0.0.1:0"]

[history]
path = "{tmp_path / "h.sqlite3"}"
""",
        env={"XDG_STATE_HOME": str(tmp_path)},
        default_admin=True,
    )
    try:
        t.port("ssh")
        wait_until(lambda: any("dashboard off" in e for e in t.err), 10, "the warning")
        assert t.proc.poll() is None
    finally:
        blocker.close()
        t.stop()
