"""The HTTP bait driven directly, without sockets: parsing, bounds, and that
every strategy's bytes are HTTP/1.1 that real parsers (h11, http.client) accept
and that ``auto`` stays under each client's documented limits."""

from __future__ import annotations

import http.client
import io
import random
import re

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tarry.bait import STATE_MAX, Step, TarpitSpec
from tarry.baits import http as H
from tarry.baits import registry
from tarry.config import ConfigError, check_value

NOW = 1_763_712_000.0  # a fixed clock: 2025-11-21

CURL_UA = b"curl/8.5.0"
WGET_UA = b"Wget/1.21.3"
CHROME_UA = (
    b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/131.0.0.0 Safari/537.36"
)
URLLIB_UA = b"Python-urllib/3.11"
REQUESTS_UA = b"python-requests/2.32.3"
HTTPX_UA = b"python-httpx/0.28.1"
GO_UA = b"Go-http-client/1.1"


def make_bait(seed: int = 1, delay: float = 5.0, jitter: float = 0.0, **options) -> H.HttpBait:
    opts = {k: o.default for k, o in H.OPTIONS.items()}
    opts.update(options)
    for key, value in opts.items():
        check_value("", key, value, H.OPTIONS[key])
    spec = TarpitSpec("http", ["127.0.0.1:0"], delay, 100, jitter, opts)
    return H.HttpBait(spec, rand=random.Random(seed), clock=lambda: NOW)


def request(
    ua: bytes | None = CURL_UA,
    method: bytes = b"GET",
    path: bytes = b"/",
    version: bytes = b"HTTP/1.1",
    host: bytes = b"example.test",
) -> bytes:
    head = method + b" " + path + b" " + version + b"\r\nHost: " + host + b"\r\n"
    if ua is not None:
        head += b"User-Agent: " + ua + b"\r\n"
    return head + b"Accept: */*\r\n\r\n"


class Client:
    """Plays the engine for one connection: keeps state and obj, collects output."""

    def __init__(self, bait: H.HttpBait) -> None:
        self.bait = bait
        first = bait.open("127.0.0.1")
        self.state, self.obj = first.state, first.obj
        self.steps: list[Step] = [first]
        self.out = bytearray()
        self.notes: dict[str, str] = {}

    def _take(self, step: Step) -> Step:
        assert 0 <= step.state <= STATE_MAX
        assert isinstance(step.out, bytes)
        self.state, self.obj = step.state, step.obj
        self.steps.append(step)
        self.out += step.out
        self.notes.update(step.notes or ())
        return step

    def feed(self, data: bytes, age: float = 0.01) -> Step:
        return self._take(self.bait.feed(self.state, self.obj, data, age))

    def tick(self, age: float = 1.0) -> Step:
        return self._take(self.bait.tick(self.state, self.obj, age))

    @property
    def phase(self) -> int:
        return self.state & 0x3

    def ticks(self, n: int) -> None:
        for _ in range(n):
            self.tick()

    def until_phase(self, phase: int, limit: int = 200_000) -> int:
        for n in range(limit):
            if self.phase == phase:
                return n
            self.tick()
        raise AssertionError(f"phase {phase} not reached in {limit} ticks")


def h11_events(data: bytes, max_size: int = 16 * 1024):
    """Feed a server's bytes to h11 as the client of a GET; return its events."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_size)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "example.test")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    events = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            return events
        events.append(event)


class FakeSocket:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.data)


def stdlib_response(data: bytes, method: str = "GET") -> http.client.HTTPResponse:
    """What Python's http.client (urllib, requests) makes of these bytes."""
    resp = http.client.HTTPResponse(FakeSocket(data), method=method)  # type: ignore[arg-type]
    resp.begin()
    return resp


def head_of(out: bytes) -> bytes:
    """The final response's head: status line through the blank line."""
    start = out.index(b"HTTP/1.1 200 ")
    return out[start : out.index(b"\r\n\r\n", start) + 4]


# ------------------------------------------------------------------ module shape


