"""Receive through a TPACKET_V3 ring, send in batches: the raw stack's I/O.

``Ring`` is an ``AF_PACKET`` socket with the filter of ``bpf.py`` and a
``PACKET_RX_RING`` of version 3 mapped into memory. The kernel fills blocks of
packets and hands a block over when it is full or ``retire_ms`` after its
first packet, so one wake-up reads many packets and an idle tarpit is never
woken. The descriptor is non-blocking and goes into the event loop as it is
(``fileno``); when it is readable, ``packets()`` yields each IP packet.

``Sender`` writes whole IP packets through raw IP sockets (``IPPROTO_RAW``,
so the kernel routes them and resolves neighbours), one ``sendmmsg`` call per
batch, through ctypes: the socket module has no ``sendmmsg``.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import socket
import struct
from collections.abc import Iterator

from .. import cbpf

SOL_PACKET = 263
PACKET_RX_RING, PACKET_VERSION = 5, 10
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
TP_STATUS_KERNEL, TP_STATUS_USER = 0, 1
BLOCK_SIZE = 1 << 18  # 256 KiB: a few thousand small segments per block
BLOCKS = 8
FRAME_SIZE = 2048  # only a unit for the kernel's accounting in version 3
RETIRE_MS = 4  # the most a packet waits in a block that is not full
_REQ3 = struct.Struct("7I")
_BLOCK = struct.Struct("4I")  # version, offset_to_priv, block_status, num_pkts
_FIRST = struct.Struct("I")  # offset_to_first_pkt, at 16
_PKT = struct.Struct("IIIIIIHH")  # next_offset, sec, nsec, snaplen, len, status, mac, net
MSG_DONTWAIT = 0x40
BATCH = 1024  # segments per sendmmsg call


class RingError(Exception):
    """The kernel lacks what the ring needs, or we lack the right: one line."""


class Ring:
    """A filtered AF_PACKET socket read through a TPACKET_V3 ring."""

    def __init__(
        self,
        filter_code: bytes,
        block_size: int = BLOCK_SIZE,
        blocks: int = BLOCKS,
        retire_ms: int = RETIRE_MS,
    ) -> None:
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise RingError('stack = "raw" needs CAP_NET_RAW to open a packet socket') from None
        try:
            cbpf.attach(self.sock, filter_code)
            self._drain()  # what came in before the filter was attached
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            req = _REQ3.pack(
                block_size, blocks, FRAME_SIZE, block_size * blocks // FRAME_SIZE, retire_ms, 0, 0
            )
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.map = mmap.mmap(self.sock.fileno(), block_size * blocks, mmap.MAP_SHARED)
        except OSError as exc:
            self.sock.close()
            raise RingError(
                f"the kernel refused a TPACKET_V3 receive ring: {exc.strerror}"
            ) from None
        self.sock.setblocking(False)
        self._size, self._count, self._next = block_size, blocks, 0

    def _drain(self) -> None:
        while True:
            try:
                self.sock.recv(1, MSG_DONTWAIT)
            except BlockingIOError:
                return

    def fileno(self) -> int:
        return self.sock.fileno()

    def packets(self) -> Iterator[bytes]:
        """Every IP packet in the blocks the kernel has handed over, oldest first;
        each block goes back to the kernel once its packets are read."""
        view, size = self.map, self._size
        while True:
            base = self._next * size
            _version, _priv, status, count = _BLOCK.unpack_from(view, base)
            if not status & TP_STATUS_USER:
                return
            at = base + _FIRST.unpack_from(view, base + 16)[0]
            for _ in range(count):
                following, _s, _ns, snaplen, _len, _st, _mac, net = _PKT.unpack_from(view, at)
                yield view[at + net : at + net + snaplen]
                at += following
            struct.pack_into("I", view, base + 8, TP_STATUS_KERNEL)
            self._next = (self._next + 1) % self._count

    def close(self) -> None:
        self.map.close()
        self.sock.close()


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_Iovec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


_libc = ctypes.CDLL(None, use_errno=True)
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint, ctypes.c_int]
_sendmmsg.restype = ctypes.c_int


def _sockaddr(packet: bytes) -> bytes:
    """The destination of an IP packet as a sockaddr, port 0, for a raw socket."""
    if packet[0] >> 4 == 4:
        return struct.pack("=H", socket.AF_INET) + b"\0\0" + packet[16:20] + bytes(8)
    return struct.pack("=H", socket.AF_INET6) + bytes(6) + packet[24:40] + bytes(4)


class Sender:
    """Raw IPv4 and IPv6 sockets that send whole IP packets, many per system call."""

    def __init__(self) -> None:
        try:
            self.v4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            self.v6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        except PermissionError:
            raise RingError('stack = "raw" needs CAP_NET_RAW to open a raw socket') from None
        for sock in (self.v4, self.v6):
            sock.setblocking(False)
        self.dropped = 0  # packets the kernel had no room for: sent again on a tick
        self.calls = 0

    def send(self, packets: list[bytes]) -> int:
        """Send ``packets`` (IP packets, either family); the number sent."""
        sent = 0
        for sock, version in ((self.v4, 4), (self.v6, 6)):
            mine = [p for p in packets if p[0] >> 4 == version]
            for at in range(0, len(mine), BATCH):
                sent += self._batch(sock, mine[at : at + BATCH])
        self.dropped += len(packets) - sent
        return sent

    def _batch(self, sock: socket.socket, packets: list[bytes]) -> int:
        n = len(packets)
        names = [_sockaddr(p) for p in packets]
        data = ctypes.create_string_buffer(b"".join(packets))
        addrs = ctypes.create_string_buffer(b"".join(names))
        iov = (_Iovec * n)()
        msgs = (_Mmsghdr * n)()
        base, abase, off, aoff = ctypes.addressof(data), ctypes.addressof(addrs), 0, 0
        for i, (packet, name) in enumerate(zip(packets, names, strict=True)):
            iov[i].base, iov[i].len = base + off, len(packet)
            hdr = msgs[i].hdr
            hdr.name, hdr.namelen = abase + aoff, len(name)
            hdr.iov, hdr.iovlen = ctypes.pointer(iov[i]), 1
            off += len(packet)
            aoff += len(name)
        done = refused = 0
        while done < n:
            self.calls += 1
            got = _sendmmsg(sock.fileno(), ctypes.byref(msgs[done]), n - done, MSG_DONTWAIT)
            if got < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                if err in (errno.EAGAIN, errno.ENOBUFS):
                    break
                done += 1  # this one packet was refused (say, no route): skip it
                refused += 1
                continue
            done += got
        return done - refused

    def close(self) -> None:
        self.v4.close()
        self.v6.close()
