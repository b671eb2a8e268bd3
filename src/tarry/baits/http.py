"""The HTTP bait: read a bounded request head, then answer so slowly that the
response never ends.

Strategies (``strategy`` key; docs/http.md has the table and the client limits):

``headers``   a believable status line and headers, then one more header line
              every delay, forever (the endlessh idea, with realistic fields).
``body``      a complete head with ``Transfer-Encoding: chunked``, then one small
              chunk of plausible HTML every delay; the last chunk never comes.
``continue``  one ``HTTP/1.1 100 Continue`` interim response every delay.
``auto``      per client, from its User-Agent: interim responses and header
              lines while they stay under that client's documented limits,
              then the endless body.

Notes for the CLOSE line: method, path, version (or ``request`` for a first
line that is not HTTP), host_header (the Host header: ``host`` is the peer's
address in endlessh's log line, and no key may end in ``host``, or a greedy
``^.*host=<HOST>`` filter would read the peer's Host header as the address to
ban), user_agent, and client (the class ``auto`` chose by).

Per client, while the request head is being read, ``obj`` holds a bytearray of
at most ``HEAD_MAX`` bytes. From the first response byte on, ``obj`` is None
and everything lives in the 32-bit state word:

    bits 0-1   phase: READ, CONTINUE, HEADERS, BODY
    bits 2-4   client class (index into CLIENTS), from the User-Agent
    bit  5     RAW: HTTP/1.0 (or 0.9) peer: no chunked framing, no 1xx
    bit  6     NOBODY: a HEAD request, so the head must never end
    bit  7     STYLE: the path names a stylesheet, answered as text/css (a
               browser drops a stylesheet served as text/html)
    bits 8-31  counter: 1xx responses sent (CONTINUE), head bytes charged
               against the client's budget (HEADERS), chunks sent (BODY);
               in READ, LATE: a head is read and a late answer is due

Late answers (``auto``): a tool that caps each request by a total deadline (a
directory buster's timeout) is held longest by a cheap, complete 404 sent
just inside that deadline, so that it goes on to its next word instead of
quitting. The deadline is the tool family's (``Client.deadline``) or what the
same software from the same address taught (``tarry.deadlines``). Only such a
client's ``obj`` outlives its head: the address, to look its next request up.

Input after the head (or after giving up on it) is dropped without buffering.
"""

from __future__ import annotations

import math
import os
import random
import re
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from ..bait import (
    BaitBase,
    BaitModule,
    Bounds,
    Option,
    Step,
    TarpitSpec,
    jittered,
    positive_min,
    sanitise,
)
from ..deadlines import SHARE, DeadlineStore, software_key
from ..events import Event, Sink
from ..tls import STATEFUL_TLS, TLS_OPTIONS, check_tls

PROTOCOL = "http"
DEFAULTS = {"delay": 5.0}
# Options whose change on reload would misread held clients' state words:
# none. The phase decides what comes next, and every strategy keeps the
# counters, so a held client carries on under a new strategy.
STATEFUL_OPTIONS: tuple[str, ...] = STATEFUL_TLS  # TLS or not is decided per connection

HEAD_MAX = 8192  # bytes of request head kept
HEAD_LINES_MAX = 100  # header lines after the request line

READ, CONTINUE, HEADERS, BODY = 0, 1, 2, 3
_PHASE = 0x3
_CLIENT_SHIFT = 2
_CLIENT = 0x7 << _CLIENT_SHIFT
RAW = 1 << 5
NOBODY = 1 << 6
STYLE = 1 << 7
_FLAGS = RAW | NOBODY | STYLE
_COUNT_SHIFT = 8
COUNT_MAX = (1 << 24) - 1

STRATEGIES = ("auto", "headers", "body", "continue")
SERVERS = ("nginx", "apache", "iis")

CONTINUE_UNIT = b"HTTP/1.1 100 Continue\r\n\r\n"
LATE = 1  # READ's counter: a head is read and its late answer is due

