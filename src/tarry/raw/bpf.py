"""The classic BPF program of the raw stack's packet socket, and its assembler.

The filter runs in the kernel on every packet the host sees, so it decides
what wakes tarry at all. It passes TCP to the tarpit's addresses and ports
that carries SYN, FIN or RST, a payload, TCP options (a SACK block: see
tcp.py), or an acknowledgment number whose low byte is ``tcp.TAG`` (the
handshake's ACK). Everything else, above all the pure ACKs a held client sends
for every line, stays in the kernel, where the nftables table drops it.
Packets we send ourselves (``PACKET_OUTGOING``) never pass.

Offsets are from the network header: the socket is ``SOCK_DGRAM``.

The assembler is tarry.cbpf's, which the workers' steering uses too.
"""

from __future__ import annotations

from ..cbpf import (
    ADD_X,
    AND_K,
    JA,
    JEQ_K,
    JGT_K,
    JGT_X,
    JSET_K,
    LD_B_ABS,
    LD_B_IND,
    LD_H_ABS,
    LD_H_IND,
    LD_W_ABS,
    LDX_B_MSH,
    LDX_MEM,
    RET_K,
    RSH_K,
    ST,
    TAX,
    Asm,
)
from .packet import FIN, RST, SYN

SKF_AD_OFF, SKF_AD_PROTOCOL, SKF_AD_PKTTYPE = -0x1000, 0, 4
PACKET_OUTGOING = 4
SNAP = 0xFFFF  # pass a whole packet; bait input is bounded by the TCP window anyway


def _any_of(asm: Asm, values: list[int], ok: str, drop: str) -> None:
    """Jump to ``ok`` when A is one of ``values``, else to ``drop``."""
    for value in values:
        asm(JEQ_K, value, ok)
    asm(JA, 0, drop)


def _addresses(asm: Asm, hosts: list[bytes], at: int, ok: str, drop: str) -> None:
    """Jump to ``ok`` when the destination address at offset ``at`` is in ``hosts``."""
    if not hosts:
        asm(JA, 0, ok)
        return
    for n, host in enumerate(hosts):
        miss = f"{ok}-miss-{n}"
        for word in range(0, len(host), 4):
            asm(LD_W_ABS, at + word)
            asm(JEQ_K, int.from_bytes(host[word : word + 4], "big"), None, miss)
        asm(JA, 0, ok)
        asm.label(miss)
    asm(JA, 0, drop)


def _wanted(asm: Asm, load: int, tcp_at: int, tag: int, ok: str) -> None:
    """Jump to ``ok`` for SYN, FIN or RST, the handshake's ACK (``tag``), or TCP
    options (a SACK block); else leave the TCP header's length in A."""
    asm(load, tcp_at + 13)
    asm(JSET_K, SYN | FIN | RST, ok)
    asm(load, tcp_at + 11)  # the low byte of the acknowledgment number
    asm(JEQ_K, tag, ok)
    asm(load, tcp_at + 12)
    asm(AND_K, 0xF0)
    asm(RSH_K, 2)
    asm(JGT_K, 20, ok)


def _to_us(
    asm: Asm,
    family: str,
    hosts: list[bytes],
    addr_at: int,
    ports: list[int],
    tcp: tuple[int, int, int],
    tag: int,
) -> None:
    """Drop what is not to one of our addresses and ports; pass what ``_wanted``
    wants. ``tcp`` is the half-word load, byte load and offset that reach TCP."""
    _addresses(asm, hosts, addr_at, f"{family}-addr", f"{family}-drop")
    asm.label(f"{family}-addr")
    asm(tcp[0], tcp[2] + 2)
    _any_of(asm, ports, f"{family}-port", f"{family}-drop")
    asm.label(f"{family}-port")
    _wanted(asm, tcp[1], tcp[2], tag, f"{family}-pass")


def _unless(asm: Asm, op: int, k: int, ok: str) -> None:
    """Drop right here unless the test holds: a drop too far away to jump to."""
    asm(op, k, ok)
    asm(RET_K, 0)
    asm.label(ok)


def _ends(asm: Asm, section: str) -> None:
    """A section's own pass and drop, so its conditional jumps stay short."""
    asm.label(f"{section}-pass")
    asm(RET_K, SNAP)
    asm.label(f"{section}-drop")
    asm(RET_K, 0)


def program(ports: list[int], v4: list[bytes], v6: list[bytes], tag: int) -> bytes:
    """The filter for ``ports`` on IPv4 addresses ``v4`` and IPv6 ``v6`` (packed);
    an empty list of a family's addresses means any address of it."""
    asm = Asm()
    asm(LD_W_ABS, SKF_AD_OFF + SKF_AD_PKTTYPE)
    asm(JEQ_K, PACKET_OUTGOING, "head-drop")
    asm(LD_H_ABS, SKF_AD_OFF + SKF_AD_PROTOCOL)
    asm(JEQ_K, 0x0800, "v4")
    asm(JEQ_K, 0x86DD, None, "head-drop")
    asm(JA, 0, "v6")
    asm.label("head-drop")
    asm(RET_K, 0)

    asm.label("v4")
    asm(LD_B_ABS, 9)
    _unless(asm, JEQ_K, 6, "v4-tcp")
    asm(LD_H_ABS, 6)
    asm(JSET_K, 0x3FFF, None, "v4-whole")  # a fragment: its TCP header is not all here
    asm(RET_K, 0)
    asm.label("v4-whole")
    asm(LDX_B_MSH, 0)  # X: where TCP starts, for the loads relative to it
    _to_us(asm, "v4", v4, 16, ports, (LD_H_IND, LD_B_IND, 0), tag)
    asm(ADD_X)
    asm(ST, 0)
    asm(LDX_MEM, 0)
    asm(LD_H_ABS, 2)
    asm(JGT_X, 0, "v4-pass", "v4-drop")  # total length > both headers: a payload
    _ends(asm, "v4")

    asm.label("v6")
    asm(LD_B_ABS, 6)
    _unless(asm, JEQ_K, 6, "v6-tcp")  # TCP right after the fixed header; no extension headers
    _to_us(asm, "v6", v6, 24, ports, (LD_H_ABS, LD_B_ABS, 40), tag)
    asm(TAX)
    asm(LD_H_ABS, 4)
    asm(JGT_X, 0, "v6-pass", "v6-drop")  # payload length > the TCP header: a payload
    _ends(asm, "v6")
    return asm.assemble()
