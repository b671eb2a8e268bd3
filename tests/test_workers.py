"""Workers ([engine] workers = N), end to end through ``tarry serve``.

Loopback source addresses 127.x.y.z stand for hosts; ``worker_for`` says which
worker the kernel steers each one to, so a test can put clients under every
worker (and the kill test checks the steering: exactly the clients of the
addresses it names die with their worker).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import re
import signal
import socket
import time

import pytest

from support import Tarry, start_tarry, wait_until
from tarry.config import ConfigError, parse
from tarry.events import Event
from tarry.workers import Channel, bind_group, worker_for
from test_engine import read_lines
from test_limits import closed_by_peer, dial, logged, tarpit

QUIET = '[history]\nenabled = false\n[admin]\nlisten = ""\n'


def workers(n: int, extra: str = "") -> str:
    return f"[engine]\nworkers = {n}\n{extra}\n"


@pytest.fixture
def serve():
    started: list[Tarry] = []

    def start(config: str) -> Tarry:
        t = start_tarry(config + QUIET)
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


def pids(t: Tarry, n: int) -> dict[int, int]:
    """Worker index -> pid of the ones running now, once ``n`` have started."""

    def found() -> dict[int, int] | None:
        got: dict[int, int] = {}
        for line in list(t.err):
            m = re.search(r"worker (\d+) started \(pid (\d+)\)", line)
            if m:
                got[int(m.group(1))] = int(m.group(2))
        return got if len(got) >= n else None

    return wait_until(found, 10, f"{n} workers")  # type: ignore[no-any-return]


def hosts(n: int, per_worker: int, net: str) -> dict[int, list[str]]:
    """``per_worker`` loopback addresses in ``net`` (e.g. "127.0.9.") for each of ``n`` workers."""
    out: dict[int, list[str]] = {w: [] for w in range(n)}
    for i in range(1, 255):
        addr = f"{net}{i}"
        w = worker_for(addr, n)
        if len(out[w]) < per_worker:
            out[w].append(addr)
    assert all(len(v) == per_worker for v in out.values())
    return out


def server_read(port: int, client: socket.socket) -> bool:
    """The tarpit's socket for ``client`` has nothing left unread (/proc/net/tcp)."""
    src, sport = client.getsockname()
    local = f"0100007F:{port:04X}"
    remote = f"{socket.inet_aton(src)[::-1].hex().upper()}:{sport:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return int(fields[4].split(":")[1], 16) == 0
    return False


# ---- steering ----------------------------------------------------------------------


def test_steering_sends_each_address_to_its_worker() -> None:
    """The kernel runs the BPF program: connections land where worker_for says."""
    socks = bind_group("127.0.0.1:0", 4)
    try:
        port = socks[0].getsockname()[1]
        for sock in socks:
            sock.setblocking(False)
        seen = set()
        for i in range(1, 41):
            src = f"127.0.8.{i}"
            with dial(port, src):
                conn = wait_until(lambda: _accepted(socks), 5, "the connection")
                got, c = conn
                c.close()
            assert got == worker_for(src, 4), src
            seen.add(got)
        assert seen == {0, 1, 2, 3}
    finally:
        for sock in socks:
            sock.close()


def _accepted(socks: list[socket.socket]) -> tuple[int, socket.socket] | None:
    for i, sock in enumerate(socks):
        try:
            return i, sock.accept()[0]
        except BlockingIOError:
            continue
    return None


def test_an_address_in_use_fails_as_without_workers() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(Exception, match="address already in use"):
            bind_group(f"127.0.0.1:{port}", 2)


# ---- config --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", '"many"', "true", "1.5", "2000"])
def test_bad_workers_value_is_one_line(value: str) -> None:
    with pytest.raises(ConfigError, match=r"\[engine\] workers: must be"):
        parse(f"[engine]\nworkers = {value}\n" + tarpit())


def test_auto_is_one_per_core() -> None:
    cfg = parse('[engine]\nworkers = "auto"\n' + tarpit())
    assert cfg.workers == len(os.sched_getaffinity(0))
    assert parse(tarpit()).workers == 1


def test_one_worker_is_the_single_process_engine(serve) -> None:
    t = serve(workers(1) + tarpit())
    port = t.port()
    with dial(port):
        t.wait_for("ACCEPT")
    assert not any("worker" in line for line in t.err)
    children = f"/proc/{t.proc.pid}/task/{t.proc.pid}/children"
    if os.path.exists(children):
        with open(children) as f:
            assert f.read().split() == []


# ---- a worker dies -------------------------------------------------------------------