_NOT_FOUND_BODY = (
    b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    b"<center><h1>404 Not Found</h1></center>\r\n<hr><center>{server}</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_SERVER_NAMES = {"nginx": "nginx", "apache": "Apache/2.4.62 (Debian)", "iis": "Microsoft-IIS/10.0"}


class Reading:
    """A request head in progress from an address that taught us a deadline
    (rare), with the address, to look its software's deadline up."""

    __slots__ = ("buf", "peer")

    def __init__(self, peer: str) -> None:
        self.buf = bytearray()
        self.peer = peer


@dataclass(frozen=True)
class Client:
    """What is documented about one family of HTTP clients (docs/http.md).

    ``head_bytes`` and ``head_lines`` bound one response head (0: no such
    limit); ``interim`` is how many 1xx responses ``auto`` sends before the
    head; ``read_timeout`` is the longest wait between reads it is known to
    bear: its own default, or, for names that tools wear (a browser's, a
    library's, none), ``TOOL_READ_TIMEOUT``;
    ``deadline`` is a total deadline per request of a tool that makes many
    requests (a buster, a fuzzer, a brute-forcer): ``auto`` answers it with a
    complete 404 at ``SHARE`` of it, so that it goes on to its next request.
    """

    name: str
    head_bytes: int
    head_lines: int
    interim: int
    read_timeout: float = 0.0
    deadline: float = 0.0


# The shortest idle timeout between reads among the HTTP attack tools surveyed
# in docs/client-limits.md: dirsearch (requests, timeout=5) sends a browser's
# User-Agent, and httpx defaults to 5 s. A line every 5 s races such a tool,
# so clients that may be one hear from us inside it (``TIMEOUT_SHARE``).
TOOL_READ_TIMEOUT = 5.0

# Index = client class in the state word (3 bits, so at most 8).
CLIENTS: tuple[Client, ...] = (
    # Anything unrecognised: the smallest caps below (wget's 64 KiB head, the
    # 100 header lines of Python's http.client), and no 1xx, which a client
    # that does not implement them would take for the final response.
    Client("unknown", 64 * 1024, 100, 0, TOOL_READ_TIMEOUT),
    # curl: MAX_HTTP_RESP_HEADER_SIZE 300 KiB for all response headers of a
    # request, 1xx included (lib/http.h; CVE-2023-38039, in Debian's 7.88.1
    # as a patch), and MAX_HTTP_RESP_HEADER_COUNT 5000 lines since 2025
    # (curl PR #17281).
    Client("curl", 300 * 1024, 5000, 0),
    # GNU Wget: HTTP_RESPONSE_MAX_SIZE 65536 for the response head
    # (src/http.c); --read-timeout defaults to 900 s. It skips any number of
    # 100 Continue (6,000 measured), but that is not documented: none sent.
    Client("wget", 64 * 1024, 0, 0, 900.0),
    # Chromium: kMaxHeaderBufSize 256 KiB (net/http/http_stream_parser.h), else
    # ERR_RESPONSE_HEADERS_TOO_BIG. Other browsers are held to the same cap
    # (Firefox gives up near 1 MB, as measured in curl PR #11582). Chromium
    # skips any number of 1xx (20,000 measured), undocumented: none sent.
    Client("browser", 256 * 1024, 0, 0, TOOL_READ_TIMEOUT),
    # http.client (urllib, requests via urllib3): _MAXHEADERS 100 lines, the
    # blank line included, each under _MAXLINE 65536 bytes. Stated as 100 *
    # 65536 bytes, every line is charged 65536 (Plan.unit), which makes the
    # byte budget a line budget. Interim responses: no limit up to CPython
    # 3.14 as released; gh-150743 (2026) caps them at 100.
    Client("python", 100 * 65536, 100, 90, TOOL_READ_TIMEOUT),
    # httpx: httpcore gives h11 max_incomplete_event_size = 100 KiB, which
    # bounds the head; httpcore skips any number of 1xx; the default
    # timeout is 5 s per read.
    Client("httpx", 100 * 1024, 0, 90, TOOL_READ_TIMEOUT),
    # Go net/http: MaxResponseHeaderBytes defaults to 10 MiB; before Go 1.24
    # more than 5 1xx responses abort the request, since then their heads
    # count towards that limit (golang/go#65035).
    Client("go", 10 << 20, 0, 4, TOOL_READ_TIMEOUT),
    # Tools that make many requests, each under a total deadline. Their rows
    # come after the eight classes the state word can hold: they are
    # answered late, never streamed, so they need no class there (a listener
    # that does not answer late streams them as "unknown"). The limits and
    # their sources are in docs/client-limits.md.
    # gobuster: --timeout, 10 s by default (Go http.Client.Timeout: dial,
    # request and the whole response).
    Client("gobuster", 64 * 1024, 100, 0, deadline=10.0),
    # ffuf: -timeout, 10 s by default (http.Client.Timeout).
    Client("ffuf", 64 * 1024, 100, 0, deadline=10.0),
    # feroxbuster: --timeout, 7 s by default (reqwest's total timeout).
    Client("feroxbuster", 64 * 1024, 100, 0, deadline=7.0),
    # Nikto: -timeout, 10 s by default, per request.
    Client("nikto", 64 * 1024, 100, 0, deadline=10.0),
    # (sqlmap is not here: it scans one target and quits on its 404, so the
    # endless answer, which it waits out 30 s a read with 3 retries, holds it longer.)
    # THC Hydra's http modules: -w, 32 s by default, per response.
    Client("hydra", 64 * 1024, 100, 0, deadline=32.0),
    # wfuzz: --req-delay, 90 s by default (pycurl's TIMEOUT per request).
    Client("wfuzz", 64 * 1024, 100, 0, deadline=90.0),
    # nuclei: -timeout, 10 s by default, per request.
    Client("nuclei", 64 * 1024, 100, 0, deadline=10.0),
)
UNKNOWN, CURL, WGET, BROWSER, PYTHON, HTTPX, GO = range(7)
STREAM_CLASSES = 8  # client classes the state word's 3 bits can hold
assert all(c.deadline for c in CLIENTS[STREAM_CLASSES:])  # streamed ones fit in the state

# First match wins; browsers last, since bots and scanners say "Mozilla" too.
_TOOL = {c.name: i for i, c in enumerate(CLIENTS) if c.deadline}
_UA_RULES: tuple[tuple[bytes, int], ...] = (
    (b"gobuster/", _TOOL["gobuster"]),
    (b"fuzz faster u fool", _TOOL["ffuf"]),
    (b"feroxbuster/", _TOOL["feroxbuster"]),
    (b"nikto/", _TOOL["nikto"]),
    (b"(hydra)", _TOOL["hydra"]),
    (b"wfuzz/", _TOOL["wfuzz"]),
    (b"nuclei", _TOOL["nuclei"]),
    (b"curl/", CURL),
    (b"wget/", WGET),
    (b"python-httpx/", HTTPX),
    (b"python-requests/", PYTHON),
    (b"python-urllib", PYTHON),
    (b"go-http-client/", GO),
    (b"zgrab", GO),
    (b"mozilla/", BROWSER),
)

HEADROOM = 0.95  # auto fills a client's documented cap to this fraction
TIMEOUT_SHARE = 0.8  # and keeps its delay under this share of a read timeout


def classify(user_agent: bytes) -> int:
    ua = user_agent.lower()
    for token, client in _UA_RULES:
        if token in ua:
            return client
    return UNKNOWN


# ---------------------------------------------------------------- options

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_FIELD_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?\Z")
_FRAMING = ("content-length", "transfer-encoding")


def _check_strategy(v: str) -> str | None:
    return None if v in STRATEGIES else "must be one of " + ", ".join(STRATEGIES)


def _check_server(v: str) -> str | None:
    return None if v in SERVERS else "must be one of " + ", ".join(SERVERS)


def _check_status(v: int) -> str | None:
    known = v in HTTPStatus._value2member_map_ and not isinstance(v, bool)
    if not known or not 200 <= v <= 599 or v in (204, 205, 304):
        return "must be a known status from 200 to 599 that allows a body (not 204, 205, 304)"
    return None


def check_header(entry: Any) -> str | None:
    """An error text for one ``headers`` entry, or None if it is usable."""
    if not isinstance(entry, str):
        return "entries must be strings 'Name: value'"
    name, sep, value = entry.partition(":")
    value = value.strip(" \t")
    if not sep or not _TOKEN.match(name):
        return f"{entry!r}: must be 'Name: value' with a token name"
    if not _FIELD_VALUE.match(value.replace("{date}", "x")):
        return f"{entry!r}: the value must be printable ASCII on one line"
    if name.lower() in _FRAMING:
        return f"{entry!r}: tarry sets the message framing itself"
    return None


def _check_headers(v: list) -> str | None:
    if len(v) > 64:
        return "at most 64 entries"
    for entry in v:
        err = check_header(entry)
        if err:
            return err
    return None


OPTIONS = {
    "strategy": Option(
        "auto",
        str,
        "headers, body, continue, or auto (per client, by User-Agent)",
        _check_strategy,
    ),
    "server": Option(
        "nginx", str, "whose response head to imitate: nginx, apache, iis", _check_server
    ),
    "status": Option(200, int, "status code of the response", _check_status, Bounds(200, 599)),
    "headers": Option(
        [],
        list,
        "exact header set after the status line, as 'Name: value' strings ('{date}' is "
        "replaced by the current date); empty: the server's own set",
        _check_headers,
    ),
    "request_timeout": Option(
        10.0,
        (int, float),
        "seconds to wait for the request head; then the drip starts anyway",
        bounds=Bounds(0, 3600, above=True, unit=" seconds"),
    ),
    "chunk_size": Option(
        96, int, "largest body chunk, bytes (80..4096)", bounds=Bounds(80, 4096, unit=" bytes")
    ),
    "client_timeouts": Option(
        True,
        bool,
        "keep the delay under the read timeout a client or the tools that wear its "
        "name are known to have (httpx, dirsearch: 5 s)",
    ),
    # HTTPS: the same tarpit under TLS (tarry.tls), e.g. listen = ["*:443"], tls = true
    "hostname": Option("localhost", str, "host name of the generated self-signed certificate"),
    **TLS_OPTIONS,
}


# ---------------------------------------------------------------- response heads

_SERVER_HEADS: dict[str, tuple[str, ...]] = {
    # nginx's own order: Server, Date, Content-Type, then framing, Connection.
    "nginx": (
        "Server: nginx",
        "Date: {date}",
        "Content-Type: text/html; charset=utf-8",
        "{framing}",
        "Connection: {connection}",
        "Vary: Accept-Encoding",
    ),
    # Apache httpd (Debian) with PHP behind it.
    "apache": (
        "Date: {date}",
        "Server: Apache/2.4.62 (Debian)",
        "Expires: Thu, 19 Nov 1981 08:52:00 GMT",
        "Cache-Control: no-store, no-cache, must-revalidate",
        "Pragma: no-cache",
        "Vary: Accept-Encoding",
        "Keep-Alive: timeout=5, max=100",
        "Connection: {connection_apache}",
        "{framing}",
        "Content-Type: text/html; charset=UTF-8",
    ),
    # IIS with ASP.NET.
    "iis": (
        "Cache-Control: private",
        "{framing}",
        "Content-Type: text/html; charset=utf-8",
        "Server: Microsoft-IIS/10.0",
        "X-AspNet-Version: 4.0.30319",
        "X-Powered-By: ASP.NET",
        "Date: {date}",
    ),
}


class HeadTemplate:
    """The status line and base headers, with the Date filled in when sent.

    Every variant has the same length whatever the date (an IMF-fixdate is
    always 29 characters), so its cost against a client's budget is fixed.
    """

    def __init__(
        self, status: int, server: str, override: Sequence[str], raw: bool, style: bool
    ) -> None:
        phrase = HTTPStatus(status).phrase
        lines = [f"HTTP/1.1 {status} {phrase}"]
        framing = "" if raw else "Transfer-Encoding: chunked"
        if override:
            lines += [_normalise(h) for h in override]
            if framing:
                lines.append(framing)
        else:
            for h in _SERVER_HEADS[server]:
                h = h.format(
                    date="{date}",
                    framing=framing,
                    connection="close" if raw else "keep-alive",
                    connection_apache="close" if raw else "Keep-Alive",
                )
                if style and h.startswith("Content-Type:"):
                    h = "Content-Type: text/css"
                if h:
                    lines.append(h)
        self.lines = lines
        text = "".join(line + "\r\n" for line in lines)
        self._parts = [p.encode("latin-1") for p in text.split("{date}")]
        self.length = len(text) + text.count("{date}") * (29 - len("{date}"))

    def render(self, date: bytes) -> bytes:
        return date.join(self._parts)

    def cost(self, unit: int) -> int:
        """Charge against a budget: each line costs at least ``unit``."""
        return sum(max(len(line.replace("{date}", "x" * 29)) + 2, unit) for line in self.lines)


def _normalise(entry: str) -> str:
    name, _, value = entry.partition(":")
    return name + ": " + value.strip(" \t")


# ---------------------------------------------------------------- header lines

_COOKIE_NAMES = (
    "PHPSESSID",
    "JSESSIONID",
    "sessionid",
    "csrftoken",
    "XSRF-TOKEN",
    "laravel_session",
    "_ga",
    "_gid",
    "_gat_gtag",
    "_fbp",
    "__cf_bm",
    "_cfuvid",
    "AWSALB",
    "AWSALBCORS",
    "ak_bmsc",
    "bm_sv",
    "bm_sz",
    "_abck",
    "wordpress_test_cookie",
    "wp-settings-time-1",
    "__Host-session",
    "__Secure-auth",
    "cookie_consent",
    "euconsent-v2",
    "OptanonConsent",
    "_hjSessionUser",
    "_hjSession",
    "_clck",
    "_clsk",
    "MUID",
    "NID",
    "ASP.NET_SessionId",
    "visitor_id",
    "ab_test_group",
    "lang",
    "currency",
    "cart_token",
    "remember_web",
    "SERVERID",
    "BIGipServerpool_web",
    "TS01a2b3c4",
    "incap_ses",
    "visid_incap",
    "mp_session",
)
_LINK_ASSETS = (
    ("/static/js/main.{h8}.js", "script"),
    ("/static/js/vendor.{h8}.chunk.js", "script"),
    ("/assets/css/app.{h8}.css", "style"),
    ("/assets/application-{h16}.css", "style"),
    ("/wp-content/themes/astra/assets/css/minified/main.min.css?ver=4.{d}.{d}", "style"),
    ("/wp-includes/js/jquery/jquery.min.js?ver=3.7.1", "script"),
    ("/_next/static/chunks/{h16}.js", "script"),
    ("/_next/static/css/{h16}.css", "style"),
    ("/fonts/inter-var-latin.{h8}.woff2", "font"),
    ("/img/hero-{d}{d}{d}.webp", "image"),
)
_POPS = ("FRA", "AMS", "LHR", "CDG", "IAD", "SJC", "NRT", "SIN", "GRU", "SYD", "ARN", "WAW")
_PHP = ("PHP/8.1.29", "PHP/8.2.24", "PHP/8.3.12", "PHP/7.4.33")
_B64URL = string.ascii_letters + string.digits + "-_"
_ALNUM = string.ascii_letters + string.digits


class HeaderSource:
    """Endless plausible response header lines, cut from a refreshed pool.

    Weighted like a busy site behind a CDN: mostly Set-Cookie and Link,
    then the X- fields of proxies and frameworks, and the odd policy header.
    """

    POOL = 512
    REFRESH = 4096  # lines handed out between pool refreshes
    LINE_MAX = 240  # bytes, CRLF included

    def __init__(self, server: str, rand: random.Random, clock: Callable[[], float]) -> None:
        self.server = server
        self.rand = rand
        self.clock = clock
        self._pool: list[bytes] = []
        self._left = 0

    def line(self) -> bytes:
        if self._left <= 0:
            self._refill()
        self._left -= 1
        return self._pool[self.rand.randrange(self.POOL)]

    def _refill(self) -> None:
        now = self.clock()
        pool: list[bytes] = []
        while len(pool) < self.POOL:
            line = (self._one(now) + "\r\n").encode("ascii")
            if len(line) <= self.LINE_MAX:
                pool.append(line)
        self._pool = pool
        self._left = self.REFRESH

    def _one(self, now: float) -> str:
        r = self.rand.random()
        if r < 0.42:
            return self._cookie(now)
        if r < 0.58:
            return self._link()
        if r < 0.86:
            return self._x_header(now)
        return self._misc(now)

    # -- generators; all values are valid field-values (printable, no CR/LF)

    def _tok(self, alphabet: str, n: int) -> str:
        return "".join(self.rand.choice(alphabet) for _ in range(n))

    def _hex(self, n: int) -> str:
        return self._tok("0123456789abcdef", n)

    def _uuid(self) -> str:
        h = self._hex(32)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[self.rand.randrange(4)]}{h[17:20]}-{h[20:]}"

    def _date(self, t: float) -> str:
        return formatdate(t, usegmt=True)

    def _cookie(self, now: float) -> str:
        rand = self.rand
        name = rand.choice(_COOKIE_NAMES)
        if self.server == "iis" and rand.random() < 0.3:
            name = "ASP.NET_SessionId"
        elif name.startswith("_h"):
            name += "_" + str(rand.randrange(1000000, 9999999))
        kind = rand.random()
        if name.startswith("_g"):
            value = f"GA1.1.{rand.randrange(10**8, 10**10)}.{int(now) - rand.randrange(10**7)}"
        elif kind < 0.4:
            value = self._hex(rand.choice((26, 32, 40)))
        elif kind < 0.8:
            value = self._tok(_B64URL, rand.randrange(22, 88))
        else:
            value = self._uuid()
        attrs = []
        if rand.random() < 0.6:
            age = rand.choice((3600, 7200, 86400, 604800, 2592000, 31536000))
            attrs.append(f"expires={self._date(now + age)}")
            if rand.random() < 0.5:
                attrs.append(f"Max-Age={age}")
        attrs.append("path=/")
        if rand.random() < 0.7:
            attrs.append("HttpOnly")
        if rand.random() < 0.3:
            attrs.append("secure")
        if rand.random() < 0.6:
            attrs.append("SameSite=" + rand.choice(("Lax", "Lax", "Strict", "None")))
        return f"Set-Cookie: {name}={value}; " + "; ".join(attrs)

    def _link(self) -> str:
        rand = self.rand
        if rand.random() < 0.15:
            return rand.choice(
                (
                    'Link: </wp-json/>; rel="https://api.w.org/"',
                    f'Link: </wp-json/wp/v2/pages/{rand.randrange(2, 9999)}>; rel="alternate"; '
                    'type="application/json"',
                    f"Link: </?p={rand.randrange(2, 99999)}>; rel=shortlink",
                )
            )
        path, kind = rand.choice(_LINK_ASSETS)
        path = path.format(h8=self._hex(8), h16=self._hex(16), d=rand.randrange(10))
        extra = '; type="font/woff2"; crossorigin' if kind == "font" else ""
        return f"Link: <{path}>; rel=preload; as={kind}{extra}"

    def _x_header(self, now: float) -> str:
        rand = self.rand
        pop = rand.choice(_POPS)
        choices: tuple[Callable[[], str], ...] = (
            lambda: f"X-Request-Id: {self._uuid()}",
            lambda: f"X-Correlation-ID: {self._hex(32)}",
            lambda: (
                "X-Cache: "
                + rand.choice(
                    ("MISS", "HIT", "EXPIRED", "Miss from cloudfront", "Hit from cloudfront")
                )
            ),
            lambda: f"X-Cache-Hits: {rand.choice((0, 0, 1, 2, 5, 17))}",
            lambda: f"X-Served-By: cache-{pop.lower()}-e{rand.randrange(10**6, 10**7)}-{pop}",
            lambda: f"X-Timer: S{now:.6f},VS0,VE{rand.randrange(1, 400)}",
            lambda: f"X-Runtime: {rand.random() / 4:.6f}",
            lambda: f"X-Varnish: {rand.randrange(10**8, 10**9)} {rand.randrange(10**8, 10**9)}",
            lambda: f"X-Powered-By: {rand.choice(_PHP)}",
            lambda: f"X-Amz-Cf-Pop: {pop}{rand.randrange(50, 60)}-P{rand.randrange(1, 9)}",
            lambda: f"X-Amz-Cf-Id: {self._tok(_B64URL, 54)}==",
            lambda: f"X-Backend-Server: web-{rand.randrange(1, 24):02d}",
            lambda: "X-Content-Type-Options: nosniff",
            lambda: "X-Frame-Options: " + rand.choice(("SAMEORIGIN", "DENY")),
            lambda: "X-XSS-Protection: " + rand.choice(("0", "1; mode=block")),
            lambda: f"X-B3-TraceId: {self._hex(32)}",
            lambda: f"X-RateLimit-Remaining: {rand.randrange(0, 1000)}",
            lambda: f"X-Edge-Location: {pop.lower()}{rand.randrange(1, 60)}",
            lambda: "X-Robots-Tag: " + rand.choice(("noarchive", "index, follow", "noai")),
            lambda: f"X-Litespeed-Cache: {rand.choice(('hit', 'miss'))}",
            lambda: f"X-Drupal-Dynamic-Cache: {rand.choice(('MISS', 'UNCACHEABLE'))}",
            lambda: f"X-Generator: Drupal {rand.randrange(9, 11)} (https://www.drupal.org)",
            lambda: "X-Pingback: /xmlrpc.php",
            lambda: "X-Shopify-Stage: production",
        )
        return rand.choice(choices)()

    def _misc(self, now: float) -> str:
        rand = self.rand
        choices: tuple[Callable[[], str], ...] = (
            lambda: (
                f"Server-Timing: cdn-cache;desc={rand.choice(('HIT', 'MISS'))}, "
                f"edge;dur={rand.randrange(1, 90)}, origin;dur={rand.randrange(20, 900)}"
            ),
            lambda: (
                f"Server-Timing: app;dur={rand.random() * 200:.1f}, db;dur={rand.random() * 50:.1f}"
            ),
            lambda: "Via: 1.1 varnish, 1.1 varnish",
            lambda: f"Via: 1.1 {self._hex(32)}.cloudfront.net (CloudFront)",
            lambda: (
                "Cache-Control: "
                + rand.choice(
                    (
                        "no-cache, private",
                        "max-age=0, must-revalidate",
                        "public, max-age=600",
                        "private, no-store, max-age=0",
                    )
                )
            ),
            lambda: f'ETag: W/"{self._hex(rand.choice((8, 16, 32)))}"',
            lambda: f"Age: {rand.randrange(0, 3600)}",
            lambda: f"Last-Modified: {self._date(now - rand.randrange(60, 10**7))}",
            lambda: (
                "Referrer-Policy: "
                + rand.choice(("strict-origin-when-cross-origin", "no-referrer-when-downgrade"))
            ),
            lambda: (
                "Permissions-Policy: camera=(), microphone=(), geolocation=(), interest-cohort=()"
            ),
            lambda: (
                "Content-Security-Policy-Report-Only: default-src 'self'; img-src 'self' "
                f"data:; script-src 'self' 'nonce-{self._tok(_ALNUM, 22)}'; "
                "report-uri /csp-report"
            ),
            lambda: 'NEL: {"success_fraction":0,"report_to":"default","max_age":604800}',
            lambda: (
                'Report-To: {"group":"default","max_age":31536000,"endpoints":'
                '[{"url":"/_/reports"}],"include_subdomains":true}'
            ),
            lambda: "Timing-Allow-Origin: *",
            lambda: "Accept-Ranges: bytes",
        )
        return rand.choice(choices)()


