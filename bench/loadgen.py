"""Hold N TCP connections to a loopback tarpit; report how many it keeps, as JSON lines.

One process runs one epoll loop over plain non-blocking sockets (no coroutine per connection), so
the load generator itself stays cheap and does not steal the CPU it is meant to measure. Choices:

- Connections are spread over source addresses 127.0.0.2, .3, ... (--per-src each), bound before
  connect with IP_BIND_ADDRESS_NO_PORT: one source address runs out of ephemeral ports near 28k.
- RLIMIT_NOFILE is raised to the hard limit; a process can hold about that many connections, so
  --procs splits N over several worker processes (0 = as many as the limit needs).
- Connects are non-blocking, paced (--rate per second) and bounded in flight (--max-pending).
- Each client sends an SSH identification line on connect, as real clients do (--no-ident: don't).
- Whatever the server sends is read and thrown away, with a small SO_RCVBUF; lines are counted.

Output, one JSON object per line (t is CLOCK_MONOTONIC, comparable across processes):
  {"event": "start", "t": ...}                          the first connect() was issued
  {"event": "connected", "t": ..., "connected": k, "failed": f, "complete": bool, "errors": {...}}
  {"event": "status", "t": ..., "open": k, "lines": L, "bytes": B}           on SIGUSR1
  {"event": "final", "t": ..., "open": k, "closed_by_server": c, ...}        on SIGTERM/SIGINT
                                                                             or after --hold
It always stops by itself: connects give up after --connect-timeout, holding after --hold seconds.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import os
import resource
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time

IDENT = b"SSH-2.0-tarrybench_1.0\r\n"
STARTUP = b"user\x00bench\x00database\x00bench\x00application_name\x00tarrybench\x00\x00"
PAYLOADS = {
    "ssh": IDENT,
    "http": b"GET / HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: tarrybench/1.0\r\nAccept: */*\r\n\r\n",
    # database baits: a command; nothing (the server speaks first); a StartupMessage
    "redis": b"*1\r\n$4\r\nINFO\r\n",
    "mysql": b"",
    "postgresql": struct.pack("!II", 8 + len(STARTUP), 196608) + STARTUP,
    "none": b"",
}
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
FD_MARGIN = 64  # fds a worker keeps for itself: stdio, epoll, the wakeup pair, Python's own


def emit(obj: dict) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def raise_nofile() -> int:
    """Raise the soft fd limit to the hard one; return the new soft limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Flags:
    """What the signal handlers ask of the main loop; the wakeup fd makes epoll return at once."""

    def __init__(self) -> None:
        self.status = 0
        self.stop = False

    def install(self) -> socket.socket:
        rsock, wsock = socket.socketpair()
        rsock.setblocking(False)
        wsock.setblocking(False)
        self._keep = (rsock, wsock)
        signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGUSR1, self._on_status)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        return rsock

    def _on_status(self, _signum, _frame) -> None:
        self.status += 1

    def _on_stop(self, _signum, _frame) -> None:
        self.stop = True


def source_address(first: str, index: int, per_src: int) -> str:
    addr = ipaddress.IPv4Address(first) + index // per_src
    if not addr.is_loopback:
        raise SystemExit(f"loadgen: source address {addr} is outside 127.0.0.0/8")
    return str(addr)