def test_registered_and_options_valid():
    assert registry()["http"] is H.BAIT
    assert H.PROTOCOL == "http" and H.DEFAULTS == {"delay": 5.0}
    for key, opt in H.OPTIONS.items():
        assert opt.check is None or opt.check(opt.default) is None, key
    assert isinstance(
        H.make(TarpitSpec("http", [], 5.0, 10, 0.0, {k: o.default for k, o in H.OPTIONS.items()})),
        H.HttpBait,
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("strategy", "slow"),
        ("server", "lighttpd"),
        ("status", 204),
        ("status", 299),
        ("status", 100),
        ("status", True),
        ("request_timeout", 0),
        ("chunk_size", 10),
        ("headers", ["Content-Length: 5"]),
        ("headers", ["Transfer-Encoding: chunked"]),
        ("headers", ["Bad Name: x"]),
        ("headers", ["X-Ok: line\r\nInjected: yes"]),
        ("headers", ["no colon"]),
        ("headers", [42]),
    ],
)
def test_bad_options_rejected(key, value):
    with pytest.raises(ConfigError, match=key):
        check_value("", key, value, H.OPTIONS[key])


def test_state_word_round_trip():
    for phase in range(4):
        for client in range(H.STREAM_CLASSES):  # the classes the state word holds
            for flags in (0, H.RAW, H.NOBODY | H.STYLE, H.RAW | H.NOBODY | H.STYLE):
                for count in (0, 1, 12345, H.COUNT_MAX, H.COUNT_MAX + 99):
                    state = H.pack(phase, client, flags, count)
                    assert 0 <= state <= STATE_MAX
                    assert H.unpack(state) == (phase, client, flags, min(count, H.COUNT_MAX))


def test_every_plan_fits_the_counter():
    for client, plan in zip(H.CLIENTS, (H.Plan.of(c) for c in H.CLIENTS), strict=True):
        assert 0 < plan.budget <= H.COUNT_MAX, client.name


# ------------------------------------------------------------------ request head


def test_notes_from_a_full_request():
    c = Client(make_bait())
    step = c.feed(request(CHROME_UA, path=b"/wp-login.php?redirect_to=%2F", host=b"shop.test"))
    assert step.obj is None and step.out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert c.notes == {
        "method": "GET",
        "path": "/wp-login.php?redirect_to=%2F",
        "version": "HTTP/1.1",
        "host_header": "shop.test",
        "user_agent": CHROME_UA.decode(),
        "client": "browser",
    }


def test_head_split_into_single_bytes():
    c = Client(make_bait())
    data = request(CURL_UA, method=b"POST", path=b"/api")
    for i in range(len(data) - 1):
        step = c.feed(data[i : i + 1])
        assert step.out == b"" and isinstance(c.obj, bytearray) and len(c.obj) == i + 1
    step = c.feed(data[-1:])
    assert step.out and step.obj is None
    assert c.notes["method"] == "POST" and c.notes["client"] == "curl"


@pytest.mark.parametrize("eol", [b"\r\n", b"\n", b"\r"])
def test_line_ends(eol):
    c = Client(make_bait())
    c.feed(
        eol
        + eol
        + b"GET /x HTTP/1.1"
        + eol
        + b"Host: h"
        + eol
        + b"User-Agent: Wget/1.21"
        + eol
        + eol
    )
    assert c.phase != H.READ
    assert c.notes["path"] == "/x" and c.notes["host_header"] == "h" and c.notes["client"] == "wget"


def test_user_agent_is_sanitised_and_truncated():
    ua = b"Mozilla/5.0 \xff\xfe\\evil" + b"A" * 5000
    c = Client(make_bait())
    c.feed(b"GET / HTTP/1.1\r\nHost: a\tb\r\nUser-Agent: " + ua + b"\r\n\r\n")
    note = c.notes["user_agent"]
    assert note.startswith("Mozilla/5.0 \\xff\\xfe\\\\evil")
    assert len(note) <= 256 and note.isprintable() and note.isascii()
    assert c.notes["host_header"] == "a\\x09b"


def test_first_header_wins_and_header_names_are_case_insensitive():
    c = Client(make_bait())
    c.feed(b"GET / HTTP/1.1\r\nhOsT: first\r\nHost: second\r\nUSER-AGENT: curl/1\r\n\r\n")
    assert c.notes["host_header"] == "first" and c.notes["client"] == "curl"


def test_not_http_is_noted_as_request():
    c = Client(make_bait())
    c.feed(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n\r\n")
    assert "method" not in c.notes
    assert c.notes["request"] == "SSH-2.0-OpenSSH_9.2p1 Debian"


def test_binary_junk_gives_up_at_once():
    c = Client(make_bait())
    step = c.feed(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)))
    assert step.obj is None and step.out.startswith(b"HTTP/1.1 200 OK")
    assert c.notes == {}