# ---------------------------------------------------------------- body chunks

_PREFIX = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
    '<title>Home</title>\n<link rel="stylesheet" href="/assets/css/site.css">\n',
    '</head>\n<body class="home page-template-default">\n<div id="page" class="site">\n',
)
_WORDS_TEXT = (
    "the of and to in is for on with that this from by are at as be our your we new all "
    "more about home news blog contact services products support privacy terms account "
    "update release notes guide install configure server network security team project "
    "customers pricing features download documentation community events careers partners"
)
_WORDS = tuple(_WORDS_TEXT.split())
_CLASSES = (
    "entry-content",
    "post",
    "card",
    "row",
    "col-md-6",
    "widget",
    "menu-item",
    "article-body",
    "container",
    "section",
    "footer-links",
    "sidebar",
)


class BodySource:
    """Endless small, whole HTML fragments (CSS rules for a stylesheet), each
    framed in advance for both codings."""

    POOL = 256
    REFRESH = 4096

    def __init__(self, chunk_size: int, rand: random.Random) -> None:
        self.chunk_size = chunk_size
        self.rand = rand
        self._pools: dict[bool, list[tuple[bytes, bytes]]] = {}
        self._left = {False: 0, True: 0}
        self.prefix = [_frame(p.encode("ascii")) for p in _PREFIX]

    def chunk(self, index: int, flags: int) -> bytes:
        """The ``index``-th unit of a body: the document start, then fragments."""
        raw = 1 if flags & RAW else 0
        style = bool(flags & STYLE)
        if index < len(self.prefix) and not style:
            return self.prefix[index][raw]
        if self._left[style] <= 0:
            self._refill(style)
        self._left[style] -= 1
        return self._pools[style][self.rand.randrange(self.POOL)][raw]

    def _refill(self, style: bool) -> None:
        make = self._rule if style else self._fragment
        pool: list[tuple[bytes, bytes]] = []
        while len(pool) < self.POOL:
            text = make().encode("ascii")
            if len(text) <= self.chunk_size:  # whole fragments only
                pool.append(_frame(text))
        self._pools[style] = pool
        self._left[style] = self.REFRESH

    def _words(self, lo: int, hi: int) -> str:
        return " ".join(self.rand.choice(_WORDS) for _ in range(self.rand.randrange(lo, hi)))

    def _fragment(self) -> str:
        rand = self.rand
        k = rand.randrange(8)
        if k == 0:
            return f'<div class="{rand.choice(_CLASSES)}">\n'
        if k == 1:
            return "</div>\n"
        if k == 2:
            slug = "-".join(rand.choice(_WORDS) for _ in range(rand.randrange(1, 4)))
            return f'<li><a href="/{slug}/">{self._words(1, 4).capitalize()}</a></li>\n'
        if k == 3:
            return f"<h2>{self._words(2, 6).capitalize()}</h2>\n"
        if k == 4:
            return f"<!-- {rand.choice(('cache', 'block', 'widget'))}:{rand.randrange(99999)} -->\n"
        return f"<p>{self._words(4, 14).capitalize()}.</p>\n"

    def _rule(self) -> str:
        rand = self.rand
        prop, values = rand.choice(_CSS_PROPS)
        sel = "." + rand.choice(_CLASSES)
        if rand.random() < 0.4:
            sel += " " + rand.choice(("a", "p", "li", "h2", "img", "span", "a:hover"))
        return f"{sel}{{{prop}:{rand.choice(values)}}}\n"


