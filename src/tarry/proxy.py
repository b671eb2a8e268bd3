"""The PROXY protocol (HAProxy's, versions 1 and 2), sans-I/O.

A load balancer in front of tarry prepends one header to each connection that
names the real peer. ``parse`` looks at the bytes received so far and says one
of three things: not enough yet (None), a complete header (a ``Header``, whose
``length`` says where the peer's own bytes begin), or a malformed one
(``ProxyError``, whose text is fit for one log line). It keeps no state, so the
engine can hold the partial bytes in the per-client ``obj`` slot.

Both versions are bounded: a v1 line is at most 107 bytes (the spec's limit),
and a v2 header at most ``V2_MAX`` bytes (16 fixed bytes, the addresses, and
the TLVs, which are skipped unread). A peer that sends more, or anything that is
not a header, is an error, never a reason to buffer more.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (spec section 2.1)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/transport, length
V2_MAX = 2048  # addresses and TLVs: generous for HAProxy, AWS, GCP and Azure TLVs
V2_ADDRESS = {1: 12, 2: 36, 3: 216}  # AF_INET, AF_INET6, AF_UNIX: bytes of addresses and ports


class ProxyError(ValueError):
    """A header that is malformed, unsupported or too long; one line of text."""


class Header(NamedTuple):
    """A complete PROXY header."""

    length: int
    """Bytes the header took; what follows belongs to the peer."""
    version: int
    family: int | None
    """socket.AF_INET or AF_INET6; None when the header names no usable address
    (v1 UNKNOWN, v2 LOCAL, UNSPEC or UNIX): the connection's own peer counts."""
    src: str = ""
    src_port: int = 0
    dst: str = ""
    dst_port: int = 0


def parse(buf: bytes | bytearray | memoryview, v2_max: int = V2_MAX) -> Header | None:
    """A header at the start of ``buf``, None if more bytes are needed."""
    data = bytes(buf[: max(V1_MAX, V2_FIXED + v2_max)])
    if data[:1] == b"P":
        if not V1_PREFIX.startswith(data[:6]):
            raise ProxyError(f"not a PROXY header: starts with {_show(data[:6])}")
        return _parse_v1(data)
    if data[:1] == b"\r":
        if not V2_SIGNATURE.startswith(data[:12]):
            raise ProxyError(f"not a PROXY header: starts with {_show(data[:12])}")
        return _parse_v2(data, v2_max)
    if not data:
        return None
    raise ProxyError(f"not a PROXY header: starts with {_show(data[:12])}")


def _parse_v1(data: bytes) -> Header | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyError(f"PROXY v1 line longer than {V1_MAX} bytes")
        if b"\n" in data or (b"\r" in data and not data.endswith(b"\r")):
            raise ProxyError("PROXY v1 line does not end with CRLF")
        return None
    line = data[:end]
    if not all(0x20 <= b < 0x7F for b in line):
        raise ProxyError("PROXY v1 line has a byte that is not printable ASCII")
    parts = line.decode("ascii").split(" ")
    proto = parts[1] if len(parts) > 1 else ""
    if proto == "UNKNOWN":
        return Header(end + 2, 1, None)
    if proto not in ("TCP4", "TCP6"):
        raise ProxyError(f"PROXY v1: unknown protocol {proto[:8]!r} (TCP4, TCP6 or UNKNOWN)")
    if len(parts) != 6:
        raise ProxyError(f"PROXY v1: {len(parts) - 2} fields after {proto}, not 4")
    family = socket.AF_INET if proto == "TCP4" else socket.AF_INET6
    src, dst = (_address(family, text) for text in parts[2:4])
    sport, dport = (_port(text) for text in parts[4:6])
    return Header(end + 2, 1, family, src, sport, dst, dport)


def _address(family: int, text: str) -> str:
    try:
        raw = socket.inet_pton(family, text)
    except (OSError, ValueError):
        kind = "IPv4" if family == socket.AF_INET else "IPv6"
        raise ProxyError(f"PROXY v1: {text[:48]!r} is not an {kind} address") from None
    return socket.inet_ntop(family, raw)


def _port(text: str) -> int:
    if (
        not (text.isdigit() and text.isascii())
        or len(text) > 5
        or (len(text) > 1 and text[0] == "0")
    ):
        raise ProxyError(f"PROXY v1: {text[:8]!r} is not a port number")
    value = int(text)
    if value > 65535:
        raise ProxyError(f"PROXY v1: port {value} is out of range")
    return value


def _parse_v2(data: bytes, v2_max: int) -> Header | None:
    if len(data) < V2_FIXED:
        return None
    ver_cmd, fam, length = struct.unpack_from("!BBH", data, 12)
    if ver_cmd >> 4 != 2:
        raise ProxyError(f"PROXY v2: version {ver_cmd >> 4}, not 2")
    command = ver_cmd & 0xF
    if command > 1:
        raise ProxyError(f"PROXY v2: unknown command {command}")
    if length > v2_max:
        raise ProxyError(
            f"PROXY v2: header of {V2_FIXED + length} bytes, above {V2_FIXED + v2_max}"
        )
    if len(data) < V2_FIXED + length:
        return None
    total = V2_FIXED + length
    family, transport = fam >> 4, fam & 0xF
    if family > 3 or transport > 2:
        raise ProxyError(f"PROXY v2: unknown address family/transport byte 0x{fam:02x}")
    if command == 0 or family in (0, 3):  # LOCAL (a health check), or no IP address
        if command == 1 and family == 3 and length < V2_ADDRESS[3]:
            raise ProxyError("PROXY v2: UNIX addresses are cut short")
        return Header(total, 2, None)
    need = V2_ADDRESS[family]
    if length < need:
        raise ProxyError(f"PROXY v2: {length} bytes of addresses, fewer than {need}")
    body = data[V2_FIXED:]
    if family == 1:
        af, size = socket.AF_INET, 4
    else:
        af, size = socket.AF_INET6, 16
    src = socket.inet_ntop(af, body[:size])
    dst = socket.inet_ntop(af, body[size : 2 * size])
    sport, dport = struct.unpack_from("!HH", body, 2 * size)
    return Header(total, 2, af, src, sport, dst, dport)


def _show(raw: bytes) -> str:
    return repr(raw)[2:-1][:48]


# ---- encoders, for tests and for anyone testing a tarry behind a balancer --------------


def v1(src: str, src_port: int, dst: str, dst_port: int) -> bytes:
    """A v1 line; the family follows from ``src``."""
    proto = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {proto} {src} {dst} {src_port} {dst_port}\r\n".encode("ascii")


def v2(
    src: str | None,
    src_port: int = 0,
    dst: str | None = None,
    dst_port: int = 0,
    tlvs: bytes = b"",
    local: bool = False,
) -> bytes:
    """A v2 header: PROXY over TCP with ``src``, or LOCAL (or UNSPEC with src None)."""
    if local or src is None:
        return V2_SIGNATURE + struct.pack("!BBH", 0x20 if local else 0x21, 0x00, len(tlvs)) + tlvs
    af = socket.AF_INET6 if ":" in src else socket.AF_INET
    dst = dst or ("::" if af == socket.AF_INET6 else "0.0.0.0")
    addresses = (
        socket.inet_pton(af, src)
        + socket.inet_pton(af, dst)
        + struct.pack("!HH", src_port, dst_port)
    )
    fam = 0x21 if af == socket.AF_INET6 else 0x11
    body = addresses + tlvs
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, fam, len(body)) + body
