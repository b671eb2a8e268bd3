"""The admin guard alone: head bounds across reads, and eviction, on a real loop."""

from __future__ import annotations

import asyncio

from tarry import adminguard
from tarry.adminguard import HEAD_MAX, Gate, Guard


class Inner(asyncio.Protocol):
    """What aiohttp would be: records what reached it."""

    def __init__(self) -> None:
        self.data = b""
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class Transport(asyncio.Transport):
    def __init__(self, peer: str = "127.0.0.1") -> None:
        super().__init__()
        self.peer = peer
        self.written = b""
        self.closing = False
        self.aborted = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self.peer, 1234) if name == "peername" else default

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True


def run(coro):
    return asyncio.run(coro)


def test_a_head_split_across_reads_passes_and_a_long_one_is_cut():
    async def go() -> None:
        gate = Gate()
        inner = Inner()
        g = Guard(inner, gate)
        t = Transport()
        g.connection_made(t)
        for piece in (b"GET / HTTP/1.1\r\nHo", b"st: x\r\n\r", b"\nGET /b HTTP/1.1\n\n"):
            g.data_received(piece)
        assert g.heads == 2 and not t.closing
        assert inner.data.endswith(b"GET /b HTTP/1.1\n\n")
        g.data_received(b"GET /c HTTP/1.1\r\n")
        for _ in range(HEAD_MAX // 100 + 2):
            g.data_received(b"X: " + b"a" * 95 + b"\r\n")
        assert t.aborted and not t.written  # an answer may be under way: no 431 into it
        assert len(inner.data) < 3 * HEAD_MAX  # aiohttp never saw the whole flood
        g.connection_lost(None)
        assert gate.open == 0 and inner.lost

    run(go())


def test_the_first_head_too_long_gets_431():
    async def go() -> None:
        g = Guard(Inner(), Gate())
        t = Transport()
        g.connection_made(t)
        g.data_received(b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * HEAD_MAX)
        assert t.written.startswith(b"HTTP/1.1 431") and t.closing

    run(go())


def test_a_full_gate_evicts_the_oldest_connection_waiting_for_a_head(monkeypatch):
    async def go() -> None:
        gate = Gate(limit=3, per_address=2)
        guards = []
        for i in range(3):
            g = Guard(Inner(), gate)
            g.connection_made(Transport(f"127.0.0.{i + 1}"))
            guards.append(g)
        guards[0].data_received(b"GET / HTTP/1.1\r\n\r\n")  # answered: not waiting
        new = Guard(Inner(), gate)
        t = Transport("127.0.0.9")
        new.connection_made(t)
        assert not t.aborted and gate.open == 3 and gate.evicted == 1
        assert guards[1].transport.aborted  # type: ignore[union-attr]
        assert not guards[0].transport.aborted  # type: ignore[union-attr]
        # per address: a third connection from one address is refused
        a, b, c = (Transport("127.0.0.7") for _ in range(3))
        for tr in (a, b, c):
            Guard(Inner(), gate).connection_made(tr)
        assert c.aborted and gate.refused == 1

    run(go())


def test_the_head_timer_cuts_a_slow_head(monkeypatch):
    monkeypatch.setattr(adminguard, "HEAD_TIMEOUT", 0.05)

    async def go() -> None:
        g = Guard(Inner(), Gate())
        t = Transport()
        g.connection_made(t)
        g.data_received(b"GET / HTTP/1.1\r\nX-Slow: ")
        await asyncio.sleep(0.2)
        assert t.written.startswith(b"HTTP/1.1 408") and t.closing

    run(go())
