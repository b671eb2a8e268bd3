"""A test-only stand-in for the engine: drives one client of a sans-I/O bait on
virtual time, so dialogues that take minutes at real delays run in milliseconds."""

from __future__ import annotations

import ssl
from typing import Any

from tarry.bait import Bait, Step
from tarry.baits._drip import Conn


class Sim:
    """One client: applies Steps the way the engine does (one timer, notes merged)."""

    def __init__(self, bait: Bait, peer: str = "127.0.0.1") -> None:
        self.bait = bait
        self.now = 0.0
        self.state = 0
        self.obj: Any = None
        self.due: float | None = None
        self.closed = False
        self.out = bytearray()  # everything sent, undrained
        self.sent = 0
        self.notes: dict[str, str] = {}
        self.steps = 0
        self._apply(bait.open(peer))

    def _apply(self, s: Step) -> None:
        assert 0 <= s.state <= 0xFFFFFFFF
        assert not s.starttls or not hasattr(self.bait, "inner"), "starttls leaked past TLS"
        self.steps += 1
        self.state, self.obj = s.state, s.obj
        self.out += s.out
        self.sent += len(s.out)
        if s.delay is not None:
            assert s.delay >= 0
            self.due = self.now + s.delay
        for k, v in s.notes or ():
            self.notes[k] = v
        if s.close:
            self.closed = True
            self.due = None
            self.obj = None

    def feed(self, data: bytes) -> None:
        assert not self.closed
        self._apply(self.bait.feed(self.state, self.obj, data, self.now))

    def tick(self) -> bool:
        """Advance to the pending timer and fire it; False when none is pending."""
        if self.due is None or self.closed:
            return False
        self.now = max(self.now, self.due)
        self.due = None
        self._apply(self.bait.tick(self.state, self.obj, self.now))
        return True

    def run(self, until: bytes | None = None, limit: int = 100000) -> bytes:
        """Tick until ``until`` has been sent (or nothing is pending); drain the output."""
        for _ in range(limit):
            if until is not None and until in self.out:
                break
            if not self.tick():
                break
        return self.take()

    def segments(self, limit: int = 100000) -> list[bytes]:
        """Tick until nothing is pending: what each tick sent, in order."""
        out: list[bytes] = []
        for _ in range(limit):
            if not self.tick():
                break
            if self.out:
                out.append(self.take())
        return out

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data


class TlsClient:
    """An in-process TLS client on memory BIOs, talking to a Sim."""

    def __init__(self, sim: Sim, ctx: ssl.SSLContext, hostname: str | None = None) -> None:
        self.sim = sim
        self.inb = ssl.MemoryBIO()
        self.outb = ssl.MemoryBIO()
        self.ssl = ctx.wrap_bio(self.inb, self.outb, server_hostname=hostname)
        self.plain = bytearray()

    def _flush(self) -> None:
        data = self.outb.read()
        if data:
            self.sim.feed(data)

    def handshake(self, limit: int = 10000) -> None:
        for _ in range(limit):
            try:
                self.ssl.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
            got = self.sim.take()
            if not got:
                assert self.sim.tick(), "server went silent during the handshake"
                got = self.sim.take()
            self.inb.write(got)
        raise AssertionError("handshake did not finish")

    def send(self, data: bytes) -> None:
        self.ssl.write(data)
        self._flush()

    def recv_until(self, until: bytes, limit: int = 100000) -> bytes:
        """Run the server and decrypt its output until ``until`` arrives."""
        for _ in range(limit):
            self.inb.write(self.sim.take())
            try:
                while True:
                    chunk = self.ssl.read(65536)
                    if not chunk:
                        break
                    self.plain += chunk
            except ssl.SSLWantReadError:
                pass
            self._flush()
            if until in self.plain:
                break
            if not self.sim.tick() and not self.sim.out:
                break
        data = bytes(self.plain)
        self.plain.clear()
        return data


def fuzz(bait: Any, chunks: list[bytes], bound: int) -> Sim:
    """Feed ``chunks`` to one client, a tick after each: the kept input stays
    within ``bound`` and the bait's safety net never fires (``errors``)."""
    sim = Sim(bait)
    for chunk in chunks:
        if sim.closed:
            break
        sim.feed(chunk)
        if isinstance(sim.obj, Conn):
            assert len(sim.obj.buf) <= bound
        sim.tick()
    assert bait.errors == 0
    for value in sim.notes.values():
        assert value.isprintable() and len(value) <= 256
    return sim
