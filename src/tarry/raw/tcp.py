"""Per-client TCP for the raw stack, sans-I/O: segments in, decisions out.

Theory of operation. A tarpit's TCP is a small subset of TCP, and this module
is all of it:

- A SYN is answered with a SYN-ACK whose sequence number is a cookie
  (``cookie.py``); nothing is stored. The cookie's low byte is fixed to
  ``TAG - 1``, so the handshake's ACK acknowledges a number whose low byte is
  ``TAG``: the packet filter (``bpf.py``) passes such pure ACKs and no others,
  and a client that waits for a banner is still seen to have connected.
- A segment from a 4-tuple with no row opens one when its ACK proves the
  cookie (``accept``); any other segment but a RST gets a RST, as from a
  closed port.
- With a row (``receive``): data that starts at the next byte we expect is
  delivered, at most ``WINDOW`` bytes of it, and ACKed; data after a gap is
  dropped and re-ACKed, so the client sends it again; a FIN in order closes
  with "closed" and is answered FIN+ACK; a RST in the window closes with
  "reset"; a SYN gets a challenge ACK (RFC 5961), to which a client that
  restarted answers RST.
- Output (``send``) goes out at once and is not kept. Pure ACKs stay in the
  kernel, so we do not see which output arrived, except when a client reports
  a hole: the SYN-ACK offers SACK and no timestamps, so a pure ACK carries
  options only when it has SACK blocks, and the filter passes those. That
  marks the row ``LOST``, and on its next tick (``resend``) the bytes from the
  hole on are sent again from the sender's bounded store of recent output.
  No retransmission timer of its own: the engine's ticks are the clock.

State per client is three 32-bit sequence numbers and a flag byte, in columns
(``Conns``), 13 of 16 bytes; the 3 spare bytes are for the engine.
"""

from __future__ import annotations

from array import array
from typing import NamedTuple

from .cookie import Cookies
from .packet import ACK, FIN, MSS, PSH, RST, SYN, WINDOW, Segment

TAG = 0xA5  # the low byte of the ACK that completes a handshake; see bpf.py
LOST = 0x01  # the client reported a hole: send from ``una`` again on the next tick
FIN_SENT = 0x02  # we closed our side; our FIN took a sequence number
MASK = 0xFFFFFFFF
MAC_BITS = 0xFFFFFF00  # a cookie keeps 24 bits of MAC, as Linux's syncookies do
BYTES_PER_CLIENT = 16  # 3 x uint32 + flags, padded; see docs/raw-stack.md


class Out(NamedTuple):
    """A segment to send back to the peer of the segment that caused it."""

    seq: int
    ack: int
    flags: int
    payload: bytes = b""
    syn_options: bool = False  # MSS and SACK-permitted (a SYN-ACK)


class Result(NamedTuple):
    """What one segment did: replies to send, and what the engine must hear."""

    replies: tuple[Out, ...] = ()
    opened: bool = False
    data: bytes = b""
    closed: str = ""  # the CLOSE reason, "" while the row lives


NOTHING = Result()


class Conns:
    """The TCP columns of every row: ``snd`` (our next sequence number), ``una``
    (the oldest of ours not known to be acknowledged), ``rcv`` (theirs we expect
    next), ``flags``. Rows are the engine's; this only grows with them."""

    def __init__(self, rows: int = 0) -> None:
        self.snd = array("I", bytes(4 * rows))
        self.una = array("I", bytes(4 * rows))
        self.rcv = array("I", bytes(4 * rows))
        self.flags = bytearray(rows)

    def __len__(self) -> int:
        return len(self.flags)

    def grow(self, rows: int) -> None:
        """Room for ``rows`` rows in all (never shrinks: rows are reused)."""
        extra = rows - len(self.flags)
        if extra > 0:
            for column in (self.snd, self.una, self.rcv):
                column.frombytes(bytes(4 * extra))
            self.flags.extend(bytes(extra))

    def start(self, row: int, snd: int, rcv: int) -> None:
        self.snd[row] = self.una[row] = snd & MASK
        self.rcv[row] = rcv & MASK
        self.flags[row] = 0


def isn_for(cookies: Cookies, seg: Segment) -> int:
    """Our initial sequence number for a SYN: the cookie, low byte ``TAG - 1``."""
    mac = cookies.make(seg.src, seg.dst, seg.sport, seg.dport, seg.seq)
    return (mac & MAC_BITS) | (TAG - 1)


