"""SSH transport wire format, only as much as a tarpit needs (RFC 4253).

Binary packets before the first NEWKEYS: no cipher, no MAC, so a packet is

    uint32 packet_length | byte padding_length | payload | padding

with at least 4 bytes of padding and ``4 + packet_length`` a multiple of 8.
Everything here is pure functions over bytes; nothing keeps per-client data.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Sequence

MSG_IGNORE = 2
MSG_KEXINIT = 20

BLOCK = 8  # cipher block size "none" rounds to (RFC 4253 §6)
COOKIE_LEN = 16

# The order of the ten name-lists in a KEXINIT (RFC 4253 §7.1).
KEX, HOSTKEY, ENC_CS, ENC_SC, MAC_CS, MAC_SC, CMP_CS, CMP_SC, LANG_CS, LANG_SC = range(10)

# What a stock OpenSSH 9.2p1 sshd (Debian 12 before the December 2023 Terrapin
# update) offers with its three default host keys. It predates strict KEX, so the
# absence of "kex-strict-s-v00@openssh.com" is consistent with the version string.
OPENSSH_92_SERVER: tuple[str, ...] = (
    "sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,"
    "ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,"
    "diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,"
    "diffie-hellman-group18-sha512,diffie-hellman-group14-sha256",
    "rsa-sha2-512,rsa-sha2-256,ecdsa-sha2-nistp256,ssh-ed25519",
    "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,"
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,"
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com",
    "umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,"
    "hmac-sha2-512-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-64@openssh.com,"
    "umac-128@openssh.com,hmac-sha2-256,hmac-sha2-512,hmac-sha1",
    "umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,"
    "hmac-sha2-512-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-64@openssh.com,"
    "umac-128@openssh.com,hmac-sha2-256,hmac-sha2-512,hmac-sha1",
    "none,zlib@openssh.com",
    "none,zlib@openssh.com",
    "",
    "",
)

STRICT_KEX_MARKERS = ("kex-strict-s-v00@openssh.com", "kex-strict-c-v00@openssh.com")


def padding_for(payload_len: int, block: int = BLOCK) -> int:
    """The least padding (>= 4) that makes the packet a whole number of blocks."""
    pad = block - (5 + payload_len) % block
    return pad + block if pad < 4 else pad


def frame(
    payload: bytes, rand: Callable[[int], bytes] = os.urandom, extra_blocks: int = 0
) -> bytes:
    """One cleartext binary packet around ``payload``, random padding."""
    pad = padding_for(len(payload)) + BLOCK * extra_blocks
    if pad > 255:
        raise ValueError("padding longer than 255 bytes")
    return struct.pack(">IB", 1 + len(payload) + pad, pad) + payload + rand(pad)


def string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def kexinit_payload(lists: Sequence[str], cookie: bytes) -> bytes:
    """SSH_MSG_KEXINIT: cookie, ten name-lists, first_kex_packet_follows=0, reserved=0."""
    if len(lists) != 10 or len(cookie) != COOKIE_LEN:
        raise ValueError("a KEXINIT needs ten name-lists and a 16-byte cookie")
    body = b"".join(string(name.encode("ascii")) for name in lists)
    return bytes([MSG_KEXINIT]) + cookie + body + b"\x00" + b"\x00\x00\x00\x00"


def ignore_payload(data: bytes) -> bytes:
    """SSH_MSG_IGNORE carrying ``data`` (RFC 4253 §11.2)."""
    return bytes([MSG_IGNORE]) + string(data)


class KexinitTemplate:
    """A server KEXINIT packet whose cookie and padding are fresh random bytes
    on every read, so one template serves every client: a client's progress
    through it is just an offset, and no two clients see the same bytes."""

    def __init__(self, lists: Sequence[str]) -> None:
        payload = kexinit_payload(lists, bytes(COOKIE_LEN))
        self.packet = frame(payload, rand=bytes)
        self.cookie = (5 + 1, 5 + 1 + COOKIE_LEN)
        self.padding = (5 + len(payload), len(self.packet))

    def __len__(self) -> int:
        return len(self.packet)

    def piece(self, start: int, end: int, rand: Callable[[int], bytes] = os.urandom) -> bytes:
        """Bytes ``start:end`` of the packet, random where the cookie or padding lie."""
        out = bytearray(self.packet[start:end])
        for lo, hi in (self.cookie, self.padding):
            a, b = max(lo, start), min(hi, end)
            if a < b:
                out[a - start : b - start] = rand(b - a)
        return bytes(out)


# --- reading what a client sends -------------------------------------------------


class WireError(ValueError):
    """The peer's bytes are not a well-formed packet (or exceed our bounds)."""


def read_packet(buf: bytes | bytearray, limit: int) -> tuple[bytes, int] | None:
    """The payload of the first packet in ``buf`` and the bytes it used, or None
    while incomplete. Raises WireError on a length outside ``5 .. limit`` or a bad
    padding length, before waiting for (and buffering) a body that large."""
    if len(buf) < 5:
        return None
    length, pad = struct.unpack_from(">IB", buf)
    if length < 5 or length > limit:
        raise WireError(f"packet length {length}")
    if pad < 4 or pad + 1 > length:
        raise WireError(f"padding length {pad}")
    if len(buf) < 4 + length:
        return None
    return bytes(buf[5 : 4 + length - pad]), 4 + length


def parse_kexinit(payload: bytes) -> list[str]:
    """The ten name-lists of a KEXINIT payload (type byte included)."""
    if len(payload) < 1 + COOKIE_LEN or payload[0] != MSG_KEXINIT:
        raise WireError("not a KEXINIT")
    at = 1 + COOKIE_LEN
    lists: list[str] = []
    for _ in range(10):
        if at + 4 > len(payload):
            raise WireError("truncated name-list")
        (n,) = struct.unpack_from(">I", payload, at)
        at += 4
        if at + n > len(payload):
            raise WireError("name-list overruns the packet")
        lists.append(payload[at : at + n].decode("latin-1"))
        at += n
    if at + 5 > len(payload):
        raise WireError("no first_kex_packet_follows / reserved")
    return lists


def hassh(lists: Sequence[str]) -> tuple[str, str]:
    """The HASSH of a client KEXINIT: MD5 over "kex;ciphers;macs;compression",
    client-to-server lists, as the HASSH project (Salesforce) defines it."""
    raw = ";".join((lists[KEX], lists[ENC_CS], lists[MAC_CS], lists[CMP_CS]))
    return hashlib.md5(raw.encode("latin-1"), usedforsecurity=False).hexdigest(), raw
