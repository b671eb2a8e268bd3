"""Capture what the installed OpenSSH client sends first: its identification line and
its KEXINIT packet. Used by bench/sshmem.py and tests/test_ssh_modes.py."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

SERVER_ID = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u1\r\n"


def capture_openssh_hello(timeout: float = 10.0) -> bytes | None:
    """The client's identification line and whole first packet; None without ssh."""
    ssh = shutil.which("ssh")
    if ssh is None:
        return None
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        srv.settimeout(timeout)
        cmd = [ssh, "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]
        cmd += ["-o", "UserKnownHostsFile=/dev/null", "-p", str(srv.getsockname()[1])]
        proc = subprocess.Popen(
            [*cmd, "127.0.0.1", "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(timeout)
                conn.sendall(SERVER_ID)
                buf = b""
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                    nl = buf.find(b"\n")
                    if nl >= 0 and len(buf) >= nl + 5:
                        need = nl + 5 + int.from_bytes(buf[nl + 1 : nl + 5], "big")
                        if len(buf) >= need:
                            return buf[:need]
            raise RuntimeError("ssh sent no whole KEXINIT")
        finally:
            proc.kill()
            proc.wait()
