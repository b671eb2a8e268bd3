"""Limits, PROXY protocol and reload, end to end through ``tarry serve``.

Several loopback source addresses (127.0.0.x) stand for several hosts; PROXY
headers stand for hosts that loopback cannot be (IPv6 /64s, public addresses).
"""

from __future__ import annotations

import re
import signal
import socket
import time

import pytest

from support import Tarry, need_module, start_tarry, wait_until
from tarry import proxy
from test_engine import free_port, read_lines

NO_HISTORY = '[history]\nenabled = false\n[admin]\nlisten = ""\n'


def tarpit(proto: str = "ssh", delay: float = 0.05, **extra: object) -> str:
    lines = ["[[tarpit]]", f'protocol = "{proto}"', 'listen = ["127.0.0.1:0"]', f"delay = {delay}"]
    for k, v in extra.items():
        lines.append(
            f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}".replace("'", '"')
        )
    return "\n".join(lines) + "\n"


@pytest.fixture
def serve():
    started: list[Tarry] = []

    def start(config: str) -> Tarry:
        t = start_tarry(config + NO_HISTORY)
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


def dial(port: int, src: str = "127.0.0.1", data: bytes = b"") -> socket.socket:
    s = socket.socket()
    s.settimeout(5)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    if data:
        s.sendall(data)
    return s


def closed_by_peer(s: socket.socket, timeout: float = 3.0) -> bool:
    """The server ends the connection within ``timeout`` (whatever it sent before)."""
    deadline = time.monotonic() + timeout
    while True:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if s.recv(65536) == b"":
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def logged(t: Tarry, pattern: str, n: int) -> None:
    """Exactly ``n`` lines match, once the log has caught up (it is written by a thread)."""
    wait_until(lambda: t.count(pattern) >= n, 5, f"{n} lines matching {pattern!r}")
    time.sleep(0.1)
    assert t.count(pattern) == n


def silent(s: socket.socket, seconds: float = 0.4) -> bool:
    """Nothing arrives for a while and the connection stays open."""
    s.settimeout(seconds)
    try:
        s.recv(1024)
    except TimeoutError:
        return True
    return False


# ---- per-IP caps ----------------------------------------------------------------


def test_per_ip_cap_closes_the_excess_and_spares_other_hosts(serve) -> None:
    t = serve(tarpit(max_clients_per_ip=3))
    port = t.port()
    held = [dial(port) for _ in range(3)]
    wait_until(lambda: t.count(r" ACCEPT ") == 3, 5, "3 accepts")
    extra = [dial(port) for _ in range(2)]
    assert all(closed_by_peer(s) for s in extra)
    wait_until(lambda: any("max_clients_per_ip" in e for e in t.err), 5, "the notice")
    other = dial(port, "127.0.0.2")
    assert len(read_lines(other, 1)) == 1  # another host is served
    logged(t, r" ACCEPT ", 4)
    held[0].close()
    t.wait_for(r" CLOSE ")
    again = dial(port)
    assert len(read_lines(again, 1)) == 1  # room again for the first host
    logged(t, r" ACCEPT host=127\.0\.0\.1 ", 4)
    for s in [*held, *extra, other, again]:
        s.close()
    wait_until(lambda: t.count(r" CLOSE ") == t.count(r" ACCEPT "), 5, "every CLOSE")


def test_per_ip_backlog_waits_unread_and_comes_in_when_room(serve) -> None:
    t = serve(tarpit(max_clients_per_ip=2, per_ip_action="backlog"))
    port = t.port()
    held = [dial(port) for _ in range(2)]
    wait_until(lambda: t.count(r" ACCEPT ") == 2, 5, "2 accepts")
    waiting = [dial(port, data=b"SSH-2.0-Waiting_1\r\n") for _ in range(2)]
    assert all(silent(s) for s in waiting)  # not closed, not served
    logged(t, r" ACCEPT ", 2)
    other = dial(port, "127.0.0.3")  # the listener still accepts other hosts
    assert len(read_lines(other, 1)) == 1
    held[0].close()
    assert len(read_lines(waiting[0], 1)) == 1  # the longest waiting one comes in
    assert silent(waiting[1])
    held[1].close()
    assert len(read_lines(waiting[1], 1)) == 1
    for s in [*waiting, other]:
        s.close()
    wait_until(lambda: t.count(r" CLOSE ") == 5, 5, "5 closes")
    # what the waiting clients sent while unread was kept for the bait
    assert t.count(r"ssh_id=SSH-2\.0-Waiting_1") == 2


