"""The command line as a user meets it: --version, a manual page's worth of --help for
every command, and the package installed from a wheel into a fresh virtualenv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tarry import __version__

REPO = Path(__file__).resolve().parent.parent


def tarry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tarry", *args], capture_output=True, text=True, timeout=30
    )


def test_version() -> None:
    r = tarry("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"tarry {__version__}"


@pytest.mark.parametrize(
    ("args", "must"),
    [
        (
            [],
            ["commands:", "exit status:", "see also:", "tarry serve", "tarry ssh", "tarry report"],
        ),
        (
            ["serve"],
            [
                "signals:",
                "SIGHUP",
                "SIGUSR1",
                "privileges:",
                "systemd:",
                "environment:",
                "LISTEN_FDS",
                "NOTIFY_SOCKET",
                "files:",
                "exit status:",
                "examples:",
                "max_clients_per_ip",
                "proxy_protocol",
                "[limits]",
            ],
        ),
        (["check-config"], ["FILE", "--no-bind", "exit status:", "example:"]),
        (["default-config"], ["example:", "tarry default-config >"]),
        (["report"], ["--since", "--db", "exit status:", "examples:"]),
        (["ssh"], ["Usage: tarry ssh", "-p INT", "/etc/endlessh/config", "SIGHUP", "exit status:"]),
    ],
    ids=["tarry", "serve", "check-config", "default-config", "report", "ssh"],
)
def test_every_command_has_a_manual_page(args, must) -> None:
    r = tarry(*args, "--help")
    assert r.returncode == 0, r.stderr
    for text in must:
        assert text in r.stdout, f"{text!r} missing from tarry {' '.join(args)} --help"
    assert max(len(line) for line in r.stdout.splitlines()) <= 100


def test_ssh_dash_h_is_endlessh_usage_exactly() -> None:
    from tarry.cli import ENDLESSH_USAGE

    r = tarry("ssh", "-h")
    assert r.returncode == 0 and r.stdout == ENDLESSH_USAGE


def test_check_config_no_bind(tmp_path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "t.toml"
        cfg.write_text(f'[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:{port}"]\n')
        r = tarry("check-config", str(cfg))
        assert r.returncode == 1 and "address already in use" in r.stderr
        assert r.stderr.count("\n") == 1
        r = tarry("check-config", "--no-bind", str(cfg))
        assert r.returncode == 0 and "OK, 1 tarpit(s)" in r.stdout


def test_wheel_installs_into_a_fresh_venv_with_its_console_script(tmp_path) -> None:
    """`pip install .` as a user runs it, offline: build the wheel here, install it in a venv."""
    wheels = tmp_path / "wheels"
    # build from a copy: setuptools leaves build/ and an egg-info behind it
    tree = tmp_path / "tree"
    shutil.copytree(
        REPO,
        tree,
        ignore=shutil.ignore_patterns(
            ".git", "build", "*.egg-info", "__pycache__", ".*cache", ".hypothesis", "artifacts"
        ),
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(wheels),
            str(tree),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=env,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("tarry-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = next(n for n in names if n.endswith("METADATA"))
        metadata = z.read(meta).decode()
    for module in ("proxy", "systemd", "privileges", "limits", "manual", "engine", "cli"):
        assert f"tarry/{module}.py" in names
    for extra in ("tls", "geo", "metrics", "dashboard", "fast", "postgres", "all"):
        assert f"Provides-Extra: {extra}" in metadata
    assert "uvloop" in metadata
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=180)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    script = venv / "bin" / "tarry"
    r = subprocess.run([str(script), "--version"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip() == f"tarry {__version__}"
    r = subprocess.run(
        [str(script), "default-config"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert r.returncode == 0 and "[[tarpit]]" in r.stdout
    # the core runs on the standard library alone: no extra is installed in this venv
    cfg = tmp_path / "t.toml"
    cfg.write_text(r.stdout)
    r = subprocess.run(
        [str(script), "check-config", "--no-bind", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
