"""The engine end to end: a real tarry process, real sockets on loopback."""

from __future__ import annotations

import os
import re
import signal
import socket
import time

import pytest

from support import Tarry, free_port, start_tarry, wait_until

# fail2ban/CrowdSec-style patterns for endlessh's lines: exactly these fields
TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
ACCEPT_RX = re.compile(rf"^{TS} ACCEPT host=(\S+) port=(\d+) fd=(\d+) n=(\d+)/(\d+)$")
CLOSE_RX = re.compile(
    rf"^{TS} CLOSE host=(\S+) port=(\d+) fd=(\d+) time=(\d+\.\d{{3}}) bytes=(\d+)$"
)
TOTALS_RX = re.compile(rf"^{TS} TOTALS connects=(\d+) seconds=(\d+\.\d{{3}}) bytes=(\d+)$")


def ssh_config(delay: float = 0.05, **extra: object) -> str:
    lines = ["[[tarpit]]", 'protocol = "ssh"', 'listen = ["127.0.0.1:0"]', f"delay = {delay}"]
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def connect(port: int, ident: bytes = b"SSH-2.0-Test_1.0\r\n") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if ident:
        s.sendall(ident)
    return s


def read_lines(sock: socket.socket, n: int, timeout: float = 5.0) -> list[bytes]:
    sock.settimeout(timeout)
    buf = b""
    while buf.count(b"\r\n") < n:
        chunk = sock.recv(4096)
        assert chunk, "server closed the connection"
        buf += chunk
    return buf.split(b"\r\n")[:n]


@pytest.fixture
def tarry_ssh():
    started: list[Tarry] = []

    def start(*args: str) -> Tarry:
        t = Tarry(["ssh", *args])
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


@pytest.fixture
def serve():
    started: list[Tarry] = []

    def start(config: str) -> Tarry:
        t = start_tarry(config)
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


def test_endlessh_log_lines_have_exactly_endlessh_fields(tarry_ssh) -> None:
    port = free_port()
    t = tarry_ssh("-v", "-d", "50", "-p", str(port), "-4")
    t.wait_for(r"BindFamily IPv4 Only")
    s = wait_until(lambda: _try_connect(port), 5, "the listener")
    lines = read_lines(s, 3)
    assert all(not line.startswith(b"SSH-") for line in lines)
    m = ACCEPT_RX.match(t.wait_for(r" ACCEPT ").string)
    assert m and m.group(1) == "127.0.0.1" and m.group(5) == "4096" and m.group(4) == "1"
    local_port = s.getsockname()[1]
    assert int(m.group(2)) == local_port
    s.close()
    c = CLOSE_RX.match(t.wait_for(r" CLOSE ").string)
    assert c and c.group(1) == "127.0.0.1" and int(c.group(2)) == local_port
    assert c.group(3) == m.group(3)
    assert float(c.group(4)) >= 0.1 and int(c.group(5)) >= sum(len(x) + 2 for x in lines)
    t.signal(signal.SIGTERM)
    assert t.proc.wait(10) == 0
    tot = TOTALS_RX.match(t.wait_for(r" TOTALS ").string)
    assert tot and tot.group(1) == "1" and tot.group(3) == c.group(5)


def _try_connect(port: int) -> socket.socket | None:
    try:
        return connect(port)
    except OSError:
        return None


def test_dual_stack_by_default_shows_mapped_ipv4(tarry_ssh) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    port = free_port()
    t = tarry_ssh("-v", "-d", "50", "-p", str(port))
    s = wait_until(lambda: _try_connect(port), 5, "the listener")
    m = ACCEPT_RX.match(t.wait_for(r" ACCEPT ").string)
    assert m and m.group(1) == "::ffff:127.0.0.1"
    s6 = socket.create_connection(("::1", port), timeout=5)
    assert t.wait_for(r" ACCEPT host=::1 ")
    s.close()
    s6.close()


def test_silent_without_v_as_endlessh(tarry_ssh) -> None:
    port = free_port()
    t = tarry_ssh("-d", "50", "-p", str(port))
    s = wait_until(lambda: _try_connect(port), 5, "the listener")
    read_lines(s, 2)
    s.close()
    t.signal(signal.SIGTERM)
    assert t.proc.wait(10) == 0
    time.sleep(0.1)
    assert t.lines == []


