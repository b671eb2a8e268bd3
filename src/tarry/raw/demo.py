"""A tiny driver of the raw stack's parts, for tests and for trying it by hand.

    python -m tarry.raw.demo --listen 127.0.0.1:2222=ssh --listen 127.0.0.1:8080=http

It answers real clients with no kernel socket: ``ssh`` listeners send a fixed
line at once and again every ``--every`` seconds (endlessh's trick); ``http``
listeners send a status line after the request and then a header line per
tick. It prints OPEN, DATA (a byte count, never peer text) and CLOSE lines.
It is not the engine: it keeps a dict per client and a plain loop over them,
which the engine replaces with its row table and timer wheel (see
docs/raw-stack.md); it exists to show the parts hold real clients.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from dataclasses import dataclass

from . import bpf, caps, nftables, packet, tcp
from .cookie import Cookies
from .index import RowIndex, tuple_key
from .ring import Ring, RingError, Sender

LINE = b"tarry raw demo: please hold\r\n"
STATUS, HEADER = b"HTTP/1.1 200 OK\r\n", b"X-Tarry: raw-demo\r\n"
MAX_CLIENTS = 4096


@dataclass(frozen=True)
class Listener:
    host: bytes  # packed; empty for any address
    port: int
    kind: str  # "ssh" or "http"


@dataclass
class Peer:
    """Demo bookkeeping the engine keeps in its row table instead."""

    src: bytes
    dst: bytes
    sport: int
    dport: int
    key: bytes
    kind: str
    isn: int  # our first sequence number + 1: stream offset 0
    started: bool


def stream(kind: str, offset: int, length: int) -> bytes:
    """The bytes a client of ``kind`` is sent from ``offset``: fixed, so a hole
    the client reports can be sent again without keeping what was sent."""
    prefix, line = (b"", LINE) if kind == "ssh" else (STATUS, HEADER)
    out = bytearray()
    while len(out) < length:
        if offset < len(prefix):
            piece = prefix[offset:]
        else:
            at = (offset - len(prefix)) % len(line)
            piece = line[at:]
        piece = piece[: length - len(out)]
        out += piece
        offset += len(piece)
    return bytes(out)


def parse_listen(text: str) -> Listener:
    where, _, kind = text.rpartition("=")
    if kind not in ("ssh", "http") or not where:
        raise ValueError(f"--listen {text!r}: want HOST:PORT=ssh or HOST:PORT=http")
    host, _, port = where.rpartition(":")
    host = host.strip("[]")
    if host in ("*", ""):
        packed = b""
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            packed = socket.inet_pton(family, host)
        except OSError:
            raise ValueError(f"--listen {text!r}: {host!r} is not an IP address") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {text!r}: port {port!r} is not 1 to 65535")
    return Listener(packed, int(port), kind)


def show(address: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(address) == 4 else socket.AF_INET6, address)


def say(*words: object) -> None:
    print(*words, flush=True)


class Demo:
    def __init__(self, listeners: list[Listener], every: float) -> None:
        self.listeners, self.every = listeners, every
        self.cookies = Cookies()
        self.index = RowIndex(lambda row: self.peers[row].key)
        self.conns = tcp.Conns(MAX_CLIENTS)
        self.free = list(range(MAX_CLIENTS - 1, -1, -1))
        self.peers: dict[int, Peer] = {}
        v4 = [x.host for x in listeners if len(x.host) == 4]
        v6 = [x.host for x in listeners if len(x.host) == 16]
        anyhost = any(not x.host for x in listeners)
        ports = sorted({x.port for x in listeners})
        self.ring = Ring(bpf.program(ports, [] if anyhost else v4, [] if anyhost else v6, tcp.TAG))
        self.sender = Sender()
        self.out: list[bytes] = []

    def _listener(self, seg: packet.Segment) -> int:
        for n, x in enumerate(self.listeners):
            if x.port == seg.dport and x.host in (b"", seg.dst):
                return n
        return -1

    def _emit(self, seg: packet.Segment, replies: tuple[tcp.Out, ...] | list[tcp.Out]) -> None:
        for r in replies:
            self.out.append(
                packet.build(
                    seg.dst,
                    seg.src,
                    seg.dport,
                    seg.sport,
                    r.seq,
                    r.ack,
                    r.flags,
                    r.payload,
                    mss=packet.MSS if r.syn_options else 0,
                    sack_ok=r.syn_options,
                )
            )

    def _to(self, peer: Peer, replies: list[tcp.Out]) -> None:
        for r in replies:
            self.out.append(
                packet.build(
                    peer.dst, peer.src, peer.dport, peer.sport, r.seq, r.ack, r.flags, r.payload
                )
            )

    def readable(self) -> None:
        for raw in self.ring.packets():
            seg = packet.parse(raw)
            if seg is not None:
                self.segment(seg)
        self.flush()

    def segment(self, seg: packet.Segment) -> None:
        n = self._listener(seg)
        if n < 0:
            return
        key = tuple_key(seg.src, seg.sport, n)
        row = self.index.get(key)
        if row < 0:
            result, snd, rcv = tcp.accept(self.cookies, seg)
            self._emit(seg, result.replies)
            if not result.opened:
                return
            if not self.free:
                self._emit(seg, [tcp.Out(seg.ack, 0, packet.RST)])
                return
            row = self.free.pop()
            self.conns.start(row, snd, rcv)
            kind = self.listeners[n].kind
            peer = Peer(seg.src, seg.dst, seg.sport, seg.dport, key, kind, snd, kind == "ssh")
            self.peers[row] = peer
            self.index.put(key, row)  # after the row holds its key: RowIndex reads it
            say("OPEN", show(seg.src), seg.sport, kind)
            if peer.started:
                self._to(peer, tcp.send(self.conns, row, stream(kind, 0, len(LINE))))
        result = tcp.receive(self.conns, row, seg)
        self._emit(seg, result.replies)
        peer = self.peers[row]
        if result.data:
            say("DATA", show(seg.src), seg.sport, len(result.data))
            if not peer.started and not result.closed:
                peer.started = True
                self._to(peer, tcp.send(self.conns, row, STATUS))
        if result.closed:
            self.drop(row, result.closed)

    def drop(self, row: int, reason: str) -> None:
        self.index.pop(self.peers[row].key)  # while the row still holds its key
        peer = self.peers.pop(row)
        self.free.append(row)
        say("CLOSE", show(peer.src), peer.sport, reason)

    def tick(self) -> None:
        for row, peer in self.peers.items():
            if not peer.started:
                continue
            seq, length = tcp.resend(self.conns, row)
            if length:
                offset = (seq - peer.isn) & tcp.MASK
                again = stream(peer.kind, offset, min(length, 4 * packet.MSS))
                rcv = self.conns.rcv[row]
                self._to(peer, [tcp.Out(seq, rcv, packet.PSH | packet.ACK, again)])
            offset = (self.conns.snd[row] - peer.isn) & tcp.MASK
            line = LINE if peer.kind == "ssh" else HEADER
            self._to(peer, tcp.send(self.conns, row, stream(peer.kind, offset, len(line))))
        self.flush()

    def flush(self) -> None:
        if self.out:
            self.sender.send(self.out)
            self.out = []

    def goodbye(self) -> None:
        """Close every client with a FIN, as a kernel socket's close would."""
        for row, peer in list(self.peers.items()):
            self._to(peer, [tcp.close(self.conns, row)])
            self.drop(row, "shutdown")
        self.flush()