def test_nul_byte_mid_head_keeps_what_came_before():
    c = Client(make_bait())
    c.feed(b"GET /a HTTP/1.1\r\nUser-Agent: curl/8\r\nX: \x00\x00\r\n\r\n")
    assert c.phase != H.READ and c.obj is None
    assert c.notes["path"] == "/a" and c.notes["client"] == "curl"


def test_ten_megabyte_header_line_is_bounded():
    c = Client(make_bait())
    c.feed(b"GET /big HTTP/1.1\r\nX-Big: ")
    chunk = b"a" * 65536
    sizes = []
    for _ in range(160):  # 10 MiB
        step = c.feed(chunk)
        sizes.append(0 if c.obj is None else len(c.obj))
        if c.phase != H.READ:
            assert step.obj is None
    assert max(sizes) < H.HEAD_MAX
    assert c.phase != H.READ and c.notes["path"] == "/big"
    assert c.out.startswith(b"HTTP/1.1 200 OK")
    # after that, input is dropped: no output, no object, no new timer
    assert c.feed(chunk) == Step(c.state)


def test_nothing_past_8_kib_is_read():
    c = Client(make_bait())
    c.feed(b"GET /long HTTP/1.1\r\nX-Pad: " + b"a" * 9000 + b"\r\nUser-Agent: curl/8\r\n\r\n")
    assert c.phase != H.READ and c.notes["path"] == "/long"
    assert "user_agent" not in c.notes


def test_nothing_past_the_blank_line_is_parsed():
    c = Client(make_bait())
    c.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nUser-Agent: curl/8\r\n\x00")
    assert c.notes["host_header"] == "a" and "user_agent" not in c.notes


def test_more_than_100_header_lines_is_bounded():
    c = Client(make_bait())
    c.feed(b"GET / HTTP/1.1\r\n")
    for i in range(H.HEAD_LINES_MAX):
        c.feed(b"X-%d: y\r\n" % i)
        assert c.phase == H.READ
    c.feed(b"X-101: y\r\n")
    assert c.phase != H.READ and c.obj is None


def test_exactly_100_header_lines_is_a_request():
    c = Client(make_bait())
    lines = b"".join(b"X-%d: y\r\n" % i for i in range(H.HEAD_LINES_MAX - 1))
    c.feed(b"GET / HTTP/1.1\r\n" + lines + b"User-Agent: curl/8\r\n\r\n")
    assert c.notes["client"] == "curl"


def test_silent_client_gets_the_drip_after_request_timeout():
    c = Client(make_bait(request_timeout=7.5))
    assert c.steps[0].delay == 7.5 and c.steps[0].out == b""
    step = c.tick(7.5)
    # a silent client may be a tool with a 5 s read timeout: inside it
    assert step.out.startswith(b"HTTP/1.1 200 OK") and step.delay == 4.0
    assert c.notes == {} and c.obj is None


def test_half_sent_head_is_answered_at_the_timeout_with_what_came():
    c = Client(make_bait())
    c.feed(b"GET /half HTTP/1.1\r\nUser-Agent: python-requests/2.3")
    assert c.steps[-1].delay is None  # the request_timeout timer stays pending
    c.tick(10.0)
    # the unfinished last line counts too: it may be all the client ever sends
    assert c.notes["path"] == "/half" and c.notes["user_agent"] == "python-requests/2.3"
    assert c.obj is None


def test_late_bytes_count_as_timeout():
    c = Client(make_bait(request_timeout=3))
    c.feed(b"GET /late HTTP/1.1\r\n", age=3.2)
    assert c.phase != H.READ and c.notes["path"] == "/late"


def test_after_the_head_input_is_dropped_without_buffering():
    c = Client(make_bait())
    c.feed(request(CURL_UA) + b"GET /pipelined HTTP/1.1\r\n\r\n" + b"x" * 1000)
    assert c.notes["path"] == "/"
    for _ in range(50):
        assert c.feed(b"y" * 4096) == Step(c.state)


# ------------------------------------------------------------------ strategies


def test_headers_strategy_is_http_that_never_ends():
    c = Client(make_bait(strategy="headers"))
    c.feed(request(CHROME_UA))
    c.ticks(3000)
    out = bytes(c.out)
    assert b"\r\n\r\n" not in out
    assert h11_events(out, max_size=10**8) == []  # valid so far: h11 just wants more
    # finish the head ourselves: h11 then accepts every line as a header field
    events = h11_events(out + b"\r\n0\r\n\r\n", max_size=10**8)
    response = events[0]
    assert isinstance(response, h11.Response) and response.status_code == 200
    assert len(response.headers) == 3000 + 6
    assert isinstance(events[-1], h11.EndOfMessage)
    assert all(s.delay == 4.0 for s in c.steps[2:])  # inside a browser-named tool's 5 s