def test_ipv6_peers_are_counted_per_slash_64(serve) -> None:
    t = serve(tarpit(max_clients_per_ip=1, proxy_protocol=True))
    port = t.port()
    first = dial(port, data=proxy.v2("2001:db8:1:2::1", 1111))
    t.wait_for(r" ACCEPT host=2001:db8:1:2::1 port=1111 ")
    same64 = dial(port, data=proxy.v2("2001:db8:1:2:ffff::9", 2222))
    assert closed_by_peer(same64)
    other64 = dial(port, data=proxy.v2("2001:db8:1:3::1", 3333))
    t.wait_for(r" ACCEPT host=2001:db8:1:3::1 port=3333 ")
    assert len(read_lines(other64, 1)) == 1
    logged(t, r" ACCEPT ", 2)
    for s in (first, same64, other64):
        s.close()


def test_global_cap_spans_listeners(serve) -> None:
    config = tarpit(max_clients=10) + tarpit("http", max_clients=10) + "[limits]\nmax_clients = 3\n"
    t = serve(config)
    ssh_port, http_port = t.port("ssh"), t.port("http")
    a = [dial(ssh_port, f"127.0.0.{i}") for i in (2, 3)]
    b = [dial(http_port, f"127.0.0.{i}", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") for i in (4, 5)]
    logged(t, r" ACCEPT ", 3)  # the fourth waits in the kernel backlog
    first = t.wait_for(r" ACCEPT host=(\S+) ").group(1)
    next(s for s in a + b if s.getsockname()[0] == first).close()
    wait_until(lambda: t.count(r" ACCEPT ") == 4, 5, "the waiting client to come in")
    for s in a + b:
        s.close()


# ---- PROXY protocol -------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "host", "port"),
    [
        (proxy.v1("203.0.113.7", 4242, "127.0.0.1", 22), "203.0.113.7", 4242),
        (proxy.v1("2001:db8::7", 4243, "::1", 22), "2001:db8::7", 4243),
        (
            proxy.v2("198.51.100.9", 5151, "10.0.0.1", 22, tlvs=b"\x04\x00\x02ab"),
            "198.51.100.9",
            5151,
        ),
        (proxy.v2("2001:db8::9", 5152), "2001:db8::9", 5152),
        (b"PROXY UNKNOWN\r\n", "127.0.0.1", None),
        (proxy.v2(None, local=True), "127.0.0.1", None),
    ],
    ids=["v1-tcp4", "v1-tcp6", "v2-tcp4-tlv", "v2-tcp6", "v1-unknown", "v2-local"],
)
def test_proxy_header_names_the_peer(serve, header, host, port) -> None:
    t = serve(tarpit(proxy_protocol=True))
    s = dial(t.port(), data=header + b"SSH-2.0-Behind_LB\r\n")
    line = t.wait_for(r" ACCEPT ").string
    assert f" host={host} " in line
    if port is not None:
        assert f" port={port} " in line
    assert len(read_lines(s, 1)) == 1
    s.close()
    close = t.wait_for(r" CLOSE ").string
    assert f" host={host} " in close and "ssh_id=SSH-2.0-Behind_LB" in close
    assert " received=19 " in close  # the header is the balancer's, not the peer's


def test_proxy_address_decides_the_country_and_the_history(tmp_path) -> None:
    need_module("mmdb_writer")
    from test_geo import write_mmdb

    mmdb = write_mmdb(tmp_path / "c.mmdb", {"203.0.113.0/24": "FR", "127.0.0.0/8": "NL"})
    db = tmp_path / "h.sqlite3"
    t = start_tarry(
        tarpit(proxy_protocol=True)
        + f'[geo]\nmmdb = "{mmdb}"\n[history]\npath = "{db}"\nflush_interval = 0.1\n'
        + '[admin]\nlisten = ""\n'
    )
    try:
        s = dial(t.port(), data=proxy.v1("203.0.113.77", 3333, "127.0.0.1", 22))
        t.wait_for(r" ACCEPT host=203\.0\.113\.77 ")
        s.close()
        close = t.wait_for(r" CLOSE ").string
        assert "country=FR" in close
    finally:
        t.stop()
    import sqlite3

    rows = sqlite3.connect(db).execute("select ip, port, country from sessions").fetchall()
    assert rows == [("203.0.113.77", 3333, "FR")]


def test_proxy_header_byte_by_byte(serve) -> None:
    t = serve(tarpit(proxy_protocol=True))
    s = dial(t.port())
    for b in proxy.v2("192.0.2.1", 7):
        s.send(bytes([b]))
        time.sleep(0.002)
    t.wait_for(r" ACCEPT host=192\.0\.2\.1 port=7 ")
    s.close()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"SSH-2.0-NoHeader\r\n", "not a PROXY header"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 22\r\n", "port"),
        (b"PROXY TCP4 1.2.3.999 5.6.7.8 1 22\r\n", "not an IPv4 address"),
        (b"PROXY TCP4 " + b"1" * 200, "longer than 107"),
        (proxy.V2_SIGNATURE + b"\x21\x11\xff\xff", "above"),
        (proxy.V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12), "version 3"),
    ],
    ids=["none", "port", "address", "long-v1", "long-v2", "version"],
)
def test_malformed_proxy_header_closes_with_a_log_line(serve, data, why) -> None:
    t = serve(tarpit(proxy_protocol=True))
    port = t.port()
    bad = dial(port, data=data)
    assert closed_by_peer(bad)
    wait_until(lambda: any(why in e and "closed" in e for e in t.err), 5, "the log line")
    good = dial(port, data=proxy.v1("203.0.113.1", 1, "127.0.0.1", 22))
    assert len(read_lines(good, 1)) == 1
    logged(t, r" ACCEPT host=203\.0\.113\.1 ", 1)
    logged(t, r" ACCEPT ", 1)
    good.close()
    logged(t, r" CLOSE ", 1)


