"""IPv4/IPv6 + TCP headers of the raw stack: total on hostile bytes, right checksums."""

from __future__ import annotations

import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from tarry.raw import packet
from tarry.raw.packet import ACK, FIN, PSH, SYN, Segment, build, checksum, parse

A4, B4 = socket.inet_aton("192.0.2.1"), socket.inet_aton("198.51.100.7")
A6, B6 = (
    socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
    socket.inet_pton(socket.AF_INET6, "2001:db8::2"),
)


def reference_sum(data: bytes) -> int:
    """RFC 1071 written the slow, obvious way: big-endian words, end-around carry."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_ipv4_header_checksum_known_vector():
    # the worked example of an IPv4 header with its checksum (b861) zeroed
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert checksum(header) == 0xB861


def test_rfc1071_worked_example():
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (one's complement: 220d)
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


@given(st.binary(max_size=300))
def test_checksum_matches_the_obvious_reference(data):
    assert checksum(data) == reference_sum(data)


def verify(raw: bytes) -> None:
    """Every checksum of a built packet sums to zero over what it covers."""
    if raw[0] >> 4 == 4:
        assert checksum(raw[:20]) == 0
        tcp = raw[20:]
        pseudo = raw[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
    else:
        tcp = raw[40:]
        pseudo = raw[8:40] + struct.pack("!I3xB", len(tcp), 6)
    assert reference_sum(pseudo + tcp) == 0


def test_build_then_parse_ipv4_syn_ack_with_mss():
    raw = build(A4, B4, 22, 40000, 0xFFFFFFFF, 7, SYN | ACK, mss=packet.MSS)
    verify(raw)
    seg = parse(raw)
    assert seg == Segment(A4, B4, 22, 40000, 0xFFFFFFFF, 7, SYN | ACK, packet.WINDOW,
                          struct.pack("!BBH", 2, 4, packet.MSS), b"")  # fmt: skip
    assert struct.unpack("!H", raw[2:4])[0] == len(raw)
    assert raw[6] & 0x40  # don't fragment


def test_build_then_parse_ipv6_data():
    raw = build(A6, B6, 2222, 50000, 1, 2, PSH | ACK, b"SSH-2.0-x\r\n")
    verify(raw)
    seg = parse(raw)
    assert seg is not None
    assert (seg.src, seg.dst, seg.payload, seg.options) == (A6, B6, b"SSH-2.0-x\r\n", b"")
    assert struct.unpack("!H", raw[4:6])[0] == len(raw) - 40


def test_trailing_link_padding_is_not_payload():
    raw = build(A4, B4, 1, 2, 3, 4, ACK | FIN)
    seg = parse(raw + b"\0" * 6)  # Ethernet pads short frames
    assert seg is not None and seg.payload == b""


def test_what_is_not_plain_tcp_gives_none():
    raw = bytearray(build(A4, B4, 1, 2, 3, 4, ACK, b"hello"))
    assert parse(bytes(raw[:30])) is None  # cut short of its total length
    frag = bytearray(raw)
    frag[6:8] = b"\x20\x00"  # more fragments
    assert parse(bytes(frag)) is None
    udp = bytearray(raw)
    udp[9] = 17
    assert parse(bytes(udp)) is None
    six = bytearray(build(A6, B6, 1, 2, 3, 4, ACK))
    six[6] = 0  # hop-by-hop options first: not read
    assert parse(bytes(six)) is None
    bad_offset = bytearray(raw)
    bad_offset[32] = 0xF0  # a TCP header of 60 bytes in a 25-byte segment
    assert parse(bytes(bad_offset)) is None
    assert parse(b"") is None and parse(b"\x45" * 19) is None


@settings(max_examples=2000)
@given(st.binary(max_size=200))
def test_parse_is_total_on_garbage(data):
    seg = parse(data)
    assert seg is None or len(seg.payload) <= len(data)


@settings(max_examples=500)
@given(
    st.sampled_from([(A4, B4), (A6, B6)]),
    st.integers(0, 65535), st.integers(0, 65535),
    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
    st.integers(0, 0x3F), st.binary(max_size=600), st.sampled_from([0, 536, 1460]), st.booleans(),
)  # fmt: skip
def test_build_parse_roundtrip(pair, sport, dport, seq, ack, flags, payload, mss, sack_ok):
    raw = build(*pair, sport, dport, seq, ack, flags, payload, mss=mss, sack_ok=sack_ok)
    verify(raw)
    seg = parse(raw)
    assert seg is not None
    assert (seg.src, seg.dst, seg.sport, seg.dport) == (*pair, sport, dport)
    assert (seg.seq, seg.ack, seg.flags, seg.payload) == (seq, ack, flags, payload)
    assert seg.options.endswith(packet.SACK_OK if sack_ok else b"")
    assert len(seg.options) == (4 if mss else 0) + (4 if sack_ok else 0)


@settings(max_examples=1000)
@given(st.binary(min_size=1, max_size=120), st.integers(0, 79))
def test_parse_survives_any_corruption_of_a_real_packet(noise, at):
    raw = bytearray(build(A4, B4, 1, 2, 3, 4, ACK, b"x" * 40))
    raw[at : at + len(noise)] = noise
    parse(bytes(raw))  # total: no exception whatever the bytes