def test_serve_lines_carry_extra_fields(serve) -> None:
    t = serve(ssh_config())
    port = t.port()
    s = connect(port, b'SSH-2.0-Evil "quoted" \\ \x01\r\n')
    read_lines(s, 2)
    accept = t.wait_for(r" ACCEPT ").string
    assert re.search(rf" n=1/4096 proto=ssh listener=127\.0\.0\.1:{port}$", accept)
    s.close()
    close = t.wait_for(r" CLOSE ").string
    head, _, extra = close.partition(" proto=")
    assert CLOSE_RX.match(head)
    assert "reason=closed" in extra and "received=27" in extra
    # the note is sanitised (\\ and \x01), then one bare token (space and " escaped)
    assert extra.endswith(r"ssh_id=SSH-2.0-Evil\x20\x22quoted\x22\x20\\\x20\x01"), extra


def test_lines_are_never_early_and_late_by_at_most_a_bucket(serve) -> None:
    """The timer wheel rounds due times up to its bucket (1/40 of the delay),
    and each next line is due a delay after the tick that sent this one: the
    mean gap lies between the delay and the delay plus a bucket. The mean over
    10 lines depends on two receive times only, so a loaded machine's late
    wake-ups of the reading thread barely move it."""
    delay = 0.4
    t = serve(ssh_config(delay))
    s = connect(t.port())
    s.settimeout(5)
    stamps: list[float] = []
    buf = b""
    while len(stamps) < 10:
        chunk = s.recv(4096)
        assert chunk
        buf += chunk
        while b"\r\n" in buf:
            _, buf = buf.split(b"\r\n", 1)
            stamps.append(time.monotonic())
    mean = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    assert delay - 0.003 <= mean <= delay * (1 + 1 / 40) + 0.01, mean
    s.close()


def test_close_is_logged_within_a_second_even_with_a_long_delay(serve) -> None:
    t = serve(ssh_config(delay=10.0))
    s = connect(t.port())
    t.wait_for(r" ACCEPT ")
    time.sleep(0.2)
    s.close()
    closed_at = time.monotonic()
    line = t.wait_for(r" CLOSE ", timeout=1.0).string
    assert time.monotonic() - closed_at < 1.0
    held = float(re.search(r"time=(\d+\.\d+)", line).group(1))
    assert 0.2 <= held < 1.2  # endlessh would say up to 2 delays more


def test_sigterm_closes_every_client_then_totals(serve) -> None:
    t = serve(ssh_config())
    port = t.port()
    socks = [connect(port) for _ in range(5)]
    wait_until(lambda: t.count(r" ACCEPT ") == 5, 5, "5 accepts")
    for s in socks:
        read_lines(s, 1)
    t.signal(signal.SIGTERM)
    assert t.proc.wait(10) == 0
    time.sleep(0.1)
    closes = [i for i, line in enumerate(t.lines) if " CLOSE " in line]
    totals = [i for i, line in enumerate(t.lines) if " TOTALS " in line]
    assert len(closes) == 5 and len(totals) == 1 and totals[0] > max(closes)
    assert all("reason=shutdown" in t.lines[i] for i in closes)
    assert "connects=5 " in t.lines[totals[0]]
    for s in socks:  # the peers really were closed
        s.settimeout(5)
        while s.recv(4096):
            pass


def test_sigusr1_logs_totals_with_clients_still_held(serve) -> None:
    t = serve(ssh_config())
    s1, s2 = connect(t.port()), connect(t.port())
    read_lines(s1, 2)
    read_lines(s2, 2)
    time.sleep(0.3)
    t.signal(signal.SIGUSR1)
    line = t.wait_for(r" TOTALS ").string
    m = re.search(r"connects=(\d+) seconds=(\d+\.\d+) bytes=(\d+)", line)
    assert m and m.group(1) == "2" and float(m.group(2)) >= 0.6 and int(m.group(3)) > 0
    assert t.count(r" CLOSE ") == 0 and t.proc.poll() is None
    s1.close()
    s2.close()


def test_max_clients_holds_and_the_backlog_waits(serve) -> None:
    t = serve(ssh_config(max_clients=3))
    port = t.port()
    socks = [connect(port) for _ in range(5)]
    wait_until(lambda: t.count(r" ACCEPT ") == 3, 5, "3 accepts")
    time.sleep(0.3)
    assert t.count(r" ACCEPT ") == 3
    assert re.search(r"n=3/3", t.lines[-1] + "".join(t.lines))
    socks[0].close()
    wait_until(lambda: t.count(r" ACCEPT ") == 4, 5, "a waiting client to be let in")
    time.sleep(0.3)
    assert t.count(r" ACCEPT ") == 4
    for s in socks[1:]:
        s.close()