def test_proxy_header_read_is_bounded_in_time(serve) -> None:
    t = serve(tarpit(proxy_protocol=True, proxy_timeout=0.3))
    s = dial(t.port(), data=b"PROXY TCP4 1.2")
    started = time.monotonic()
    assert closed_by_peer(s, timeout=5)
    assert time.monotonic() - started < 2
    wait_until(lambda: any("no complete PROXY header within 0.3s" in e for e in t.err), 5, "log")
    logged(t, r" ACCEPT ", 0)


def test_many_bad_proxy_headers_are_summed_up_not_logged_each(serve) -> None:
    t = serve(tarpit(proxy_protocol=True))
    port = t.port()
    for _ in range(30):
        s = dial(port, data=b"GET / HTTP/1.0\r\n\r\n")
        assert closed_by_peer(s)
        s.close()
    assert 1 <= sum("not a PROXY header" in e for e in t.err) <= 5


# ---- reload ---------------------------------------------------------------------


def reload(t: Tarry, text: str) -> None:
    before = sum("reloaded" in e for e in t.err)
    with open(t.config_path, "w") as f:  # type: ignore[attr-defined]
        f.write(text + NO_HISTORY + "[privileges]\nallow_root = true\n")
    t.signal(signal.SIGHUP)
    wait_until(lambda: sum("reloaded" in e for e in t.err) > before, 5, "the reload")