_CSS_PROPS = (
    ("margin", ("0", "0 auto", "8px 0", "1rem 0 0")),
    ("padding", ("0", "4px 8px", "12px", ".5rem 1rem")),
    ("color", ("#333", "#1a1a1a", "#0073aa", "inherit", "rgba(0,0,0,.7)")),
    ("display", ("block", "flex", "none", "inline-block", "grid")),
    ("font-size", ("14px", "1rem", ".875rem", "1.25em")),
    ("line-height", ("1.4", "1.6", "20px")),
    ("border-radius", ("2px", "4px", "50%")),
    ("max-width", ("100%", "1140px", "720px")),
)


def _frame(data: bytes) -> tuple[bytes, bytes]:
    """(chunked, raw) encodings of one body unit."""
    return b"%x\r\n%s\r\n" % (len(data), data), data


# ---------------------------------------------------------------- request head

_JUNK = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_METHOD = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}\Z")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)\Z")


def head_end(buf: bytes | bytearray) -> int:
    """Index just past the blank line that ends a head, or -1.

    Lines may end in CRLF, LF or a lone CR (lenient, like most servers).
    """
    best = -1
    for pattern in (b"\r\n\r\n", b"\n\n", b"\r\r", b"\n\r\n"):
        at = buf.find(pattern)
        if at >= 0 and (best < 0 or at + len(pattern) < best):
            best = at + len(pattern)
    return best


