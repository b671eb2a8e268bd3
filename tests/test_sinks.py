"""JSON-lines and syslog sinks: content, rotation, and never stalling the loop."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time

from tarry.events import ACCEPT, CLOSE, Event
from tarry.metrics import Metrics
from tarry.sinks import LineSink, SyslogSink


def accept(i: int = 1) -> Event:
    return Event(
        kind=ACCEPT,
        time=1795000000.25,
        proto="ssh",
        listener="[::]:2222",
        host="::ffff:203.0.113.7",
        port=i,
        fd=9,
        clients=3,
        max_clients=4096,
        country="NL",
    )


def close(i: int = 1) -> Event:
    return Event(
        kind=CLOSE,
        time=1795000100.5,
        proto="http",
        listener="127.0.0.1:8080",
        host="2001:db8::1",
        port=i,
        fd=9,
        duration=100.25,
        sent=1234,
        received=77,
        reason="reset",
        notes=(("user_agent", 'curl/8.5 "quoted"'), ("path", "/wp-login.php")),
    )


def wait_until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_json_lines_to_a_file_and_after_rotation(tmp_path):
    path = tmp_path / "events.jsonl"
    sink = LineSink(str(path), "json", interval=0.05)
    sink.start()
    sink.emit(accept())
    sink.emit(close())
    wait_until(lambda: path.exists() and path.read_text().count("\n") == 2)
    os.rename(path, tmp_path / "events.jsonl.1")  # logrotate without copytruncate
    sink.emit(close(2))
    sink.close()
    a, c = (json.loads(x) for x in (tmp_path / "events.jsonl.1").read_text().splitlines())
    assert a == {
        "time": "2026-11-18T11:06:40.250Z",
        "ts": 1795000000.25,
        "event": "accept",
        "proto": "ssh",
        "listener": "[::]:2222",
        "host": "203.0.113.7",
        "port": 1,
        "fd": 9,
        "country": "NL",
        "clients": 3,
        "max_clients": 4096,
    }
    assert c["event"] == "close" and c["host"] == "2001:db8::1"
    assert c["duration"] == 100.25 and c["sent"] == 1234 and c["received"] == 77
    assert c["reason"] == "reset"
    assert c["notes"] == {"user_agent": 'curl/8.5 "quoted"', "path": "/wp-login.php"}
    (again,) = path.read_text().splitlines()
    assert json.loads(again)["port"] == 2


def test_endlessh_lines_to_a_file(tmp_path):
    path = tmp_path / "tarry.log"
    sink = LineSink(str(path), "endlessh")
    sink.start()
    sink.emit(accept())
    sink.close()
    line = path.read_text()
    assert line.startswith("2026-11-18T11:06:40.250Z ACCEPT host=::ffff:203.0.113.7 port=1 fd=9")


def test_syslog_over_a_unix_socket_and_udp(tmp_path):
    path = str(tmp_path / "log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        server.settimeout(5)
        udp.settimeout(5)
        local = SyslogSink(path, "daemon", "endlessh", interval=0.02)
        remote = SyslogSink(f"127.0.0.1:{udp.getsockname()[1]}", "auth", "json", interval=0.02)
        for s in (local, remote):
            s.start()
            s.emit(close())
        msg = server.recv(4096).decode()
        # <30> = daemon (3) * 8 + info (6); syslog adds its own time stamp
        # an HTTP client: its protocol first and no host= (no endlessh filter takes it)
        assert msg.startswith(
            f"<30>tarry[{os.getpid()}]: CLOSE proto=http peer=2001:db8::1 port=1 fd=9 "
        )
        assert "user_agent=curl/8.5\\x20\\x22quoted\\x22 " in msg
        msg = udp.recv(4096).decode()
        assert msg.startswith(f"<38>tarry[{os.getpid()}]: {{")  # auth (4) * 8 + 6
        assert json.loads(msg.split(": ", 1)[1].rstrip("\0"))["reason"] == "reset"
        local.close()
        remote.close()
    finally:
        server.close()
        udp.close()


def test_a_syslog_socket_that_stops_reading_never_stalls_the_loop(tmp_path):
    """The /dev/log reader hangs: sends block, the buffer fills, events are dropped and said so."""
    path = str(tmp_path / "log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)  # never read: the kernel queues a few datagrams, then send() blocks
    reports: list[str] = []
    sink = SyslogSink(path, capacity=1000, interval=0.01, report=reports.append)
    sink.join_timeout = 1.0
    sink.start()
    metrics = Metrics(sinks=[sink])
    n = 20000

    async def run() -> tuple[float, float]:
        lateness = 0.0
        stop = False

        async def ticker() -> None:
            nonlocal lateness
            while not stop:
                t = time.monotonic()
                await asyncio.sleep(0.005)
                lateness = max(lateness, time.monotonic() - t - 0.005)

        task = asyncio.ensure_future(ticker())
        worst = 0.0
        for start in range(0, n, 500):
            t = time.monotonic()
            for i in range(start, start + 500):
                sink.emit(close(i))
            worst = max(worst, time.monotonic() - t)
            await asyncio.sleep(0.001)
        stop = True
        await task
        return worst, lateness

    try:
        worst, lateness = asyncio.run(run())
        assert worst < 0.05, f"500 emits took {worst:.3f} s"
        assert lateness < 0.1, f"the loop was late by {lateness:.3f} s"
        assert sink.dropped >= n // 2  # the buffer (1000) and the socket queue took a few
        assert reports and "syslog sink is not keeping up: dropped" in reports[0]
        from prometheus_client import generate_latest
        from prometheus_client.core import CollectorRegistry

        reg = CollectorRegistry()
        reg.register(metrics)
        text = generate_latest(reg).decode()
        assert f'tarry_sink_dropped_events_total{{sink="syslog"}} {float(sink.dropped)}' in text
        t = time.monotonic()
        sink.close()  # the writer is stuck in send(): close gives up after join_timeout
        assert time.monotonic() - t < 3.0
        assert any("did not finish" in r for r in reports)
    finally:
        server.close()


def test_a_producer_can_ask_for_less_backlog_than_the_engine_does():
    """Bus.behind(most): the engine lets a sink gather 2,048 events before its
    accepts wait; the workers' supervisor asks for fewer, since its events can
    wait in the workers as compact frames."""
    from tarry.events import Bus

    class Stuck(LineSink):
        def write(self, batch):  # never called: the writer thread is not started
            raise AssertionError

    sink = Stuck(os.devnull, "json", capacity=10000)
    bus = Bus([sink])
    for i in range(300):
        bus.emit(accept(i))
    assert bus.behind(256)
    assert not bus.behind()
    for i in range(2048 - 300):
        bus.emit(accept(i))
    assert bus.behind()
    assert sink.dropped == 0


def test_a_stuck_writer_is_waited_for_only_stall_limit_seconds(monkeypatch):
    """Producers wait while the buffer is past the mark, but only ``STALL_LIMIT``
    seconds in a row; then the sink is stuck (said once, a metric), and when its
    writer drains again it says so."""
    import threading

    from tarry import sinks

    monkeypatch.setattr(sinks, "STALL_LIMIT", 0.3)
    release = threading.Event()
    written: list[int] = []

    class Blocked(LineSink):
        def write(self, batch):
            release.wait()
            written.extend(e.port for e in batch)

    reports: list[str] = []
    sink = Blocked(os.devnull, "json", capacity=1000, batch=10, report=reports.append)
    sink.start()
    try:
        for i in range(600):
            sink.emit(accept(i))
        assert sink.full()  # past the mark (half of 1,000): producers wait...
        started = time.monotonic()
        wait_until(lambda: not sink.full(), 5.0)  # ...only so long
        assert time.monotonic() - started >= 0.25
        assert sink.stuck
        assert [r for r in reports if "stuck" in r] == [reports[0]]
        assert "stdout" not in reports[0] and "file sink is stuck" in reports[0]
        assert not sink.full()  # stays unwaited-for while stuck, said once
        assert sum("stuck" in r for r in reports) == 1
        for i in range(600, 1200):
            sink.emit(accept(i))
        assert sink.dropped > 0

        reg_text = _metrics_text(Metrics(sinks=[sink]))
        assert 'tarry_sink_stuck{sink="file"} 1.0' in reg_text

        release.set()  # the target reads again
        wait_until(lambda: any("file sink recovered after" in r for r in reports), 5.0)
        assert not sink.stuck
        assert f"{sink.dropped} events were dropped meanwhile" in reports[-1]
        assert 'tarry_sink_stuck{sink="file"} 0.0' in _metrics_text(Metrics(sinks=[sink]))
    finally:
        release.set()
        sink.close()


def _metrics_text(metrics: Metrics) -> str:
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry

    reg = CollectorRegistry()
    reg.register(metrics)
    return generate_latest(reg).decode()
