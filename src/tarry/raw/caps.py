"""What a host lacks for ``stack = "raw"``, said in one line.

The raw stack needs CAP_NET_RAW (the packet ring and the raw sockets),
CAP_NET_ADMIN (its nftables table), the ``nft`` program, and a Linux kernel
with TPACKET_V3 rings (3.2 and later). ``missing()`` checks all of them
before anything is opened, so start-up can stop with one line that names
every gap at once instead of the first error it would hit.
"""

from __future__ import annotations

import shutil
import socket
import sys

CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
SOL_PACKET, PACKET_VERSION, TPACKET_V3 = 263, 10, 2


def effective_caps(status: str = "/proc/self/status") -> int:
    """The effective capability set of this process, as a bit mask (0 if unknown)."""
    try:
        with open(status) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _tpacket_v3() -> bool | None:
    """Whether the kernel takes TPACKET_V3; None when we cannot tell (no CAP_NET_RAW)."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    except PermissionError:
        return None
    except OSError:
        return False
    with sock:
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        except OSError:
            return False
    return True


def missing(nft: str = "nft", caps: int | None = None) -> str | None:
    """None when the raw stack can start here; else one line naming what is missing."""
    if not sys.platform.startswith("linux"):
        return f'stack = "raw" runs on Linux only, not on {sys.platform}'
    have = effective_caps() if caps is None else caps
    gaps = [
        name
        for bit, name in ((CAP_NET_RAW, "CAP_NET_RAW"), (CAP_NET_ADMIN, "CAP_NET_ADMIN"))
        if not have >> bit & 1
    ]
    if shutil.which(nft) is None:
        gaps.append(f"the nft program ({nft!r} is not on PATH; Debian: apt install nftables)")
    if have >> CAP_NET_RAW & 1 and _tpacket_v3() is False:
        gaps.append("a kernel with TPACKET_V3 packet rings (Linux 3.2 or later)")
    if not gaps:
        return None
    return 'stack = "raw" cannot start: missing ' + ", ".join(gaps)