def split_lines(head: bytes | bytearray) -> list[bytes]:
    return bytes(head).replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")


@dataclass
class Request:
    """What a (possibly partial) request head told us."""

    method: bytes = b""
    target: bytes = b""
    version: bytes = b""
    host: bytes | None = None
    user_agent: bytes | None = None
    line: bytes = b""
    is_http: bool = False

    @property
    def is_stylesheet(self) -> bool:
        return self.target.split(b"?", 1)[0].lower().endswith(b".css")

    @property
    def raw(self) -> bool:
        """A pre-1.1 peer: no chunked coding, no interim responses."""
        m = _VERSION.match(self.version)
        return self.is_http and (m is None or (m[1], m[2]) < (b"1", b"1"))

    def notes(self, client: int) -> tuple[tuple[str, str], ...]:
        out: list[tuple[str, str]] = []
        if self.is_http:
            out += [("method", sanitise(self.method, 32)), ("path", sanitise(self.target))]
            if self.version:
                out.append(("version", sanitise(self.version, 16)))
        elif self.line:
            out.append(("request", sanitise(self.line, 128)))
        if self.host is not None:
            out.append(("host_header", sanitise(self.host, 128)))
        if self.user_agent is not None:
            out.append(("user_agent", sanitise(self.user_agent)))
        if self.line or self.user_agent is not None:
            out.append(("client", CLIENTS[client].name))
        return tuple(out)


