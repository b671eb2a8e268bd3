"""Real HTTP clients against `tarry serve`: each is held, and we say how long.

For every client and strategy there are two outcomes, and each test asserts
which one it expects:

* held: still waiting, not failed, after many delays (the client process is
  alive and the server's socket shows the drip going out);
* held until its own documented limit: the client gives up with the error that
  its source documents, at about the documented size (the ``headers`` strategy
  run fast, which is what ``auto`` exists to avoid).

``auto`` is also run fast, to show it takes each client past the point where
``headers`` loses it. Every CLOSE line must carry the request line, Host and
User-Agent.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from support import Tarry, need, need_module, start_tarry, wait_until

pytestmark = pytest.mark.realclient

HOLD_DELAY = 0.05  # seconds between units in the "held" tests
HOLD_UNITS = 30  # ... and how many units a client must sit through
FAST_DELAY = 0.001  # the limit tests: reach a client's cap in seconds


def http_config(strategy: str, delay: float, **extra: object) -> str:
    lines = [
        "[[tarpit]]",
        'protocol = "http"',
        'listen = ["127.0.0.1:0"]',
        f"delay = {delay}",
        f'strategy = "{strategy}"',
        "request_timeout = 5.0",
    ]
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in extra.items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the clients


@dataclass(frozen=True)
class ClientSpec:
    name: str
    argv: Callable[[str, str], list[str]]  # the command for a URL and a scratch dir
    ua: str  # a regex for the User-Agent it sends
    cls: str  # the bait's client class for it
    limit: int  # documented cap on one response head, bytes (0: only a line cap)
    failure: str  # a regex for how it reports the cap, on stdout or stderr
    needs: Callable[[], None]


def _py(code: str) -> Callable[[str, str], list[str]]:
    return lambda url, _: [sys.executable, "-c", code, url]


def _chromium(url: str, scratch: str) -> list[str]:
    profile = os.path.join(scratch, "chromium-profile")  # a fresh one per run
    return [
        need("chromium"),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        "--dump-dom",
        url,
    ]


CLIENTS = {
    c.name: c
    for c in (
        ClientSpec(
            "curl",
            lambda url, _: [need("curl"), "-sS", "-o", "/dev/null", url],
            r"curl/[\d.]+",
            "curl",
            300 * 1024,  # MAX_HTTP_RESP_HEADER_SIZE
            r"Too large response headers",
            lambda: need("curl") and None,
        ),
        ClientSpec(
            "wget",
            # one try: by default wget retries a failed head 20 times
            lambda url, _: [need("wget"), "-O", "/dev/null", "--tries=1", url],
            r"Wget/[\d.]+",
            "wget",
            64 * 1024,  # HTTP_RESPONSE_MAX_SIZE
            r"Read error \(.*\) in headers",
            lambda: need("wget") and None,
        ),
        ClientSpec(
            "urllib",
            _py("import sys, urllib.request; urllib.request.urlopen(sys.argv[1]).read()"),
            r"Python-urllib/[\d.]+",
            "python",
            0,  # _MAXHEADERS = 100 lines
            r"got more than 100 headers",
            lambda: None,
        ),
        ClientSpec(
            "requests",
            _py("import sys, requests; requests.get(sys.argv[1])"),
            r"python-requests/[\d.]+",
            "python",
            0,
            r"got more than 100 headers",
            lambda: need_module("requests") and None,
        ),
        ClientSpec(
            "httpx",
            _py("import sys, httpx; httpx.get(sys.argv[1])"),
            r"python-httpx/[\d.]+",
            "httpx",
            100 * 1024,  # httpcore's h11 max_incomplete_event_size
            r"Receive buffer too long",
            lambda: need_module("httpx") and None,
        ),
        ClientSpec(
            "chromium",
            _chromium,
            r"Mozilla/5\.0 .*HeadlessChrome/[\d.]+ .*",
            "browser",
            256 * 1024,  # kMaxHeaderBufSize
            r"net::ERR_RESPONSE_HEADERS_TOO_BIG",
            lambda: need("chromium") and None,
        ),
    )
}


class Run:
    """One client process in its own process group (Chromium forks helpers)."""

    def __init__(self, spec: ClientSpec, url: str, scratch: str) -> None:
        self.out = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the run)
        self.proc = subprocess.Popen(
            spec.argv(url, scratch),
            stdout=self.out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Kill the group we started (helpers may outlive their parent)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def text(self) -> str:
        self.out.seek(0)
        return self.out.read().decode("utf-8", "replace")


@pytest.fixture
def run_client(tmp_path) -> Iterator[Callable[[ClientSpec, str], Run]]:
    runs: list[Run] = []

    def start(spec: ClientSpec, url: str) -> Run:
        run = Run(spec, url, str(tmp_path))
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.stop()
        run.out.close()


_servers: dict[tuple[str, float], Tarry] = {}


@pytest.fixture(scope="module")
def server() -> Iterator[Callable[[str, float], Tarry]]:
    """One tarry per (strategy, delay), shared by the tests of this module."""

    def get(strategy: str, delay: float) -> Tarry:
        key = (strategy, delay)
        if key not in _servers:
            _servers[key] = start_tarry(http_config(strategy, delay))
        return _servers[key]

    yield get
    for t in _servers.values():
        t.stop()
    _servers.clear()


def sent_to_clients(port: int) -> int:
    """Bytes the kernel has seen acked on the server's busiest socket of ``port``."""
    ss = need("ss")
    out = subprocess.run(
        [ss, "-Htni", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return max((int(n) for n in re.findall(r"bytes_acked:(\d+)", out)), default=0)


def close_line(t: Tarry, path: str, timeout: float = 10.0) -> str:
    return t.wait_for(rf" CLOSE .* path={re.escape(path)}( |$)", timeout).string


_UNLINE = {"\\\\": "\\\\", "\\x20": " ", "\\x22": '"', "\\x3d": "="}


def field(line: str, key: str) -> str:
    """The stored (sanitised) value of ``key``: the line's escapes undone."""
    m = re.search(rf" {key}=(\S+)", line)
    assert m, f"no {key}= in {line}"
    return re.sub(r"\\\\|\\x20|\\x22|\\x3d", lambda e: _UNLINE[e[0]], m[1])


def check_close(line: str, spec: ClientSpec, path: str, port: int) -> int:
    """The request line, Host and User-Agent are in the CLOSE line; returns bytes sent."""
    assert field(line, "proto") == "http"
    assert field(line, "method") == "GET"
    assert field(line, "path") == path
    assert field(line, "version") == "HTTP/1.1"
    assert field(line, "host_header") == f"127.0.0.1:{port}"
    assert re.fullmatch(spec.ua, field(line, "user_agent")), field(line, "user_agent")
    assert field(line, "client") == spec.cls
    return int(field(line, "bytes"))


def unique_path(name: str) -> str:
    return f"/{name}-{random.randrange(16**8):08x}/index.html"


# ------------------------------------------------------------------ held


@pytest.mark.parametrize("strategy", ["auto", "body", "continue"])
@pytest.mark.parametrize("name", list(CLIENTS))
def test_client_is_held(name, strategy, server, run_client):
    """Still waiting, not failed, after HOLD_UNITS delays; the drip is going out."""
    spec = CLIENTS[name]
    spec.needs()
    t = server(strategy, HOLD_DELAY)
    port = t.port("http")
    path = unique_path(name)
    run = run_client(spec, f"http://127.0.0.1:{port}{path}")
    # the client connected and the drip started
    first = wait_until(lambda: sent_to_clients(port), 15, f"{name} to be answered")
    started = time.monotonic()
    while time.monotonic() - started < HOLD_UNITS * HOLD_DELAY:
        assert run.alive(), f"{name} gave up under {strategy}: {run.text()[-500:]}"
        time.sleep(0.05)
    assert run.alive(), f"{name} gave up under {strategy}: {run.text()[-500:]}"
    grown = sent_to_clients(port)
    assert grown > first, "no units went out while the client waited"
    run.stop()
    sent = check_close(close_line(t, path), CLIENTS[name], path, port)
    assert sent >= grown


# ------------------------------------------------------------------ held until the limit


@pytest.mark.parametrize("name", list(CLIENTS))
def test_endless_headers_hold_a_client_until_its_documented_limit(name, server, run_client):
    spec = CLIENTS[name]
    spec.needs()
    t = server("headers", FAST_DELAY)
    port = t.port("http")
    path = unique_path(name)
    run = run_client(spec, f"http://127.0.0.1:{port}{path}")
    sent = check_close(close_line(t, path, timeout=60), spec, path, port)
    if name == "chromium":  # it shows an error page, and stays up with --dump-dom
        wait_until(lambda: re.search(spec.failure, run.text()), 10, "Chromium's error")
    else:
        run.proc.wait(10)
        assert run.proc.returncode != 0
    assert re.search(spec.failure, run.text()), run.text()[-500:]
    if spec.limit:
        # what was sent when it gave up: its cap, plus what was in flight
        assert 0.95 * spec.limit < sent < 1.25 * spec.limit
    else:
        assert sent < 100 * 240  # 100 lines, however long


# ------------------------------------------------------------------ auto outlasts the limit


@pytest.mark.parametrize("name", list(CLIENTS))
def test_auto_takes_each_client_past_its_limit(name, server, run_client):
    """Run fast, ``auto`` sends more than the client's head cap and it is still there:
    the head stopped under the cap and the endless body took over."""
    spec = CLIENTS[name]
    spec.needs()
    t = server("auto", FAST_DELAY)
    port = t.port("http")
    path = unique_path(name)
    run = run_client(spec, f"http://127.0.0.1:{port}{path}")
    target = int(1.2 * spec.limit) if spec.limit else 40 * 1024
    deadline = time.monotonic() + 90
    while sent_to_clients(port) < target:
        assert run.alive(), f"{name} gave up under auto: {run.text()[-500:]}"
        assert time.monotonic() < deadline, f"{name}: auto too slow to pass {target} bytes"
        time.sleep(0.1)
    time.sleep(0.3)
    assert run.alive(), f"{name} gave up under auto: {run.text()[-500:]}"
    run.stop()
    assert check_close(close_line(t, path), spec, path, port) > target


# ------------------------------------------------------------------ hostile peers


def _hostile_payloads() -> list[bytes]:
    rnd = random.Random(3)
    return [
        bytes(rnd.randrange(256) for _ in range(50_000)),  # random bytes
        b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (10 << 20),  # a 10 MB header line
        b"GET /cr HTTP/1.1\rHost: x\rUser-Agent: cr-only\r" * 2000,  # CR-only line ends
        b"GET /nul HTTP/1.1\r\nHost: \x00\x00\x00\r\n\r\n" + b"\x00" * 100_000,  # NUL bytes
        b"\r\n" * 200_000,  # empty lines forever
        b"".join(b"X-%d: y\r\n" % i for i in range(50_000)),  # endless header lines
    ]


def test_hostile_input_neither_crashes_nor_grows_the_server():
    t = start_tarry(http_config("auto", 0.2))
    try:
        port = t.port("http")
        payloads = _hostile_payloads()

        def blast(round_: int) -> list[socket.socket]:
            socks = []
            for data in payloads:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                try:
                    s.sendall(data)
                except OSError:
                    pass  # the server may stop reading: that is fine
                socks.append(s)
            return socks

        held = blast(0)  # warm up allocator and interners
        wait_until(lambda: t.count(r" ACCEPT ") >= len(payloads), 10, "accepts")
        base = t.rss_kb()
        for round_ in range(1, 6):
            held += blast(round_)
        wait_until(lambda: t.count(r" ACCEPT ") >= 6 * len(payloads), 10, "accepts")
        time.sleep(0.5)
        grown = t.rss_kb() - base
        # 30 more clients, having thrown about 60 MB at it: a few KiB each at most
        assert grown < 4096, f"RSS grew by {grown} KiB"
        # still serving: a real request is answered
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"GET /ok HTTP/1.1\r\nHost: h\r\nUser-Agent: curl/8\r\n\r\n")
        assert c.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")
        for s in [*held, c]:
            s.close()
        # unread data makes the kernel reset rather than close: either is fine
        assert re.search(r" reason=(closed|reset) ", t.wait_for(r" CLOSE .* path=/ok ").string)
        wait_until(lambda: t.count(r" CLOSE ") >= 6 * len(payloads) + 1, 10, "every close")
        # what could be read was noted; the 10 MB line was read and dropped
        assert t.count(r" CLOSE .* path=/cr .*user_agent=cr-only ") == 6
        assert t.count(r" CLOSE .* path=/nul ") == 6
        assert t.count(r" CLOSE .* received=1048\d{4} .*path=/ ") == 6
        assert t.proc.poll() is None
        assert not any("failed" in e for e in t.err), t.err[-5:]
        assert t.count(r" reason=error") == 0
    finally:
        t.stop()