def test_header_lines_look_real():
    bait = make_bait(seed=7)
    lines = [bait.lines.line() for _ in range(5000)]
    names = [line.split(b":", 1)[0].lower() for line in lines]
    forbidden = {
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"location",
        b"content-encoding",
        b"content-type",
        b"upgrade",
        b"alt-svc",
        b"refresh",
    }
    assert not forbidden & set(names)
    assert all(
        re.fullmatch(rb"[A-Za-z0-9-]+: [\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?\r\n", ln)
        for ln in lines
    )
    assert all(len(ln) <= H.HeaderSource.LINE_MAX for ln in lines)
    share = names.count(b"set-cookie") / len(names)
    assert 0.3 < share < 0.55
    assert names.count(b"link") > 400
    assert len(set(names)) > 30
    assert len(set(lines)) > 400  # not one line repeated
    # not the obvious endless-headers signature: X-<hex>: <hex>
    assert not any(re.fullmatch(rb"X-[0-9a-f]+: [0-9a-f]+\r\n", ln) for ln in lines)


def test_body_strategy_is_chunked_html_without_end():
    c = Client(make_bait(strategy="body", chunk_size=120))
    step = c.feed(request(CURL_UA))
    assert step.out.endswith(
        b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\nVary: Accept-Encoding\r\n\r\n"
    )
    c.ticks(500)
    events = h11_events(bytes(c.out))
    assert isinstance(events[0], h11.Response)
    assert dict(events[0].headers)[b"transfer-encoding"] == b"chunked"
    data = [e.data for e in events[1:]]
    assert all(isinstance(e, h11.Data) for e in events[1:])  # no EndOfMessage, ever
    assert len(data) == 500 and all(0 < len(d) <= 120 for d in data)
    body = b"".join(data)
    assert body.startswith(b"<!DOCTYPE html>\n<html")
    assert body.count(b"<p>") > 100
    # http.client reads the same chunks
    resp = stdlib_response(bytes(c.out))
    assert resp.status == 200 and resp.chunked
    assert resp.read(len(body)) == body


def test_continue_strategy_is_endless_interim_responses():
    c = Client(make_bait(strategy="continue"))
    c.feed(request(URLLIB_UA))
    c.ticks(999)
    assert bytes(c.out) == H.CONTINUE_UNIT * 1000
    events = h11_events(bytes(c.out))
    assert len(events) == 1000
    assert all(isinstance(e, h11.InformationalResponse) and e.status_code == 100 for e in events)
    # http.client skips them all and takes the final response that never comes
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert stdlib_response(bytes(c.out) + final).read() == b"ok"


def test_http10_client_gets_no_chunking_and_no_interim():
    c = Client(make_bait(strategy="continue"))
    c.feed(request(CURL_UA, version=b"HTTP/1.0"))
    assert c.out.startswith(b"HTTP/1.1 200 OK")  # headers instead of 1xx
    c = Client(make_bait(strategy="body"))
    c.feed(request(CURL_UA, version=b"HTTP/1.0"))
    c.ticks(20)
    assert b"Transfer-Encoding" not in c.out and b"Connection: close" in c.out
    _, _, body = bytes(c.out).partition(b"\r\n\r\n")
    assert body.startswith(b"<!DOCTYPE html>") and b"\r\n" not in body


@pytest.mark.parametrize("server", H.SERVERS)
def test_server_profiles_parse(server):
    c = Client(make_bait(strategy="body", server=server))
    c.feed(request(CURL_UA))
    c.ticks(10)
    events = h11_events(bytes(c.out))
    headers = dict(events[0].headers)
    assert headers[b"date"] == b"Fri, 21 Nov 2025 08:00:00 GMT"
    assert {
        b"nginx": b"nginx",
        b"apache": b"Apache/2.4.62 (Debian)",
        b"iis": b"Microsoft-IIS/10.0",
    }[server.encode()] == headers[b"server"]
    assert len(events) == 11