def test_killed_worker_is_restarted_and_its_clients_logged_closed(serve) -> None:
    t = serve(workers(3) + tarpit(delay=0.2))
    port = t.port()
    before = pids(t, 3)
    where = hosts(3, 2, "127.0.10.")
    held = {w: [dial(port, a) for a in addrs] for w, addrs in where.items()}
    logged(t, "ACCEPT", 6)
    victim = 1
    # one victim client tells who it is; the supervisor must learn that note in time
    talker = held[victim][0]
    talker.sendall(b"SSH-2.0-victim_1.0\r\n")
    wait_until(lambda: server_read(port, talker), 5, "the tarpit to read the identification")
    marker = dial(port, where[victim][1])  # a later loop turn of the same worker
    logged(t, "ACCEPT", 7)
    os.kill(before[victim], signal.SIGKILL)

    died = r"CLOSE .* reason=worker-died"
    logged(t, died, 3)
    lines = [line for line in t.lines if re.search(died, line)]
    assert sorted(re.search(r"host=(\S+)", x).group(1) for x in lines) == sorted(  # type: ignore[union-attr]
        [where[victim][0], where[victim][1], where[victim][1]]
    )
    assert sum("ssh_id=SSH-2.0-victim_1.0" in x for x in lines) == 1
    assert all(re.search(r"time=0\.\d+ bytes=\d+", x) for x in lines)
    wait_until(lambda: pids(t, 3)[victim] != before[victim], 10, "the worker's restart")
    assert any(f"worker {victim} (pid {before[victim]}) killed by SIGKILL" in x for x in t.err)

    # its clients really are gone; the other workers' clients are not
    for s in [*held[victim], marker]:
        assert closed_by_peer(s)
    for w in (0, 2):
        for s in held[w]:
            assert read_lines(s, 1)
    assert t.count("CLOSE") == 3
    # the new worker takes the dead one's addresses
    with dial(port, where[victim][0]) as again:
        logged(t, "ACCEPT", 8)
        assert read_lines(again, 1)
    for w in (0, 2):
        for s in held[w]:
            s.close()


# ---- caps across workers -------------------------------------------------------------


def test_tarpit_cap_holds_across_workers(serve) -> None:
    t = serve(workers(3) + tarpit(max_clients=4, max_clients_per_ip=0))
    port = t.port()
    pids(t, 3)
    where = hosts(3, 3, "127.0.11.")
    clients = [dial(port, a) for addrs in where.values() for a in addrs]  # 9, 3 per worker
    logged(t, "ACCEPT", 4)
    time.sleep(4 * 0.1)  # a few of the workers' looks for room: nobody else comes in
    assert t.count("ACCEPT") == 4
    assert all(int(n) <= 4 for n in re.findall(r"n=(\d+)/4", "\n".join(t.lines)))
    taken = [
        re.search(r"ACCEPT host=(\S+) port=(\d+)", x).groups() for x in t.lines if "ACCEPT" in x
    ]  # type: ignore[union-attr]
    byname = {(c.getsockname()[0], str(c.getsockname()[1])): c for c in clients}
    held = [byname[k] for k in taken]
    for c in held[:2]:  # two leave: two of the five waiting come in, whichever worker has them
        c.close()
    logged(t, "ACCEPT", 6)
    time.sleep(0.4)
    assert t.count("ACCEPT") == 6
    for c in clients:
        c.close()


def test_global_cap_holds_across_workers_and_tarpits(serve) -> None:
    config = workers(3, "[limits]\nmax_clients = 3\n")
    config += tarpit(max_clients_per_ip=0) + tarpit(proto="http", max_clients_per_ip=0)
    t = serve(config)
    ssh, http = t.port("ssh"), t.port("http")
    pids(t, 3)
    where = hosts(3, 2, "127.0.12.")
    clients = [dial(ssh, a[0]) for a in where.values()] + [dial(http, a[1]) for a in where.values()]
    logged(t, "ACCEPT", 3)
    time.sleep(0.4)
    assert t.count("ACCEPT") == 3
    for c in clients:
        c.close()


def test_per_ip_cap_is_exact_across_workers(serve) -> None:
    """Without steering, one address's connections would spread over the
    workers and each worker would let in its own max_clients_per_ip."""
    t = serve(workers(3) + tarpit(max_clients_per_ip=2))
    port = t.port()
    pids(t, 3)
    where = hosts(3, 1, "127.0.13.")
    conns = {a[0]: [dial(port, a[0]) for _ in range(5)] for a in where.values()}
    logged(t, "ACCEPT", 6)
    for addr, socks in conns.items():
        assert t.count(f"ACCEPT host={re.escape(addr)} ") == 2
        refused = [s for s in socks if closed_by_peer(s, 2.0)]
        assert len(refused) == 3
    assert t.count("ACCEPT") == 6
    for socks in conns.values():
        for s in socks:
            s.close()