def accept(cookies: Cookies, seg: Segment) -> tuple[Result, int, int]:
    """A segment from a 4-tuple that has no row: ``(result, snd, rcv)``; when
    ``result.opened``, the caller gives it a row, ``Conns.start(row, snd, rcv)``,
    and passes the same segment to ``receive`` for its data or FIN."""
    flags = seg.flags
    if flags & RST:
        return NOTHING, 0, 0
    if flags & SYN:
        if flags & ACK:  # a SYN-ACK to us: we never connect anywhere
            return Result((Out(seg.ack, 0, RST),)), 0, 0
        reply = Out(isn_for(cookies, seg), seg.seq + 1 & MASK, SYN | ACK, syn_options=True)
        return Result((reply,)), 0, 0
    if flags & ACK:
        ours, theirs = seg.ack - 1 & MASK, seg.seq - 1 & MASK
        if ours & 0xFF == TAG - 1 and cookies.check(
            seg.src, seg.dst, seg.sport, seg.dport, theirs, ours, MAC_BITS
        ):
            return Result(opened=True), seg.ack, seg.seq
        return Result((Out(seg.ack, 0, RST),)), 0, 0
    return NOTHING, 0, 0  # no ACK, no SYN, no RST: not TCP anyone sends


def _in_window(seq: int, start: int) -> bool:
    return (seq - start) & MASK < WINDOW


def receive(c: Conns, row: int, seg: Segment) -> Result:
    """A segment for a client that has a row."""
    flags, rcv = seg.flags, c.rcv[row]
    if flags & RST:
        return Result(closed="reset") if _in_window(seg.seq, rcv) else NOTHING
    if flags & SYN:
        return Result((_ack(c, row),))
    if flags & ACK:
        _acked(c, row, seg)
    payload = seg.payload
    data = b""
    if payload:
        behind = (rcv - seg.seq) & MASK
        if behind == 0 or behind < len(payload):
            data = payload[behind : behind + WINDOW]
            rcv = c.rcv[row] = (rcv + len(data)) & MASK
        elif behind < 0x80000000:  # all of it old: a retransmission we have
            return Result((_ack(c, row),))
        else:  # after a gap: drop it, and say what we expect
            return Result((_ack(c, row),))
    if flags & FIN and (seg.seq + len(payload)) & MASK == rcv:
        c.rcv[row] = (rcv + 1) & MASK
        reply = Out(c.snd[row], c.rcv[row], FIN | ACK)
        c.snd[row] = (c.snd[row] + 1) & MASK
        c.flags[row] |= FIN_SENT
        return Result((reply,), data=data, closed="closed")
    if data:
        return Result((_ack(c, row),), data=data)
    return NOTHING


def _ack(c: Conns, row: int) -> Out:
    return Out(c.snd[row], c.rcv[row], ACK)


def _acked(c: Conns, row: int, seg: Segment) -> None:
    """Move ``una`` up to what the peer acknowledges; a SACK block means a hole."""
    una, snd = c.una[row], c.snd[row]
    ahead = (seg.ack - una) & MASK
    if 0 < ahead <= (snd - una) & MASK:
        c.una[row] = una = seg.ack
    if seg.options and not seg.payload and una != snd and seg.ack == una:
        c.flags[row] |= LOST


def send(c: Conns, row: int, payload: bytes) -> list[Out]:
    """Segments that carry ``payload`` to the client, ``MSS`` bytes at most each."""
    out = []
    snd, rcv = c.snd[row], c.rcv[row]
    for at in range(0, len(payload), MSS):
        chunk = payload[at : at + MSS]
        out.append(Out(snd, rcv, PSH | ACK, chunk))
        snd = (snd + len(chunk)) & MASK
    c.snd[row] = snd
    return out


def resend(c: Conns, row: int) -> tuple[int, int]:
    """On a tick: ``(seq, length)`` of the bytes to send again when the client
    reported a hole, else ``(0, 0)``. Clears the mark: one try per report."""
    if not c.flags[row] & LOST:
        return 0, 0
    c.flags[row] &= ~LOST & 0xFF
    return c.una[row], (c.snd[row] - c.una[row]) & MASK


def close(c: Conns, row: int, reset: bool = False) -> Out:
    """The segment that ends a client we drop: FIN+ACK, or RST when ``reset``."""
    if reset:
        return Out(c.snd[row], 0, RST)
    return Out(c.snd[row], c.rcv[row], FIN | ACK)
