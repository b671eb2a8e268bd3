"""The raw stack's packet filter: run by a small cBPF interpreter here, and by
the kernel in the ring's namespace test (test_raw_ring.py)."""

from __future__ import annotations

import socket
import struct

import pytest

from tarry.raw import bpf
from tarry.raw.packet import ACK, FIN, PSH, RST, SYN, build
from tarry.raw.tcp import TAG

ME4, ME6 = socket.inet_aton("127.0.0.1"), socket.inet_pton(socket.AF_INET6, "::1")
PEER4, PEER6 = socket.inet_aton("127.0.0.9"), socket.inet_pton(socket.AF_INET6, "::9")
HOST, OUTGOING = 0, 4


def run(code: bytes, packet: bytes, pkttype: int = HOST) -> int:
    """Interpret a cBPF program the way the kernel does, for the opcodes it uses."""
    ins = [struct.unpack_from("HBBI", code, i) for i in range(0, len(code), 8)]
    proto = 0x0800 if packet[0] >> 4 == 4 else 0x86DD
    a = x = pc = 0
    mem = [0] * 16

    def load(at: int, size: int) -> int | None:
        if at >= 2**31:
            at -= 2**32
        if at == bpf.SKF_AD_OFF + bpf.SKF_AD_PKTTYPE:
            return pkttype
        if at == bpf.SKF_AD_OFF + bpf.SKF_AD_PROTOCOL:
            return proto
        if at < 0 or at + size > len(packet):
            return None  # out of bounds: the kernel returns 0 (drop)
        return int.from_bytes(packet[at : at + size], "big")

    while True:
        op, jt, jf, k = ins[pc]
        pc += 1
        size = {0x00: 4, 0x08: 2, 0x10: 1}.get(op & 0x18, 4)
        if op == bpf.RET_K:
            return k
        if op in (bpf.LD_W_ABS, bpf.LD_H_ABS, bpf.LD_B_ABS, bpf.LD_H_IND, bpf.LD_B_IND):
            got = load(k + (x if op & 0x40 else 0), size)
            if got is None:
                return 0
            a = got
        elif op == bpf.LDX_B_MSH:
            x = 4 * (packet[k] & 0x0F)
        elif op == bpf.ST:
            mem[k] = a
        elif op == bpf.LDX_MEM:
            x = mem[k]
        elif op == bpf.ADD_X:
            a = (a + x) & 0xFFFFFFFF
        elif op == bpf.AND_K:
            a &= k
        elif op == bpf.RSH_K:
            a >>= k
        elif op == bpf.TAX:
            x = a
        elif op == bpf.JA:
            pc += k
        elif op in (bpf.JEQ_K, bpf.JGT_K, bpf.JSET_K, bpf.JGT_X):
            other = x if op == bpf.JGT_X else k
            hit = {
                bpf.JEQ_K: a == k,
                bpf.JGT_K: a > k,
                bpf.JSET_K: bool(a & k),
                bpf.JGT_X: a > other,
            }[op]
            pc += jt if hit else jf
        elif op == bpf.RET_K:
            return k
        else:
            raise AssertionError(f"opcode {op:#x} not interpreted")


PROGRAMS = {
    "listed": bpf.program([2222, 2223], [ME4], [ME6], TAG),
    "any": bpf.program([2222, 2223], [], [], TAG),
}


def to_tarpit(
    src: bytes, dst: bytes, flags: int, payload: bytes = b"", ack: int = 1000, port: int = 2222
) -> bytes:
    return build(src, dst, 40000, port, 1, ack, flags, payload)


@pytest.mark.parametrize("which", sorted(PROGRAMS))
@pytest.mark.parametrize(("src", "dst"), [(PEER4, ME4), (PEER6, ME6)])
def test_what_passes_and_what_stays_in_the_kernel(which, src, dst):
    code = PROGRAMS[which]
    passes = {
        "syn": to_tarpit(src, dst, SYN),
        "fin": to_tarpit(src, dst, FIN | ACK),
        "rst": to_tarpit(src, dst, RST),
        "data": to_tarpit(src, dst, PSH | ACK, b"hello"),
        "one byte": to_tarpit(src, dst, ACK, b"x"),
        "handshake ack": to_tarpit(src, dst, ACK, ack=0x12345600 | TAG),
        "other port": to_tarpit(src, dst, SYN, port=2223),
    }
    for what, packet in passes.items():
        assert run(code, packet) == bpf.SNAP, what
    sack = bytearray(build(src, dst, 40000, 2222, 1, 1000, ACK, b"\x01\x01\x05\x0a" + bytes(8)))
    # the same bytes as options, not payload: a pure ACK with a SACK block
    tcp_at = 20 if src == PEER4 else 40
    sack[tcp_at + 12] = (20 + 12) << 2
    assert run(code, bytes(sack)) == bpf.SNAP, "sack"
    stays = {
        "pure ack": to_tarpit(src, dst, ACK),
        "pure ack, other low byte": to_tarpit(src, dst, ACK, ack=0x12345600 | (TAG ^ 1)),
        "unlisted port": to_tarpit(src, dst, SYN, port=22),
        "our own": to_tarpit(src, dst, SYN),
    }
    for what, packet in stays.items():
        assert run(code, packet, OUTGOING if what == "our own" else HOST) == 0, what


def test_listed_addresses_only():
    other4 = socket.inet_aton("127.0.0.2")
    other6 = socket.inet_pton(socket.AF_INET6, "::2")
    assert run(PROGRAMS["listed"], to_tarpit(PEER4, other4, SYN)) == 0
    assert run(PROGRAMS["listed"], to_tarpit(PEER6, other6, SYN)) == 0
    assert run(PROGRAMS["any"], to_tarpit(PEER4, other4, SYN)) == bpf.SNAP


def test_not_tcp_and_fragments_stay():
    udp = bytearray(to_tarpit(PEER4, ME4, SYN))
    udp[9] = 17
    assert run(PROGRAMS["any"], bytes(udp)) == 0
    frag = bytearray(to_tarpit(PEER4, ME4, SYN))
    frag[6:8] = b"\x00\x10"
    assert run(PROGRAMS["any"], bytes(frag)) == 0
    ext = bytearray(to_tarpit(PEER6, ME6, SYN))
    ext[6] = 0
    assert run(PROGRAMS["any"], bytes(ext)) == 0


def test_the_assembler_refuses_long_and_backward_jumps():
    asm = bpf.Asm()
    asm.label("top")
    asm(bpf.JEQ_K, 1, "top")
    with pytest.raises(ValueError, match="backward"):
        asm.assemble()
    asm = bpf.Asm()
    asm(bpf.JEQ_K, 1, "far")
    for _ in range(300):
        asm(bpf.RET_K, 0)
    asm.label("far")
    with pytest.raises(ValueError, match="longer than 255"):
        asm.assemble()


def test_many_addresses_still_fit():
    hosts = [bytes([10, 0, 0, n]) for n in range(40)]
    hosts6 = [bytes(15) + bytes([100 + n]) for n in range(40)]
    code = bpf.program(list(range(2000, 2100)), hosts, hosts6, TAG)
    assert run(code, to_tarpit(PEER4, hosts[-1], SYN, port=2099)) == bpf.SNAP
    assert run(code, to_tarpit(PEER6, hosts6[-1], SYN, port=2099)) == bpf.SNAP
    assert run(code, to_tarpit(PEER6, ME6, SYN, port=2099)) == 0