def test_exact_header_set_override():
    c = Client(
        make_bait(
            strategy="body", status=404, headers=["Server: Caddy", "Date: {date}", "X-Trap:  yes "]
        )
    )
    c.feed(request(CURL_UA))
    head = bytes(c.out)
    assert head == (
        b"HTTP/1.1 404 Not Found\r\nServer: Caddy\r\n"
        b"Date: Fri, 21 Nov 2025 08:00:00 GMT\r\nX-Trap: yes\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )


def test_stylesheet_is_text_css():
    c = Client(make_bait(strategy="body"))
    c.feed(request(CHROME_UA, path=b"/assets/css/app.83f7548e.css?v=2"))
    c.ticks(5)
    events = h11_events(bytes(c.out))
    assert dict(events[0].headers)[b"content-type"] == b"text/css"
    assert all(
        re.fullmatch(rb"[.][a-z0-9-]+( [a-z:0-9]+)?\{[a-z-]+:[^{}]+\}\n", e.data)
        for e in events[1:]
    )


DIRSEARCH_UA = (
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/87.0.4280.88 Safari/537.36"
)


def test_jitter_and_client_timeouts():
    bait = make_bait(delay=10.0, jitter=0.5)
    c = Client(bait)
    c.feed(request(CURL_UA))
    c.ticks(300)
    delays = [s.delay for s in c.steps[2:]]
    assert all(5.0 <= d <= 15.0 for d in delays) and len(set(delays)) > 100
    # httpx times out after 5 s without data: keep its delay under that
    c = Client(make_bait(delay=10.0, jitter=0.5))
    c.feed(request(HTTPX_UA))
    c.ticks(200)
    assert max(s.delay for s in c.steps[2:]) == 4.0
    # dirsearch reads with requests' timeout=5 under a browser's name, and
    # unnamed clients may be tools as well: they too hear from us inside 5 s
    for ua in (DIRSEARCH_UA, None, REQUESTS_UA, GO_UA):
        c = Client(make_bait(delay=5.0))
        c.feed(request(ua))
        c.ticks(50)
        assert max(s.delay for s in c.steps[1:]) == 4.0, ua
    c = Client(make_bait(delay=10.0, client_timeouts=False))
    c.feed(request(HTTPX_UA))
    c.ticks(5)
    assert {s.delay for s in c.steps[2:]} == {10.0}


# ------------------------------------------------------------------ auto, per client


def run_auto(ua: bytes, method: bytes = b"GET") -> tuple[Client, int, int]:
    """Drive auto into its body phase; (client, interim count, head ticks)."""
    c = Client(make_bait(strategy="auto"))
    c.feed(request(ua, method=method))
    c.until_phase(H.HEADERS)
    head_ticks = c.until_phase(H.BODY)
    return c, c.out.count(H.CONTINUE_UNIT), head_ticks


@pytest.mark.parametrize(
    ("ua", "name"),
    [
        (CURL_UA, "curl"),
        (WGET_UA, "wget"),
        (CHROME_UA, "browser"),
        (b"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", "browser"),
        (URLLIB_UA, "python"),
        (REQUESTS_UA, "python"),
        (HTTPX_UA, "httpx"),
        (GO_UA, "go"),
        (b"Mozilla/5.0 zgrab/0.x", "go"),
        (b"masscan/1.3", "unknown"),
    ],
)
def test_auto_stays_under_the_documented_limits(ua, name):
    c, interim, _ = run_auto(ua)
    assert c.notes["client"] == name
    limits = next(x for x in H.CLIENTS if x.name == name)
    out = bytes(c.out)
    head = head_of(out)
    lines = head.count(b"\r\n") - 1  # header lines plus the blank line
    assert interim == limits.interim
    assert out.count(H.CONTINUE_UNIT) == limits.interim
    assert len(head) + interim * len(H.CONTINUE_UNIT) < limits.head_bytes
    if limits.head_lines:
        assert lines < limits.head_lines
    # ... and uses most of it: it did move on, but not too early
    assert len(head) > 0.8 * limits.head_bytes or lines > 0.8 * limits.head_lines
    # the body follows the head
    c.ticks(10)
    assert bytes(c.out).endswith(b"\r\n") and b"<!DOCTYPE html>" in c.out


def test_auto_output_passes_the_real_python_parsers():
    # http.client (urllib, requests): 100 header lines at most
    c, _, _ = run_auto(REQUESTS_UA)
    c.ticks(20)
    resp = stdlib_response(bytes(c.out))
    assert resp.status == 200 and 80 < len(resp.headers) < 100
    assert resp.read(15) == b"<!DOCTYPE html>"
    # httpx: h11 with httpcore's 100 KiB max_incomplete_event_size
    c, _, _ = run_auto(HTTPX_UA)
    c.ticks(20)
    events = h11_events(bytes(c.out), max_size=100 * 1024)
    assert [type(e) for e in events[:91]] == [h11.InformationalResponse] * 90 + [h11.Response]
    assert all(isinstance(e, h11.Data) for e in events[91:]) and len(events) > 100


def test_the_parsers_do_reject_heads_past_those_limits():
    """Control for the test above: the same parsers fail on the `headers` strategy."""
    c = Client(make_bait(strategy="headers"))
    c.feed(request(REQUESTS_UA))
    c.ticks(100)
    with pytest.raises(http.client.HTTPException, match="more than 100 headers"):
        stdlib_response(bytes(c.out) + b"\r\n")
    c = Client(make_bait(strategy="headers"))
    c.feed(request(HTTPX_UA))
    c.ticks(1500)
    with pytest.raises(h11.RemoteProtocolError):
        h11_events(bytes(c.out), max_size=100 * 1024)


def test_auto_never_ends_a_head_response():
    c, _, _ = run_auto(CURL_UA, method=b"HEAD")
    last = c.steps[-1]
    assert last.out == b"" and last.delay is None  # held in silence, no timer
    assert b"\r\n\r\n" not in c.out
    assert c.tick() == Step(c.state)


def test_body_strategy_on_head_request_sends_headers_instead():
    c = Client(make_bait(strategy="body"))
    c.feed(request(CURL_UA, method=b"HEAD"))
    c.ticks(50)
    assert b"\r\n\r\n" not in c.out and c.out.count(b"\r\n") > 50


# ------------------------------------------------------------------ hostile input, property


chunks = st.lists(st.binary(max_size=3000), max_size=40)
http_ish = st.lists(
    st.sampled_from(
        [
            b"GET / HTTP/1.1",
            b"\r\n",
            b"\n",
            b"\r",
            b"Host: x",
            b"User-Agent: curl/1",
            b"User-Agent: python-httpx/1",
            b"\x00",
            b": ",
            b"HEAD",
            b" ",
            b"a" * 500,
            b"HTTP/1.0",
            b"\xff\xfe",
            b"/x.css",
        ]
    ),
    max_size=60,
).map(b"".join)


def drive_hostile(bait: H.HttpBait, pieces: list[bytes], tick_every: int) -> Client:
    c = Client(bait)
    age = 0.0
    for i, piece in enumerate(pieces):
        age += 0.3
        c.feed(piece, age)
        if c.phase == H.READ:
            assert c.obj is None or (isinstance(c.obj, bytearray) and len(c.obj) <= H.HEAD_MAX)
        else:
            assert c.obj is None
        if tick_every and i % tick_every == 0 and c.phase != H.READ:
            c.tick(age)
            assert c.obj is None
    c.ticks(5)
    assert c.obj is None and c.phase != H.READ
    return c


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=chunks, tick_every=st.integers(0, 5), strategy=st.sampled_from(H.STRATEGIES))
def test_arbitrary_bytes_never_raise(pieces, tick_every, strategy):
    drive_hostile(make_bait(strategy=strategy), pieces, tick_every)