def parse_head(head: bytes | bytearray) -> Request:
    """Parse what there is; a partial or broken head yields what it can."""
    lines = split_lines(head[:HEAD_MAX])
    req = Request(line=lines[0][:512])
    parts = lines[0].split()
    if (len(parts) == 3 and _METHOD.match(parts[0]) and _VERSION.match(parts[2])) or (
        len(parts) == 2 and _METHOD.match(parts[0]) and parts[1].startswith(b"/")
    ):
        req.is_http = True  # HTTP/1.x, or an HTTP/0.9 "GET /path"
        req.method = parts[0]
        req.target = parts[1]
        req.version = parts[2] if len(parts) == 3 else b""
    for line in lines[1 : HEAD_LINES_MAX + 1]:
        if not line:
            break  # the end of the head; what follows is not ours to read
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip().lower()
        if name == b"host" and req.host is None:
            req.host = value.strip()
        elif name == b"user-agent" and req.user_agent is None:
            req.user_agent = value.strip()
    return req


# ---------------------------------------------------------------- the bait


def _variant(flags: int) -> int:
    """Index of the head template for these flags."""
    return (1 if flags & RAW else 0) | (2 if flags & STYLE else 0)


def pack(phase: int, client: int, flags: int, count: int) -> int:
    return phase | (client << _CLIENT_SHIFT) | flags | (min(count, COUNT_MAX) << _COUNT_SHIFT)


