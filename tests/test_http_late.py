"""``auto``'s late answers on virtual time: a tool under a total deadline per
request gets a complete 404 just inside it, request after request; what a
tool taught from its address is used for the same software from there only."""

from __future__ import annotations

import random

import h11

from baitsim import Sim
from tarry.bait import TarpitSpec
from tarry.baits import http as H
from tarry.deadlines import SHARE, DeadlineStore
from tarry.events import CLOSE, Event

GOBUSTER_UA = b"gobuster/3.6"
OWN_UA = b"MyBuster/0.1 (+https://example.test)"


def make_bait(store: DeadlineStore | None = None, **options: object) -> H.HttpBait:
    opts = {k: o.default for k, o in H.OPTIONS.items()}
    opts.update(options)
    bait = H.HttpBait(TarpitSpec("http", ["127.0.0.1:0"], 5.0, 100, 0.0, opts), random.Random(1))
    if store is not None:
        bait.store = store
        store.enabled = True
    return bait


def req(path: bytes, ua: bytes, method: bytes = b"GET", version: bytes = b"HTTP/1.1") -> bytes:
    return b"%s %s %s\r\nHost: t\r\nUser-Agent: %s\r\n\r\n" % (method, path, version, ua)


def exchange(sim: Sim, data: bytes) -> tuple[float, bytes]:
    """Send one request; the seconds until a whole response came, and it."""
    start = sim.now
    sim.feed(data)
    out = b""
    while b"</html>" not in out and sim.tick():
        out += sim.take()
    return sim.now - start, out


def parse(data: bytes, method: bytes = b"GET") -> h11.Response:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "t")]))
    conn.receive_data(data)
    event = conn.next_event()
    assert isinstance(event, h11.Response), event
    return event


def test_a_buster_with_a_known_deadline_is_answered_just_inside_it_request_after_request():
    sim = Sim(make_bait(DeadlineStore("http", H.lesson)))
    held = 0.0
    for i in range(100):  # a wordlist: the tool goes on after each 404
        took, out = exchange(sim, req(b"/word%d" % i, GOBUSTER_UA))
        assert 0.75 * 10.0 <= took <= SHARE * 10.0 + 0.01 < 10.0  # inside gobuster's 10 s
        resp = parse(out)
        assert resp.status_code == 404
        body = out[out.index(b"\r\n\r\n") + 4 :]
        assert dict(resp.headers)[b"content-length"] == str(len(body)).encode()
        assert not sim.closed
        held += took
    assert held >= 10 * 10.0  # at least ten times the tool's deadline over one run
    assert sim.notes["client"] == "gobuster" and sim.notes["answer"] == "late"


def test_a_client_without_a_deadline_is_streamed_as_before():
    sim = Sim(make_bait(DeadlineStore("http", H.lesson)))
    sim.feed(req(b"/", b"curl/8.5.0"))
    sim.tick()
    first = sim.take()
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\n\r\n" not in first
    assert "answer" not in sim.notes


def close(ip: str, ua: str, duration: float, **notes: str) -> Event:
    return Event(
        CLOSE, 0.0, "http", "*:8080", ip, 4000, 7, duration=duration, reason="closed",
        notes=(("method", "GET"), ("user_agent", ua), *notes.items()),
    )  # fmt: skip


def test_a_deadline_learned_from_an_address_applies_to_its_software_there_only():
    store = DeadlineStore("http", H.lesson)
    bait = make_bait(store)
    store.emit(close("192.0.2.7", OWN_UA.decode(), 12.0))  # left a streamed answer at 12 s
    store.emit(close("192.0.2.8", "x", 12.0, answer="late"))  # answered late: no lesson
    store.emit(close("192.0.2.9", "x", 0.2))  # too soon to be a deadline
    upload = close("192.0.2.10", "x", 30.0)
    upload.received = 100 << 20  # it was sending a body all along, not waiting for us
    store.emit(upload)
    assert len(store) == 1

    sim = Sim(bait, peer="192.0.2.7")
    took, out = exchange(sim, req(b"/a", OWN_UA))
    assert abs(took - SHARE * 12.0) < 0.01 and parse(out).status_code == 404
    took, out = exchange(sim, req(b"/b", OWN_UA))  # the next request on the connection too
    assert abs(took - SHARE * 12.0) < 0.01
    for peer, ua in (("192.0.2.7", b"curl/8.5.0"), ("192.0.2.99", OWN_UA)):
        other = Sim(bait, peer=peer)
        other.feed(req(b"/", ua))
        other.tick()
        assert other.take().startswith(b"HTTP/1.1 200 OK"), (peer, ua)


def test_late_answers_to_head_and_http10():
    sim = Sim(make_bait())
    sim.feed(req(b"/", GOBUSTER_UA, method=b"HEAD"))
    sim.tick()
    out = sim.take()
    assert out.endswith(b"\r\n\r\n") and b"<html>" not in out
    assert parse(out, b"HEAD").status_code == 404 and not sim.closed
    old = Sim(make_bait())
    old.feed(req(b"/", GOBUSTER_UA, version=b"HTTP/1.0"))
    old.tick()
    assert old.take().startswith(b"HTTP/1.1 404 ") and old.closed


def test_no_late_answers_outside_auto():
    sim = Sim(make_bait(strategy="headers"))
    sim.feed(req(b"/", GOBUSTER_UA))
    sim.tick()
    assert sim.take().startswith(b"HTTP/1.1 200 OK") and sim.notes["client"] == "gobuster"


def test_the_store_is_bounded():
    store = DeadlineStore("http", H.lesson, cap=100)
    store.enabled = True
    for i in range(1000):
        store.emit(close(f"10.0.{i // 256}.{i % 256}", "x", 5.0))
    assert len(store) == 100 and len(store._by_ip) == 100
    assert store.known("10.0.3.231") and not store.known("10.0.0.0")


def test_real_curl_with_a_total_deadline_teaches_it_and_is_then_answered_inside_it():
    """``curl --max-time 3`` is a tool with a total deadline per transfer. Its
    first visit is streamed, as the endless reference would, and it gives up at
    3 s; from then on, the same curl from the same address gets a 404 just
    inside 3 s for each URL, and goes through its whole list."""
    import re
    import subprocess
    import time

    from support import need, start_tarry

    curl = need("curl")
    t = start_tarry(
        """
[[tarpit]]
protocol = "http"
listen = ["127.0.0.1:0"]
delay = 0.5

[history]
enabled = false
"""
    )
    try:
        base = f"http://127.0.0.1:{t.port('http')}"
        argv = [curl, "-s", "-o", "/dev/null", "-w", "%{http_code}\\n", "--max-time", "3"]
        first = subprocess.run([*argv, f"{base}/first"], capture_output=True, text=True, timeout=30)
        assert first.returncode == 28  # timed out: held for its whole deadline
        t.wait_for(r"CLOSE .*reason=(closed|reset) .*path=/first", timeout=10)
        started = time.monotonic()
        urls = [a for i in range(5) for a in ("-o", "/dev/null", f"{base}/w{i}")]
        run = subprocess.run([*argv, *urls], capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
        assert run.stdout.split() == ["404"] * 5, run
        assert 5 * 0.7 * 3 <= took <= 5 * 3, took  # each just inside its 3 s
    finally:
        t.stop()
    closes = [line for line in t.lines if " CLOSE " in line and "path=/w" in line]
    assert closes and all(re.search(r"answer=late deadline=(2\.[5-9]|3)\b", c) for c in closes)