async def serve(demo: Demo, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_reader(demo.ring.fileno(), demo.readable)

    async def ticks() -> None:
        while True:
            await asyncio.sleep(demo.every)
            demo.tick()

    ticker = asyncio.create_task(ticks())
    say("READY")
    try:
        await asyncio.wait_for(stop.wait(), seconds if seconds > 0 else None)
    except TimeoutError:
        pass
    ticker.cancel()
    loop.remove_reader(demo.ring.fileno())
    demo.goodbye()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tarry.raw.demo", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--listen", action="append", required=True, help="HOST:PORT=ssh or =http")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between lines")
    ap.add_argument(
        "--seconds", type=float, default=0, help="stop after this long (0: on a signal)"
    )
    ap.add_argument(
        "--no-table",
        action="store_true",
        help="install no nftables table: the control that shows the kernel's RSTs it prevents",
    )
    args = ap.parse_args(argv)
    try:
        listeners = [parse_listen(text) for text in args.listen]
    except ValueError as exc:
        print(f"tarry.raw.demo: {exc}", file=sys.stderr)
        return 2
    lacking = caps.missing()
    if lacking:
        print(f"tarry.raw.demo: {lacking}", file=sys.stderr)
        return 2
    targets = [(show(x.host) if x.host else "*", x.port) for x in listeners]
    try:
        if nftables.present():
            say("STALE removed a table inet tarry left by an earlier run")
        if not args.no_table:
            nftables.install(targets)
    except nftables.NftError as exc:
        print(f"tarry.raw.demo: {exc}", file=sys.stderr)
        return 2
    try:
        demo = Demo(listeners, args.every)
        asyncio.run(serve(demo, args.seconds))
    except RingError as exc:
        print(f"tarry.raw.demo: {exc}", file=sys.stderr)
        return 2
    finally:
        nftables.remove()
    say("EXIT")
    return 0


if __name__ == "__main__":
    sys.exit(main())