def unpack(state: int) -> tuple[int, int, int, int]:
    """(phase, client, flags, count)."""
    return (
        state & _PHASE,
        (state & _CLIENT) >> _CLIENT_SHIFT,
        state & _FLAGS,
        state >> _COUNT_SHIFT,
    )


@dataclass(frozen=True)
class Plan:
    """``auto``'s limits for one client class, derived from its ``Client``."""

    interim: int  # 1xx responses before the head
    unit: int  # least cost of one head line, so that a line cap holds too
    budget: int  # cost the head may reach
    delay_cap: float  # longest delay this client tolerates (inf: any)

    @classmethod
    def of(cls, c: Client) -> Plan:
        unit = math.ceil(c.head_bytes / c.head_lines) if c.head_lines else 0
        budget = int(c.head_bytes * HEADROOM) - c.interim * len(CONTINUE_UNIT)
        cap = c.read_timeout * TIMEOUT_SHARE if c.read_timeout else math.inf
        return cls(c.interim, unit, budget, cap)


class HttpBait(BaitBase):
    """One per listener; see the module docstring for the state word."""

    protocol = PROTOCOL

    def __init__(
        self,
        spec: TarpitSpec,
        rand: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.delay = spec.delay
        self.jitter = spec.jitter
        self.strategy = spec.opt("strategy")
        self.request_timeout = float(spec.opt("request_timeout"))
        self.clock = clock
        self.rand = rand or random.Random(os.urandom(16))
        server = spec.opt("server")
        status = int(spec.opt("status"))
        override = list(spec.opt("headers"))
        # heads[variant(flags)]: HTTP/1.1 peers get chunked framing, older
        # ones read to close; stylesheets are text/css
        self.heads = tuple(
            HeadTemplate(status, server, override, raw=bool(v & 1), style=bool(v & 2))
            for v in range(4)
        )
        self.lines = HeaderSource(server, self.rand, clock)
        self.body = BodySource(int(spec.opt("chunk_size")), self.rand)
        self.plans = tuple(Plan.of(c) for c in CLIENTS)
        honour = bool(spec.opt("client_timeouts"))
        self.delay_caps = tuple(p.delay_cap if honour else math.inf for p in self.plans)
        self.shortest = positive_min(self.delay, self.request_timeout, *self.delay_caps)
        # what each base head costs each client class
        self.head_costs = tuple(tuple(h.cost(p.unit) for p in self.plans) for h in self.heads)
        self._date_at = -1
        self._date = b""
        self.server_name = _SERVER_NAMES.get(server, server).encode("ascii")
        self.not_found = _NOT_FOUND_BODY.replace(b"{server}", self.server_name)
        self.late = self.strategy == "auto"
        self.store = deadline_store()
        if self.late:
            self.store.enabled = True

    # -- engine interface

    def open(self, peer: str) -> Step:
        obj = Reading(peer) if self.late and self.store.known(peer) else None
        return Step(pack(READ, UNKNOWN, 0, 0), delay=self.request_timeout, obj=obj)

    def feed(self, state: int, obj: Any, data: bytes, age: float) -> Step:
        if state & _PHASE != READ or state >> _COUNT_SHIFT == LATE:
            return Step(state, obj=obj)  # the head is behind us: drop input unread
        buf = obj.buf if isinstance(obj, Reading) else obj
        if not buf:
            data = data.lstrip(b"\r\n")  # RFC 9112 §2.2: ignore leading empty lines
            if not data:
                return Step(state, obj=obj)
            if buf is None:
                buf = obj = bytearray()
        room = HEAD_MAX - len(buf)
        junk = _JUNK.search(data, 0, room)
        if junk is not None:  # not an HTTP head: give up on it now
            buf += data[: junk.start()]
            return self._respond(parse_head(buf), obj)
        buf += data[:room]
        end = head_end(buf)
        if end >= 0:
            return self._respond(parse_head(buf[:end]), obj)
        lines = max(buf.count(b"\n"), buf.count(b"\r"))
        if len(buf) >= HEAD_MAX or lines > HEAD_LINES_MAX + 1 or age >= self.request_timeout:
            return self._respond(parse_head(buf), obj)
        return Step(state, obj=obj)

    def tick(self, state: int, obj: Any, age: float) -> Step:
        phase, client, flags, count = unpack(state)
        if phase == READ and count == LATE:
            return self._late_answer(flags, obj)
        if phase == READ:  # request_timeout: answer whatever was sent
            buf = obj.buf if isinstance(obj, Reading) else obj
            return self._respond(parse_head(buf or b""), obj)
        if phase == CONTINUE:
            if self.strategy == "auto" and count >= self.plans[client].interim:
                return self._start_head(client, flags)
            return self._step(pack(CONTINUE, client, flags, count + 1), CONTINUE_UNIT)
        if phase == HEADERS:
            line = self.lines.line()
            plan = self.plans[client]
            count += max(len(line), plan.unit)  # kept by every strategy: see STATEFUL_OPTIONS
            if self.strategy == "auto" and count > plan.budget:
                return self._start_body(client, flags)
            return self._step(pack(HEADERS, client, flags, count), line)
        if flags & NOBODY:
            return Step(state)  # held in silence (see _start_body)
        out = self.body.chunk(count, flags)
        return self._step(pack(BODY, client, flags, count + 1), out)

    # -- phases

    def _respond(self, req: Request, obj: Any = None) -> Step:
        """The head is read or given up on: send the first unit of the answer,
        or, to a tool with a known deadline, nothing until just inside it."""
        row = classify(req.user_agent) if req.user_agent is not None else UNKNOWN
        flags = (RAW if req.raw else 0) | (NOBODY if req.method == b"HEAD" else 0)
        if req.is_stylesheet:
            flags |= STYLE
        deadline = self._deadline(row, req, obj) if req.is_http else None
        if deadline is not None:
            notes = (*req.notes(row), ("answer", "late"), ("deadline", f"{deadline:g}"))
            peer = obj if isinstance(obj, Reading) else None
            if peer is not None:
                peer.buf.clear()
            state = pack(READ, UNKNOWN, flags, LATE)
            return Step(state, b"", SHARE * deadline, peer, notes=notes)
        client = row if row < STREAM_CLASSES else UNKNOWN
        strategy = self.strategy
        if strategy == "continue" and flags & RAW:
            strategy = "headers"  # RFC 9110 §15.2: no 1xx to an HTTP/1.0 client
        if strategy == "body" and flags & NOBODY:
            strategy = "headers"  # a HEAD response that ends lets the client go
        if strategy == "auto":
            if self.plans[client].interim and not flags & RAW:
                step = self._step(pack(CONTINUE, client, flags, 1), CONTINUE_UNIT)
            else:
                step = self._start_head(client, flags)
        elif strategy == "continue":
            step = self._step(pack(CONTINUE, client, flags, 1), CONTINUE_UNIT)
        elif strategy == "headers":
            step = self._start_head(client, flags)
        else:
            head = self.heads[_variant(flags)].render(self._now())
            step = self._step(pack(BODY, client, flags, 0), head + b"\r\n")
        return step._replace(notes=req.notes(row))

    def _deadline(self, row: int, req: Request, obj: Any) -> float | None:
        """The total deadline this request is under, when ``auto`` knows one:
        the tool family's, or what its software taught from its address."""
        if not self.late:
            return None
        if CLIENTS[row].deadline:
            return CLIENTS[row].deadline
        if isinstance(obj, Reading):
            ua = sanitise(req.user_agent) if req.user_agent is not None else None
            return self.store.deadline(obj.peer, software_key(ua))
        return None

    def _late_answer(self, flags: int, obj: Any) -> Step:
        """A complete, cheap 404, just inside the tool's deadline; then the
        next request is read as the first was (RFC 9112 keep-alive)."""
        date = self._now()
        body = b"" if flags & NOBODY else self.not_found
        head = (
            b"HTTP/1.1 404 Not Found\r\nServer: " + self.server_name + b"\r\nDate: " + date
            + b"\r\nContent-Type: text/html\r\nContent-Length: "
            + str(len(self.not_found)).encode()
            + (b"\r\nConnection: close\r\n\r\n" if flags & RAW else b"\r\nConnection: keep-alive\r\n\r\n")
        )  # fmt: skip
        if flags & RAW:  # an HTTP/1.0 peer reads to the close
            return Step(pack(READ, UNKNOWN, 0, 0), head + body, None, None, close=True)
        return Step(pack(READ, UNKNOWN, 0, 0), head + body, self.request_timeout, obj)

    def _start_head(self, client: int, flags: int) -> Step:
        v = _variant(flags)
        head = self.heads[v].render(self._now())
        return self._step(pack(HEADERS, client, flags, self.head_costs[v][client]), head)

    def _start_body(self, client: int, flags: int) -> Step:
        if flags & NOBODY:
            # Past the client's cap, yet ending the head would release it:
            # hold it in silence, with no timer, until it gives up.
            return Step(pack(BODY, client, flags, 0))
        first = self.body.chunk(0, flags)
        return self._step(pack(BODY, client, flags, 1), b"\r\n" + first)

    def _step(self, state: int, out: bytes) -> Step:
        client = (state & _CLIENT) >> _CLIENT_SHIFT
        delay = min(jittered(self.delay, self.jitter, self.rand.random), self.delay_caps[client])
        return Step(state, out, delay)

    def _now(self) -> bytes:
        t = int(self.clock())
        if t != self._date_at:
            self._date_at = t
            self._date = formatdate(t, usegmt=True).encode("ascii")
        return self._date


def lesson(event: Event) -> tuple[str, float] | None:
    """What an HTTP departure teaches (``tarry.deadlines``): a client that left
    a streamed answer on its own waited ``duration`` at most, so its software
    from that address is answered late next time. A client already answered
    late, or closed by us, teaches nothing."""
    if event.reason not in ("closed", "reset") or event.note("answer") == "late":
        return None
    if not event.note("method"):
        return None  # it never sent a request: a port scan, not a deadline
    if event.received > HEAD_MAX:
        return None  # it was still sending (an upload), not waiting for our answer
    return event.note("user_agent"), event.duration


_STORE: DeadlineStore | None = None


def deadline_store() -> DeadlineStore:
    """The process-wide store that ``auto`` listeners share."""
    global _STORE
    if _STORE is None:
        _STORE = DeadlineStore(PROTOCOL, lesson)
    return _STORE


def sinks() -> list[Sink]:
    """What auto learns from departures (``BaitModule.sinks``)."""
    return [deadline_store()]


def make(spec: TarpitSpec) -> HttpBait:
    return HttpBait(spec)


BAIT = BaitModule(
    PROTOCOL,
    make,
    OPTIONS,
    DEFAULTS,
    check=check_tls,
    stateful_options=STATEFUL_OPTIONS,
    sinks=sinks,
)