def worker(args: argparse.Namespace, n: int, first_index: int) -> int:
    """Open n connections, hold them, report; returns the exit status."""
    limit = raise_nofile()
    if n + FD_MARGIN > limit:
        emit({"event": "error", "error": f"{n} connections need more than RLIMIT_NOFILE {limit}"})
        return 2
    flags = Flags()
    wake = flags.install()
    ep = select.epoll()
    ep.register(wake.fileno(), select.EPOLLIN)
    socks: dict[int, socket.socket] = {}
    pending: set[int] = set()
    target = (args.host, args.port)
    started = connected = failed = closed = lines = nbytes = 0
    errors: dict[str, int] = {}
    t0 = 0.0
    connect_done = False
    hold_until = 0.0
    status_seen = 0

    def fail(fd: int, err: int) -> None:
        nonlocal failed
        failed += 1
        name = errno.errorcode.get(err, str(err))
        errors[name] = errors.get(name, 0) + 1
        drop(fd)

    def drop(fd: int) -> None:
        s = socks.pop(fd)
        pending.discard(fd)
        ep.unregister(fd)
        s.close()

    def open_one() -> None:
        nonlocal started, connected, failed
        src = source_address(args.src_first, first_index + started, args.per_src)
        started += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((src, 0))
            err = s.connect_ex(target)
        except OSError as e:
            err = e.errno or errno.EIO
        if err not in (0, errno.EINPROGRESS):
            s.close()
            failed += 1
            name = errno.errorcode.get(err, str(err))
            errors[name] = errors.get(name, 0) + 1
            return
        fd = s.fileno()
        socks[fd] = s
        if err == 0:
            established(fd, s)
            ep.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
        else:
            pending.add(fd)
            ep.register(fd, select.EPOLLOUT | select.EPOLLIN | select.EPOLLRDHUP)

    def established(_fd: int, s: socket.socket) -> None:
        nonlocal connected
        connected += 1
        payload = b"" if args.no_ident else PAYLOADS[args.payload]
        if payload:
            try:
                s.send(payload)
            except OSError:
                pass  # seen as a close on the next read

    try:
        while True:
            now = time.monotonic()
            if flags.stop or (connect_done and now >= hold_until):
                break
            timeout = 0.5
            if not connect_done:
                if started < n:
                    if started == 0:
                        t0 = now
                        emit({"event": "start", "t": t0})
                    budget = n - started
                    if args.rate > 0:
                        budget = min(budget, int((now - t0) * args.rate) + 1 - started)
                    budget = min(budget, args.max_pending - len(pending), 512)
                    for _ in range(max(budget, 0)):
                        open_one()
                    timeout = 0.0 if budget > 0 else 0.002
                else:
                    timeout = 0.05
                if started >= n and not pending:
                    connect_done = True
                elif now - t0 >= args.connect_timeout:
                    for fd in list(pending):
                        fail(fd, errno.ETIMEDOUT)
                    failed += n - started  # never even tried
                    if n > started:
                        errors["NOT_STARTED"] = n - started
                    started = n
                    connect_done = True
                if connect_done:
                    emit(
                        {
                            "event": "connected",
                            "t": time.monotonic(),
                            "n": n,
                            "connected": connected,
                            "failed": failed,
                            "open": connected - closed,
                            "complete": connected == n,
                            "errors": errors,
                        }
                    )
                    hold_until = time.monotonic() + args.hold
                    timeout = 0.0
            if flags.status != status_seen:
                status_seen = flags.status
                emit(
                    {
                        "event": "status",
                        "t": time.monotonic(),
                        "open": connected - closed,
                        "closed_by_server": closed,
                        "lines": lines,
                        "bytes": nbytes,
                    }
                )
            for fd, ev in ep.poll(timeout, 1024):
                if fd == wake.fileno():
                    try:
                        wake.recv(64)
                    except BlockingIOError:
                        pass
                    continue
                s = socks.get(fd)
                if s is None:
                    continue
                if fd in pending:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err or not ev & select.EPOLLOUT:
                        fail(fd, err or errno.ECONNRESET)
                        continue
                    pending.discard(fd)
                    established(fd, s)
                    ep.modify(fd, select.EPOLLIN | select.EPOLLRDHUP)
                    continue
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    if ev & (select.EPOLLHUP | select.EPOLLERR):
                        data = b""
                    else:
                        continue
                except OSError:
                    data = b""
                if data:
                    lines += data.count(b"\n")
                    nbytes += len(data)
                else:
                    closed += 1
                    drop(fd)
        emit(
            {
                "event": "final",
                "t": time.monotonic(),
                "n": n,
                "connected": connected,
                "failed": failed,
                "open": connected - closed,
                "closed_by_server": closed,
                "lines": lines,
                "bytes": nbytes,
                "errors": errors,
            }
        )
        return 0
    finally:
        for s in socks.values():
            s.close()
        ep.close()