# ---- signals -------------------------------------------------------------------------


def test_sighup_reloads_every_worker_and_keeps_their_clients(serve, tmp_path) -> None:
    config = workers(3) + tarpit(delay=3.0, name="trap")
    t = serve(config)
    port = t.port()
    pids(t, 3)
    where = hosts(3, 2, "127.0.14.")
    held = [dial(port, a) for addrs in where.values() for a in addrs]
    logged(t, "ACCEPT", 6)
    extra = f"127.0.0.1:{_free_port()}"
    new = (
        workers(3)
        + tarpit(delay=0.1, name="trap").replace(
            'listen = ["127.0.0.1:0"]', f'listen = ["127.0.0.1:0", "{extra}"]'
        )
        + QUIET
    )
    with open(t.config_path, "w") as f:  # type: ignore[attr-defined]
        f.write(new + ("\n[privileges]\nallow_root = true\n" if os.geteuid() == 0 else ""))
    t.signal(signal.SIGHUP)
    wait_until(lambda: any("reload" in x for x in t.err), 10, "the reload")
    assert any("reloaded" in x for x in t.err), t.err
    t.wait_for(rf"LISTEN proto=ssh listener={re.escape(extra)} delay=0.1")
    # every worker runs the new delay with the clients it had
    for s in held:
        read_lines(s, 4, timeout=8)
    assert t.count("CLOSE") == 0
    # the new address is served by every worker
    eport = extra.rpartition(":")[2]
    more = [dial(int(eport), addrs[0]) for addrs in hosts(3, 1, "127.0.15.").values()]
    logged(t, "ACCEPT", 9)
    for s in more:
        assert read_lines(s, 1)
    for s in held + more:
        s.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_logs_every_client_closed_then_one_totals(serve) -> None:
    t = serve(workers(3) + tarpit(delay=0.2))
    port = t.port()
    pids(t, 3)
    where = hosts(3, 3, "127.0.16.")
    held = [dial(port, a) for addrs in where.values() for a in addrs]
    logged(t, "ACCEPT", 9)
    for s in held:
        read_lines(s, 1)
    t.signal(signal.SIGUSR1)
    t.wait_for(r"TOTALS connects=9 ")
    assert t.stop() == 0
    closes = [i for i, x in enumerate(t.lines) if " CLOSE " in x]
    totals = [i for i, x in enumerate(t.lines) if " TOTALS " in x]
    assert len(closes) == 9
    assert all("reason=shutdown" in t.lines[i] for i in closes)
    assert len(totals) == 2 and totals[1] > max(closes)  # SIGUSR1's, then the last
    m = re.search(r"TOTALS connects=(\d+) seconds=([\d.]+) bytes=(\d+)", t.lines[totals[1]])
    assert m is not None and m.group(1) == "9"
    sent = sum(int(re.search(r"bytes=(\d+)", t.lines[i]).group(1)) for i in closes)  # type: ignore[union-attr]
    assert int(m.group(3)) == sent
    for s in held:
        s.close()


# ---- the event channel -----------------------------------------------------------------


def test_channel_never_blocks_and_counts_what_it_drops(monkeypatch) -> None:
    """A supervisor that stops reading costs a worker nothing but the events,
    and it hears how many were dropped once it reads again."""
    import tarry.workers as w

    monkeypatch.setattr(w, "BUFFER_MAX", 1 << 16)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    got: list[Event] = []
    told: list[int] = []

    def read() -> None:
        while True:
            try:
                frame = pickle.loads(ours.recv(1 << 20))
            except BlockingIOError:
                return
            got.extend(x for x in frame if type(x) is Event)
            told.extend(x[1] for x in frame if type(x) is tuple and x[0] == "dropped")

    def event(i: int) -> Event:
        return Event("close", time.time(), "ssh", "l", "127.0.0.1", i, 7, reason="closed")

    async def main() -> Channel:
        ch = Channel(theirs, asyncio.get_running_loop())
        t0 = time.monotonic()
        for i in range(20000):  # nobody reads
            ch.emit(event(i))
            if i % 100 == 99:
                await asyncio.sleep(0)
        assert time.monotonic() - t0 < 5
        assert ch.dropped > 0
        assert ch.queued <= w.BUFFER_MAX + w.FRAME_MAX
        while ch.queue:  # the supervisor reads again
            read()
            await asyncio.sleep(0.001)
        ch.emit(event(20000))
        await asyncio.sleep(0)
        read()
        return ch

    ch = asyncio.run(main())
    assert told and told[-1] == ch.dropped
    assert len(got) + ch.dropped == 20001
    ours.close()
    theirs.close()


