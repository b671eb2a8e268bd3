"""The dashboard's layout and figures in headless Chromium at three widths.

A history of known sessions is written first (so the first view must show
it), a real curl adds one more, and then at 400, 1024 and 1600 px: no
horizontal scroll, no two pieces of text overlapping (from the DOM geometry,
HTML and SVG text alike), and the figures on the page equal ``tarry report
--format json`` for the same history. Screenshots go to artifacts/.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import need, need_module, start_tarry, wait_until
from tarry.events import CLOSE, Event
from tarry.history import HistoryStore
from test_dashboard import launch

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
T0 = time.time() - 86400  # inside the default retention of 90 days

# (proto, ip, duration, reason, notes): what the baits record
KNOWN = [
    ("ssh", "192.0.2.1", 3600.0, "closed", (("ssh_id", "SSH-2.0-libssh_0.9.6"),)),
    ("ssh", "192.0.2.2", 75.0, "reset", (("ssh_id", "SSH-2.0-Go"),)),
    (
        "ssh",
        "192.0.2.3",
        400.0,
        "closed",
        (("ssh_id", "SSH-2.0-OpenSSH_9.2p1"), ("auth_user", "root"), ("auth_pass", "toor")),
    ),
    ("http", "198.51.100.7", 120.0, "timeout", (("method", "GET"), ("path", "/wp-login.php"),
        ("user_agent", "Mozilla/5.0 (compatible; a-very-long-scanner-name-that-wraps/1.0)"))),
    ("http", "2001:db8:1234:5678:9abc:def0:1234:5678", 10.0, "closed",
     (("method", "POST"), ("path", "/" + "x" * 120))),
    ("smtp", "203.0.113.9", 900.0, "closed", (("ehlo", "User"), ("mail_from", "spam@example.net"),
        ("rcpt_to", "a@example.org,b@example.org"))),
]  # fmt: skip

OVERLAPS = """() => {
  const boxes = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.textContent.trim()) continue;
    const p = n.parentElement;
    if (p.closest("script,style,desc,title")) continue;
    const st = getComputedStyle(p);
    if (st.display === "none" || st.visibility === "hidden") continue;
    const range = document.createRange(); range.selectNodeContents(n);
    for (const r of range.getClientRects())
      if (r.width > 0.5 && r.height > 0.5) boxes.push([r, n.textContent.trim().slice(0, 40)]);
  }
  const hits = [];
  for (let i = 0; i < boxes.length; i++)
    for (let j = i + 1; j < boxes.length; j++) {
      const [a, ta] = boxes[i], [b, tb] = boxes[j];
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > 1 && h > 1) hits.push(ta + " | " + tb);
    }
  return hits;
}"""

READY = """() => document.querySelectorAll('#by-proto tbody tr td').length > 3
  && document.querySelectorAll('#recent tbody tr').length >= 7
  && document.querySelectorAll('#chart-world svg').length > 0
  && document.querySelectorAll('#chart-durations svg').length > 0
  && document.querySelectorAll('#chart-software svg').length > 0
  && document.querySelectorAll('#chart-countries svg').length > 0
  && document.querySelectorAll('#chart-connections svg').length > 0
  && document.querySelectorAll('.tile').length >= 6"""

TABLE = """id => [...document.querySelectorAll('#' + id + ' tbody tr')].map(
  tr => [...tr.children].map(td => td.dataset.v !== undefined ? Number(td.dataset.v)
                                                            : td.textContent))"""


def known_history(path: Path) -> None:
    store = HistoryStore(path, retention_days=0)
    store.start()
    for i, (proto, ip, dur, reason, notes) in enumerate(KNOWN):
        store.emit(
            Event(
                kind=CLOSE,
                time=T0 + 60 * i + dur,
                proto=proto,
                host=ip if ":" in ip else "::ffff:" + ip,
                port=40000 + i,
                duration=dur,
                reason=reason,
                notes=notes,
                country="NL" if i % 2 else "",
            )
        )
    store.close()


@pytest.mark.realclient
def test_dashboard_layout_and_figures_at_three_widths(tmp_path):
    need("chromium")
    curl = need("curl")
    need_module("playwright")
    from playwright.sync_api import sync_playwright

    db = tmp_path / "history.sqlite3"
    known_history(db)
    t = start_tarry(
        f'[history]\npath = "{db}"\nflush_interval = 0.1\n[admin]\nlisten = "127.0.0.1:0"\n'
        '[[tarpit]]\nprotocol = "http"\nlisten = ["127.0.0.1:0"]\ndelay = 0.2\n'
        '[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:0"]\ndelay = 0.2\n'
    )
    try:
        url = t.wait_for(r" ADMIN listener=\S+ url=(\S+)", timeout=10).group(1)
        http = t.port("http")
        subprocess.run(
            [curl, "-sS", "-o", "/dev/null", "--max-time", "0.5", f"http://127.0.0.1:{http}/.env"],
            timeout=10,
        )
        wait_until(lambda: t.count(r" CLOSE ") >= 1, 10, "the curl's CLOSE")
        report = subprocess.run(
            [sys.executable, "-m", "tarry", "report", "--db", str(db), "--format", "json"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert report.returncode == 0, report.stderr
        want = json.loads(report.stdout)
        assert want["summary"]["sessions"] == len(KNOWN) + 1
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as p:
            browser = launch(p)
            try:
                for width in (400, 1024, 1600):
                    page = browser.new_page(viewport={"width": width, "height": 900})
                    page.goto(url)
                    # the history's figures arrive with the first view, before any new client
                    page.wait_for_function(READY, timeout=30000)
                    page.wait_for_timeout(300)  # let the charts' layout settle
                    page.screenshot(path=str(ARTIFACTS / f"dashboard-{width}.png"), full_page=True)
                    scroll = page.evaluate(
                        "() => document.documentElement.scrollWidth - window.innerWidth"
                    )
                    assert scroll <= 0, f"{width} px: scrolls {scroll} px sideways"
                    overlaps = page.evaluate(OVERLAPS)
                    assert overlaps == [], f"{width} px: {overlaps[:5]}"
                    check_figures(page, want)
                    page.close()
            finally:
                browser.close()
    finally:
        t.stop()


def check_figures(page, want) -> None:
    holds = page.inner_text("#holds")
    assert f"holds {want['summary']['sessions']} sessions" in holds
    assert f"from {want['summary']['unique_ips']} addresses" in holds
    by_proto = page.evaluate(TABLE, "by-proto")
    assert [(r[0], int(r[1]), r[3]) for r in by_proto] == [
        (r["proto"], r["sessions"], r["seconds"]) for r in want["by_proto"]
    ]
    reasons = page.evaluate(TABLE, "reasons")
    assert [(r[0], r[1], int(r[2])) for r in reasons] == [
        (r["proto"], r["reason"], r["sessions"]) for r in want["reasons"]
    ]
    families = page.evaluate(TABLE, "families")
    assert [(r[0], r[1], int(r[2]), r[3]) for r in families] == [
        (r["proto"], r["family"], r["sessions"], r["seconds"]) for r in want["by_family"]
    ]
    paths = page.evaluate(TABLE, "top-paths")
    assert [(r[0], int(r[1])) for r in paths] == [
        (r["path"], r["sessions"]) for r in want["top_paths"]
    ]
    creds = page.evaluate(TABLE, "top-credentials")
    assert [(r[0], r[1], r[2], int(r[3])) for r in creds] == [
        (r["proto"], r["user"], r["password"], r["sessions"]) for r in want["top_credentials"]
    ]
    mail = [r[0] for r in page.evaluate(TABLE, "top-mail")]
    assert mail == [f"from {r['sender']}" for r in want["top_senders"]] + [
        f"to {r['recipient']}" for r in want["top_recipients"]
    ]
    tiles = page.evaluate(
        "() => [...document.querySelectorAll('.tile')].map(t => t.innerText.replace(/\\s+/g, ' '))"
    )
    assert f"{want['summary']['sessions']} SESSIONS all history" in tiles, tiles
    # never "??" for a country, and what a client said reads as words
    assert "??" not in page.inner_text("#recent") + page.inner_text("#chart-countries")
    assert "GET /wp-login.php" in page.inner_text("#recent")
    assert "=" not in page.inner_text("#recent")
    # every chart says its range
    for name, words in (
        ("connections", "last 3 h"),
        ("durations", "all history"),
        ("countries", "all history"),
        ("software", "all history"),
        ("world", "all history"),
    ):
        assert words in page.inner_text(f"#chart-{name}"), name
    # the map has a legend, and a tooltip per country with connections
    assert "fewer" in page.inner_text(".maplegend")
    titles = page.evaluate("() => [...document.querySelectorAll('#chart-world svg title')]"
                           ".map(t => t.textContent)")  # fmt: skip
    assert any(t.startswith("Netherlands: ") for t in titles), titles
