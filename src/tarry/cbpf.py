"""A classic BPF (cBPF) assembler, for the programs tarry hands the kernel:
the workers' reuseport steering (tarry.workers) and the raw stack's packet
filter (tarry.raw.bpf)."""

from __future__ import annotations

import ctypes
import socket
import struct
from dataclasses import dataclass, field

# opcodes (linux/filter.h, linux/bpf_common.h)
LD_W_ABS, LD_H_ABS, LD_B_ABS = 0x20, 0x28, 0x30
LD_H_IND, LD_B_IND = 0x48, 0x50
LDX_B_MSH = 0xB1  # X = 4 * (packet[k] & 0x0f): an IPv4 header's length
LD_MEM, LDX_MEM, ST = 0x60, 0x61, 0x02
ADD_X, AND_K, RSH_K, MUL_K, MOD_K, XOR_X = 0x0C, 0x54, 0x74, 0x24, 0x94, 0xAC
TAX = 0x07
JA, JEQ_K, JGT_K, JSET_K, JGT_X = 0x05, 0x15, 0x25, 0x45, 0x2D
RET_K, RET_A = 0x06, 0x16
SO_ATTACH_FILTER = 26
SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h>; not in the socket module


@dataclass
class Asm:
    """A cBPF assembler with forward labels: conditional jumps take a label or
    None (the next instruction); ``assemble`` checks each fits in 8 bits."""

    code: list[tuple[int, int, str | None, str | None]] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)

    def __call__(self, op: int, k: int = 0, jt: str | None = None, jf: str | None = None) -> None:
        self.code.append((op, k, jt, jf))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> bytes:
        out = []
        for i, (op, k, jt, jf) in enumerate(self.code):
            t, f = self._offset(i, jt), self._offset(i, jf)
            if op == JA:
                k, t, f = t, 0, 0
            elif not (t <= 255 and f <= 255):
                raise ValueError(
                    "a filter jump is longer than 255 instructions: too many addresses or ports"
                )
            out.append(struct.pack("HBBI", op, t, f, k & 0xFFFFFFFF))
        return b"".join(out)

    def _offset(self, i: int, label: str | None) -> int:
        if label is None:
            return 0
        target = self.labels[label]
        if target <= i:
            raise ValueError(f"backward jump to {label}")
        return target - i - 1


def attach(sock: socket.socket, code: bytes, option: int = SO_ATTACH_FILTER) -> None:
    """Attach the program ``code`` to ``sock`` with socket option ``option``."""
    buf = ctypes.create_string_buffer(code, len(code))
    prog = struct.pack("@HP", len(code) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, option, prog)