def test_a_dead_workers_ipv6_and_proxy_clients(serve) -> None:
    """IPv6 peers come back from the shared column; a connection still waiting
    for its PROXY header was never a client, so it gets no CLOSE."""
    assert worker_for("::1", 2) == 0
    config = workers(2) + tarpit(delay=0.2).replace("127.0.0.1:0", "[::1]:0")
    config += tarpit(delay=0.2, proxy_protocol=True, name="behind")
    t = serve(config)
    v6 = int(t.wait_for(r"LISTEN .*listener=\[::1\]:(\d+)").group(1))
    px = int(t.wait_for(r"LISTEN .*listener=127\.0\.0\.1:(\d+)").group(1))
    before = pids(t, 2)
    src = hosts(2, 1, "127.0.18.")[0][0]
    six = socket.create_connection(("::1", v6), timeout=5)
    known = dial(px, src, b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 22\r\n")
    waiting = dial(px, src, b"PROXY TCP4 ")
    logged(t, "ACCEPT", 2)
    wait_until(lambda: server_read(px, waiting), 5, "the tarpit to read the partial header")
    os.kill(before[0], signal.SIGKILL)
    logged(t, "reason=worker-died", 2)
    assert t.count(r"CLOSE host=::1 port=\d+ .* listener=\[::1\]:\d+ .*reason=worker-died") == 1
    assert t.count(r"CLOSE host=203\.0\.113\.7 port=40000 .*reason=worker-died") == 1
    assert t.count("CLOSE") == 2
    for s in (six, known, waiting):
        assert closed_by_peer(s)


def test_a_socket_systemd_passes_is_one_queue_for_every_worker(tmp_path) -> None:
    from test_deploy import activated

    port = _free_port()
    path = tmp_path / "tarry.toml"
    config = workers(3) + tarpit(delay=0.1).replace("127.0.0.1:0", f"127.0.0.1:{port}") + QUIET
    if os.geteuid() == 0:
        config += "[privileges]\nallow_root = true\n"
    path.write_text(config)
    t = activated(str(path), port, "trap")
    try:
        wait_until(lambda: any("Listening on" in e for e in t.err), 10, "systemd-socket-activate")
        first = dial(port, "127.0.19.1")  # starts tarry
        t.wait_for(rf"LISTEN proto=ssh listener=127\.0\.0\.1:{port} ", timeout=20)
        pids(t, 3)
        assert any("one accept queue for all 3 workers" in e for e in t.err)
        more = [dial(port, a) for addrs in hosts(3, 2, "127.0.19.").values() for a in addrs]
        logged(t, "ACCEPT", 7)
        for s in [first, *more]:
            assert read_lines(s, 2)
    finally:
        t.stop()
    assert t.count(" CLOSE .*reason=shutdown") == 7
    for s in [first, *more]:
        s.close()


def test_a_lagging_supervisor_makes_the_worker_hold_new_clients_back(monkeypatch) -> None:
    """Frames waiting for the supervisor make the worker's bus report itself
    behind (its engine then leaves new clients in the kernel's backlog), and
    not so once they are read; nothing is dropped on the way."""
    import tarry.workers as w
    from tarry.events import Bus

    monkeypatch.setattr(w, "CHANNEL_BEHIND", 1 << 15)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    got = 0

    def read() -> None:
        nonlocal got
        while True:
            try:
                frame = pickle.loads(ours.recv(1 << 20))
            except BlockingIOError:
                return
            got += sum(type(x) is Event for x in frame)

    async def main() -> tuple[int, bool, bool]:
        ch = Channel(theirs, asyncio.get_running_loop())
        bus = Bus([ch])
        sent = 0
        while not bus.behind() and sent < 100000:  # nobody reads
            bus.emit(Event("accept", time.time(), "ssh", "l", "127.0.0.1", sent, 7))
            sent += 1
            if sent % 64 == 0:
                await asyncio.sleep(0)
        lagging = bus.behind()
        deadline = time.monotonic() + 10
        while (ch.queue or ch.batch) and time.monotonic() < deadline:  # it reads again
            read()
            await asyncio.sleep(0.001)
        read()
        assert ch.dropped == 0
        return sent, lagging, bus.behind()

    sent, lagging, still = asyncio.run(main())
    assert lagging and not still
    assert got == sent
    ours.close()
    theirs.close()