@settings(max_examples=300, deadline=None)
@given(
    data=http_ish,
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    strategy=st.sampled_from(H.STRATEGIES),
)
def test_http_like_bytes_split_anywhere(data, cuts, strategy):
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    c = drive_hostile(make_bait(strategy=strategy), pieces, 1)
    # the same bytes in one piece give the same notes
    whole = Client(make_bait(strategy=strategy))
    whole.feed(data, 0.3)
    if whole.phase != H.READ and len(pieces) * 0.3 < 10:
        assert whole.notes == c.notes


def test_a_held_client_carries_on_under_a_new_strategy():
    """The strategy is not in STATEFUL_OPTIONS: on reload the new bait reads the old state words."""
    assert "strategy" not in H.STATEFUL_OPTIONS
    c = Client(make_bait(strategy="headers"))
    c.feed(request(CHROME_UA))
    c.ticks(4000)  # past Chromium's 256 KiB
    assert len(c.out) > 256 * 1024
    c.bait = make_bait(strategy="auto")
    step = c.tick()
    assert step.out.startswith(b"\r\n3f\r\n<!DOCTYPE html>") and c.phase == H.BODY
    c.bait = make_bait(strategy="continue")
    assert c.tick().out.startswith(b"45\r\n<meta")  # the body goes on
