"""check-config runs serve's checks of the files serve opens after its
privilege drop (issue 18 item 5): a log file the user cannot open fails both,
with the same one line, and a writable one passes both."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support import Tarry

CONFIG = """
[[tarpit]]
protocol = "ssh"
listen = ["127.0.0.1:0"]

[log]
file = "{log}"

[history]
enabled = false
"""


def locked_dir(tmp_path: Path) -> Path:
    """A directory the user serve runs as cannot write: root's 0700 one when the
    tests run as root (serve becomes nobody), else a 0500 one of our own."""
    d = tmp_path / "locked"
    d.mkdir(mode=0o700 if os.geteuid() == 0 else 0o500)
    os.chmod(d, 0o700 if os.geteuid() == 0 else 0o500)
    return d


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tarry", "check-config", "--no-bind", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_log_file_the_user_cannot_open_fails_check_config_as_it_fails_serve(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0 and os.access(locked_dir(tmp_path), os.W_OK):
        pytest.skip("this user can write anywhere")
    conf = tmp_path / "t.toml"
    conf.write_text(CONFIG.format(log=locked_dir(tmp_path) / "tarry.log"))
    r = check(conf)
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "tarry.log" in lines[0] and "not writable by" in lines[0], lines
    assert "Traceback" not in r.stderr
    t = Tarry(["serve", "-c", str(conf)])
    assert t.proc.wait(30) == 1
    t.stop()
    assert any("tarry.log" in line for line in t.err), t.err


def test_a_writable_log_file_passes(tmp_path: Path) -> None:
    # serve, as root, becomes nobody: a directory anyone may reach and write
    logs = Path(tempfile.mkdtemp(prefix="tarry-logs-"))
    try:
        os.chmod(logs, 0o777)
        conf = tmp_path / "t.toml"
        conf.write_text(CONFIG.format(log=logs / "tarry.log"))
        r = check(conf)
        assert r.returncode == 0, r.stderr
        assert not (logs / "tarry.log").exists()  # a check creates nothing
    finally:
        shutil.rmtree(logs)