def test_a_flood_of_input_does_not_grow_memory(serve) -> None:
    t = serve(ssh_config(delay=1.0))
    s = connect(t.port())
    t.wait_for(r" ACCEPT ")
    s.sendall(b"x" * (1 << 20))  # warm-up: first-use allocations
    time.sleep(0.2)
    before = t.rss_kb()
    block = b"\x00garbage\r\n" * 6554  # 64 KiB
    for _ in range(100 * 16):  # 100 MiB
        s.sendall(block)
    s.shutdown(socket.SHUT_WR)
    line = t.wait_for(r" CLOSE ", timeout=60).string
    after = t.rss_kb()
    assert f"received={18 + (1 << 20) + 100 * 16 * len(block)}" in line
    assert after - before <= 64, f"RSS grew by {after - before} KB"


def test_a_client_that_never_reads_does_not_grow_memory(serve) -> None:
    t = serve(ssh_config(delay=0.001, line_length=255) + "[engine]\nwrite_timeout = 3.0\n")
    port = t.port()
    socks = []
    for _ in range(20):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    wait_until(lambda: t.count(r" ACCEPT ") == 20, 5, "20 accepts")
    time.sleep(0.5)  # kernel buffers fill within a few hundred lines
    before = t.rss_kb()
    time.sleep(1.0)  # thousands more lines are due; none may pile up
    after = t.rss_kb()
    assert after - before <= 64, f"RSS grew by {after - before} KB"
    # and past the write timeout they are let go
    wait_until(lambda: t.count(r"reason=write-timeout") == 20, 10, "write timeouts")
    for s in socks:
        s.close()


def test_sighup_endlessh_config_applies_new_delay_and_port(tarry_ssh, tmp_path) -> None:
    port1, port2 = free_port(), free_port()
    cfg = tmp_path / "config"
    cfg.write_text(f"Port {port1}\nDelay 2000\nLogLevel 1\nBindFamily 4\n")
    t = tarry_ssh("-f", str(cfg))
    t.wait_for(rf"Port {port1}")
    s = wait_until(lambda: _try_connect(port1), 5, "the first port")
    t.wait_for(r" ACCEPT ")
    cfg.write_text(f"Port {port2}\nDelay 50\nLogLevel 1\nBindFamily 4\n")
    t.signal(signal.SIGHUP)
    t.wait_for(r"Delay 50")
    # the held client is kept and gets lines at the new pace from its next line on
    read_lines(s, 1, timeout=3)
    started = time.monotonic()
    read_lines(s, 10, timeout=3)
    assert time.monotonic() - started < 1.5
    s2 = wait_until(lambda: _try_connect(port2), 5, "the new port")
    wait_until(lambda: t.count(r" ACCEPT ") == 2, 5, "an accept on the new port")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port1), timeout=1)
    assert t.count(r" CLOSE ") == 0
    s.close()
    s2.close()


def test_sighup_serve_reload_keeps_clients_and_rejects_bad_config(serve) -> None:
    t = serve(ssh_config(delay=2.0))
    path = t.config_path
    s = connect(t.port())
    t.wait_for(r" ACCEPT ")
    with open(path, "w") as f:
        f.write(ssh_config(delay='"oops"'))
    t.signal(signal.SIGHUP)
    wait_until(
        lambda: any("reload rejected" in e and "delay" in e for e in t.err), 5, "a rejection"
    )
    with open(path, "w") as f:
        f.write(ssh_config(delay=0.05))
    t.signal(signal.SIGHUP)
    wait_until(lambda: any("reloaded" in e for e in t.err), 5, "the reload")
    read_lines(s, 1, timeout=3)
    started = time.monotonic()
    read_lines(s, 10, timeout=3)
    assert time.monotonic() - started < 1.5
    assert t.count(r" CLOSE ") == 0
    s.close()