def test_reload_opens_new_listeners_and_closes_removed_ones(serve) -> None:
    gone = tarpit("http", name="gone").replace("127.0.0.1:0", f"127.0.0.1:{free_port()}")
    t = serve(tarpit(name="keep") + gone)
    ssh_port, http_port = t.port("ssh"), t.port("http")
    kept = dial(ssh_port)
    dropped = dial(http_port, data=b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    wait_until(lambda: t.count(r" ACCEPT ") == 2, 5, "2 accepts")
    lines_before = t.count(r" LISTEN ")
    reload(t, tarpit(name="keep") + tarpit("http", name="new", delay=0.1))
    # the removed listener's client is released with a CLOSE, and its port is shut
    close = t.wait_for(rf" CLOSE .*listener=127\.0\.0\.1:{http_port} ").string
    assert "reason=reload" in close
    assert closed_by_peer(dropped)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", http_port), timeout=1)
    # the new one listens
    wait_until(lambda: t.count(r" LISTEN proto=http ") == 2, 5, "the new LISTEN line")
    new_port = t.port("http", index=1)
    assert new_port != http_port
    fresh = dial(new_port, data=b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
    fresh.settimeout(5)
    assert fresh.recv(100).startswith(b"HTTP/1.1")
    # and nobody else was dropped
    assert len(read_lines(kept, 3)) == 3
    logged(t, r" CLOSE ", 1)
    assert t.count(r" LISTEN ") > lines_before
    kept.close()
    fresh.close()


def test_reload_raises_limits_and_the_waiting_come_in(serve) -> None:
    t = serve(tarpit(max_clients=2, max_clients_per_ip=10))
    port = t.port()
    socks = [dial(port) for _ in range(3)]
    logged(t, r" ACCEPT ", 2)
    reload(t, tarpit(max_clients=5, max_clients_per_ip=10))
    wait_until(lambda: t.count(r" ACCEPT ") == 3, 5, "the third client after the reload")
    # a lower per-IP cap applies to the next client and drops none of those held
    reload(t, tarpit(max_clients=5, max_clients_per_ip=1))
    extra = dial(port)
    assert closed_by_peer(extra)
    logged(t, r" CLOSE ", 0)
    assert all(len(read_lines(s, 2)) == 2 for s in socks)
    for s in socks:
        s.close()


def test_reload_with_a_bad_config_is_one_line_and_changes_nothing(serve) -> None:
    t = serve(tarpit(delay=0.05))
    port = t.port()
    s = dial(port)
    t.wait_for(r" ACCEPT ")
    errors_before = len(t.err)
    with open(t.config_path, "w") as f:  # type: ignore[attr-defined]
        f.write(tarpit(max_clients_per_ip=-1))
    t.signal(signal.SIGHUP)
    wait_until(lambda: any("reload rejected" in e for e in t.err), 5, "the rejection")
    time.sleep(0.2)
    new = t.err[errors_before:]
    assert len(new) == 1 and "max_clients_per_ip" in new[0], new
    assert len(read_lines(s, 3)) == 3
    fresh = dial(port)
    assert len(read_lines(fresh, 1)) == 1
    logged(t, r" CLOSE ", 0)
    s.close()
    fresh.close()


def refused_metric(admin: int) -> dict[str, float]:
    import urllib.request

    body = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line.startswith("tarry_refused_connections_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('reason="')[1].split('"')[0]] = float(value)
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_per_ip_refusals_are_summed_up_on_a_timer_and_counted_in_a_metric(workers: int) -> None:
    """A flood past max_clients_per_ip, then silence: the sum of the notices
    not logged comes at the window's end without another refusal, and
    ``tarry_refused_connections_total{reason="per_ip"}`` counts every one."""
    need_module("prometheus_client")
    need_module("aiohttp")
    from tarry.engine import NOTICE_BURST, NOTICE_WINDOW

    config = tarpit(max_clients_per_ip=2) + f"[engine]\nworkers = {workers}\n"
    t = start_tarry(config + '[history]\nenabled = false\n[admin]\nlisten = "127.0.0.1:0"\n')
    try:
        port = t.port()
        admin = int(t.wait_for(r"ADMIN listener=\S+:(\d+)", timeout=10).group(1))
        held = [dial(port) for _ in range(2)]
        wait_until(lambda: t.count(r" ACCEPT ") == 2, 5, "2 accepts")
        flood = 20
        extra = [dial(port) for _ in range(flood)]
        first = time.monotonic()
        assert all(closed_by_peer(s) for s in extra)
        # silence from here on; the sum must come within the window (plus slack)
        summary = rf"^tarry: (worker \d+: )?{flood - NOTICE_BURST} more per-IP notices in {NOTICE_WINDOW:g}s$"
        wait_until(
            lambda: any(re.search(summary, e) for e in t.err),
            NOTICE_WINDOW + 3,
            "the summary line",
        )
        assert time.monotonic() - first <= NOTICE_WINDOW + 3
        assert sum("max_clients_per_ip" in e for e in t.err) == NOTICE_BURST
        assert refused_metric(admin) == {"per_ip": flood, "proxy": 0}
        for s in [*held, *extra]:
            s.close()
    finally:
        t.stop()