def supervise(args: argparse.Namespace, procs: int) -> int:
    """Split N over worker processes and merge their reports into the same JSON lines."""
    flags = Flags()
    wake = flags.install()
    sizes = [args.n // procs + (1 if i < args.n % procs else 0) for i in range(procs)]
    children: list[subprocess.Popen] = []
    sel = selectors.DefaultSelector()
    sel.register(wake, selectors.EVENT_READ, None)
    passthrough = [
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--rate",
        str(args.rate / procs),
        "--max-pending",
        str(max(1, args.max_pending // procs)),
        "--per-src",
        str(args.per_src),
        "--src-first",
        args.src_first,
        "--rcvbuf",
        str(args.rcvbuf),
        "--connect-timeout",
        str(args.connect_timeout),
        "--hold",
        str(args.hold),
        "--payload",
        args.payload,
    ] + (["--no-ident"] if args.no_ident else [])
    reports: dict[str, dict[int, dict]] = {"start": {}, "connected": {}, "status": {}, "final": {}}
    status_seen = 0
    deadline = time.monotonic() + args.connect_timeout + args.hold + 60
    try:
        first = 0
        for i, size in enumerate(sizes):
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--worker",
                "--first-index",
                str(first),
                "-n",
                str(size),
                *passthrough,
            ]
            first += size
            child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
            children.append(child)
            sel.register(child.stdout, selectors.EVENT_READ, i)
        live = set(range(procs))
        while live and time.monotonic() < deadline:
            if flags.stop:
                flags.stop = False
                for child in children:
                    if child.poll() is None:
                        child.send_signal(signal.SIGTERM)
            if flags.status != status_seen:
                status_seen = flags.status
                reports["status"] = {}
                for child in children:
                    if child.poll() is None:
                        child.send_signal(signal.SIGUSR1)
            for key, _ in sel.select(0.5):
                if key.data is None:
                    try:
                        wake.recv(64)
                    except BlockingIOError:
                        pass
                    continue
                i = key.data
                line = key.fileobj.readline()
                if not line:
                    sel.unregister(key.fileobj)
                    live.discard(i)
                    continue
                msg = json.loads(line)
                event = msg.get("event")
                if event == "error":
                    emit(msg)
                    continue
                got = reports.setdefault(event, {})
                got[i] = msg
                if event == "start" and len(got) == 1:
                    emit(msg)
                elif event in ("connected", "status", "final") and len(got) == procs:
                    emit(merge(event, list(got.values())))
        return 0 if len(reports["final"]) == procs else 1
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def merge(event: str, parts: list[dict]) -> dict:
    out: dict = {"event": event, "t": max(p["t"] for p in parts), "procs": len(parts)}
    for p in parts:
        for k, v in p.items():
            if k in ("event", "t"):
                continue
            if isinstance(v, bool):
                out[k] = out.get(k, True) and v
            elif isinstance(v, int):
                out[k] = out.get(k, 0) + v
            elif isinstance(v, dict):
                acc = out.setdefault(k, {})
                for ek, ev in v.items():
                    acc[ek] = acc.get(ek, 0) + ev
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="server address (loopback only)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("-n", type=int, required=True, help="connections to hold")
    p.add_argument("--procs", type=int, default=0, help="worker processes (0: as needed)")
    p.add_argument("--rate", type=float, default=50000, help="connects per second (0: unpaced)")
    p.add_argument("--max-pending", type=int, default=4096, help="connects in flight at most")
    p.add_argument("--per-src", type=int, default=10000, help="connections per source address")
    p.add_argument("--src-first", default="127.0.0.2", help="first source address")
    p.add_argument("--rcvbuf", type=int, default=1024, help="SO_RCVBUF per connection")
    p.add_argument("--no-ident", action="store_true", help="send nothing on connect")
    p.add_argument(
        "--payload",
        choices=sorted(PAYLOADS),
        default="ssh",
        help="what each client sends on connect",
    )
    p.add_argument("--connect-timeout", type=float, default=60.0, help="seconds for all connects")
    p.add_argument(
        "--hold",
        type=float,
        default=600.0,
        help="seconds to hold once connected, then report and exit",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--first-index", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        p.error("--host must be a loopback address")
    if args.n < 1 or args.per_src < 1 or args.max_pending < 1:
        p.error("-n, --per-src and --max-pending must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args, args.n, args.first_index)
    limit = raise_nofile() - FD_MARGIN
    procs = args.procs or -(-args.n // limit)
    if -(-args.n // procs) > limit:
        print(
            f"loadgen: {args.n} connections in {procs} processes exceed RLIMIT_NOFILE; "
            f"use --procs {-(-args.n // limit)}",
            file=sys.stderr,
        )
        return 2
    if procs == 1:
        return worker(args, args.n, args.first_index)
    return supervise(args, procs)


if __name__ == "__main__":
    sys.exit(main())