def test_one_client_among_many_reset_is_seen(serve) -> None:
    t = serve(ssh_config(delay=10.0))
    port = t.port()
    keep = [connect(port) for _ in range(3)]
    rst = connect(port)
    wait_until(lambda: t.count(r" ACCEPT ") == 4, 5, "4 accepts")
    rst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    rst.close()
    line = t.wait_for(r" CLOSE ", timeout=1.0).string
    assert "reason=reset" in line or "reason=closed" in line
    assert t.count(r" CLOSE ") == 1
    for s in keep:
        s.close()


def test_fd_exhaustion_pauses_accepts_without_spinning(tmp_path) -> None:
    config = tmp_path / "t.toml"
    config.write_text(ssh_config(delay=0.05))
    # a low fd limit: the process runs out of descriptors after a few clients
    # (uvloop, when installed, takes 7 more fds than asyncio's own loop)
    t = Tarry(["serve", "-c", str(config)], nofile=32)
    try:
        port = t.port()
        socks = []
        for _ in range(40):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        wait_until(lambda: any("pausing accepts" in e for e in t.err), 5, "the pause")
        time.sleep(0.5)
        pid = t.proc.pid
        cpu0 = _cpu(pid)
        time.sleep(1.0)
        assert _cpu(pid) - cpu0 < 0.5, "the engine spins while out of descriptors"
        held = t.count(r" ACCEPT ")
        assert 5 <= held < 40
        assert sum("pausing accepts" in e for e in t.err) == 1  # once per episode
        for s in socks[:10]:
            s.close()
        wait_until(lambda: t.count(r" ACCEPT ") > held, 10, "accepts to resume")
    finally:
        t.stop()
        for s in socks:
            s.close()


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("rows", [1024, (1 << 16) + 1])
def test_the_wheel_stores_fds_in_the_narrowest_type_that_holds_them(rows: int) -> None:
    """The wheel's buckets hold 2-byte fds while every fd the table has a row
    for fits in 16 bits (2 bytes less per held client), 4-byte ones beyond."""
    import asyncio

    from tarry.baits import registry
    from tarry.config import parse
    from tarry.engine import Engine
    from tarry.events import Bus
    from tarry.net import bind_listener
    from tarry.table import make_table

    spec = parse('[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:0"]\ndelay = 0.05\n').tarpits[
        0
    ]

    async def main() -> tuple[set[str], list[bytes]]:
        engine = Engine(Bus(), table=make_table(rows))
        sock = bind_listener("127.0.0.1:0")
        engine.add_tarpit(spec, registry()["ssh"].make(spec), [("127.0.0.1:0", sock)])
        engine.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        lines = [await asyncio.wait_for(reader.readline(), 5) for _ in range(3)]
        kinds = {bucket.typecode for bucket in engine.wheel.buckets.values()}
        writer.close()
        engine.stop()
        return kinds, lines

    kinds, lines = asyncio.run(main())
    assert kinds == {"H" if rows <= 1 << 16 else "i"}
    assert all(line.endswith(b"\r\n") and not line.startswith(b"SSH-") for line in lines)


def test_a_client_held_for_months_keeps_its_exact_accept_time() -> None:
    """The table keeps accept times in 32-bit milliseconds (49.7 days before
    they wrap); the sweep keeps the exact time of a client held past 24.8 days
    aside, so its CLOSE duration stays exact and the age its bait sees never
    wraps back to a young client's."""
    import asyncio

    from tarry.engine import Engine
    from tarry.events import Bus
    from tarry.table import make_table, ms_age

    loop = asyncio.new_event_loop()
    try:
        engine = Engine(Bus(), table=make_table(64), loop=loop)
        fd, start = 5, 123456.789
        engine.lst[fd] = 1
        engine.rows.top = fd + 1
        engine.t0[fd] = int(start * 1000) & 0xFFFFFFFF
        for day in range(0, 121, 6):  # the sweep's period: 6 days
            now = start + day * 86400 + 0.25
            engine._sweep(now)
            assert engine.age(fd, now) == pytest.approx(day * 86400 + 0.25, abs=0.002)
            bait_age = ms_age(engine.t0[fd], now)  # what the timer hands the bait
            if day * 86400 < (1 << 31) / 1000:
                assert bait_age == pytest.approx(day * 86400 + 0.25, abs=0.002)
            else:
                assert (1 << 31) / 1000 <= bait_age <= 31 * 86400
        engine.lst[fd] = 0
        engine.rows.since.clear()
        engine.ep.close()
    finally:
        loop.close()
