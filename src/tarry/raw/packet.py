"""IPv4/IPv6 + TCP headers: read from bytes, write with checksums.

Everything here reads what a peer sent, so ``parse`` is total: any bytes give
a ``Segment`` or ``None``, never an exception, and every length it trusts is
checked against the bytes that are really there. Fragments, IPv6 extension
headers and jumbograms are not TCP a tarpit needs to read: they give ``None``.

Receive checksums are not checked: on loopback and with offload the kernel
hands packets over with the checksum still to be filled in, and a forged
segment must prove a cookie or hit a known 4-tuple in window anyway.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

MSS = 536  # what the SYN-ACK offers: small, and the least any IPv4 host must take
WINDOW = 1024  # what we advertise: a client never has much to say to a tarpit
TTL = 64
MAX_OPTIONS = 40  # a TCP header is at most 60 bytes, 20 of them fixed
SACK_OK = b"\x01\x01\x04\x02"  # NOP, NOP, SACK-permitted: keeps options 4-byte aligned

_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_PSEUDO4 = struct.Struct("!4s4sBBH")
_PSEUDO6 = struct.Struct("!16s16sIxxxB")
_MSS_OPTION = struct.Struct("!BBH")
_LITTLE = sys.byteorder == "little"


@dataclass(frozen=True, slots=True)
class Segment:
    """One TCP segment as read off the wire; addresses stay packed (4 or 16 bytes)."""

    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    options: bytes
    payload: bytes


def parse(frame: bytes | bytearray | memoryview) -> Segment | None:
    """The TCP segment in an IP packet that starts at ``frame[0]``, or ``None``."""
    data = bytes(frame)
    if len(data) < 20:
        return None
    version = data[0] >> 4
    if version == 4:
        return _parse4(data)
    if version == 6:
        return _parse6(data)
    return None


def _parse4(data: bytes) -> Segment | None:
    vihl, _tos, total, _id, frag, _ttl, proto, _sum, src, dst = _IP4.unpack_from(data)
    ihl = (vihl & 0x0F) * 4
    if proto != 6 or ihl < 20 or frag & 0x3FFF or not ihl <= total <= len(data):
        return None  # not TCP, a fragment, or lengths that the bytes don't back
    return _parse_tcp(src, dst, data[ihl:total])


def _parse6(data: bytes) -> Segment | None:
    if len(data) < 40:
        return None
    _vtf, length, next_header, _hops, src, dst = _IP6.unpack_from(data)
    if next_header != 6 or length == 0 or 40 + length > len(data):
        return None
    return _parse_tcp(src, dst, data[40 : 40 + length])


def _parse_tcp(src: bytes, dst: bytes, tcp: bytes) -> Segment | None:
    if len(tcp) < 20:
        return None
    sport, dport, seq, ack, offset, flags, window, _sum, _urg = _TCP.unpack_from(tcp)
    header = (offset >> 4) * 4
    if not 20 <= header <= len(tcp):
        return None
    return Segment(src, dst, sport, dport, seq, ack, flags, window, tcp[20:header], tcp[header:])


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``, as a big-endian 16-bit value."""
    if len(data) % 2:
        data += b"\0"
    words = array("H", data)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    total = ~total & 0xFFFF
    # a one's-complement sum is the same in either byte order, only swapped
    return ((total & 0xFF) << 8 | total >> 8) if _LITTLE else total


def build(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    window: int = WINDOW,
    mss: int = 0,
    sack_ok: bool = False,
) -> bytes:
    """An IP packet (IPv4 if ``src`` has 4 bytes, IPv6 if 16) carrying one TCP
    segment, every checksum filled in; ``mss`` adds the MSS option and
    ``sack_ok`` SACK-permitted (both for a SYN-ACK)."""
    options = (_MSS_OPTION.pack(2, 4, mss) if mss else b"") + (SACK_OK if sack_ok else b"")
    tcp_len = 20 + len(options) + len(payload)
    header = _TCP.pack(
        sport,
        dport,
        seq & 0xFFFFFFFF,
        ack & 0xFFFFFFFF,
        (20 + len(options)) << 2,
        flags,
        window,
        0,
        0,
    )
    segment = header + options + payload
    if len(src) == 4:
        pseudo = _PSEUDO4.pack(src, dst, 0, 6, tcp_len)
    else:
        pseudo = _PSEUDO6.pack(src, dst, tcp_len, 6)
    segment = segment[:16] + struct.pack("!H", checksum(pseudo + segment)) + segment[18:]
    if len(src) == 4:
        ip = _IP4.pack(0x45, 0, 20 + tcp_len, 0, 0x4000, TTL, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    else:
        ip = _IP6.pack(6 << 28, tcp_len, 6, TTL, src, dst)
    return ip + segment
