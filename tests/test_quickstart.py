"""The README's first command, as a new user runs it: ``make run`` from a fresh
clone, with Debian's own (externally managed, PEP 668) python3 first on PATH."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from support import ADMIN_DEFAULT_GROUP, IN_CI, wait_until

pytestmark = ADMIN_DEFAULT_GROUP  # the embedded defaults serve the dashboard on 8787

REPO = Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = Path("/usr/bin/python3")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")  # a client: adaptive answers with a version
            s.settimeout(5)
            return s.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


@pytest.mark.realclient
def test_make_run_from_a_fresh_clone_with_debians_python(tmp_path: Path) -> None:
    if not DEBIAN_PYTHON.exists() or not Path("/usr/lib/python3/dist-packages").exists():
        if IN_CI:
            pytest.fail("CI runs on Debian: /usr/bin/python3 must be there")
        pytest.skip("not a Debian python3")
    for port in (2222, 8080, 2525):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip(f"port {port} is taken: the embedded defaults need it")
    clone = tmp_path / "tarry"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin:/usr/sbin:/sbin"  # Debian's python3 first, nothing else
    log = (tmp_path / "make.log").open("w+")
    proc = subprocess.Popen(
        ["make", "run"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(
            lambda: _answers(2222) or proc.poll() is not None, 600, "tarry's SSH tarpit on :2222"
        )
        log.seek(0)
        out = log.read()
        assert proc.poll() is None, out[-3000:]
        assert "externally-managed-environment" not in out
        assert "LISTEN proto=ssh listener=" in out and "mode=adaptive" in out
        assert (clone / ".venv" / "bin" / "tarry").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
