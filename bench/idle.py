"""Idle memory: what tarry holds before any client arrives, next to endlessh.

Starts each subject on free loopback ports, waits until it listens and has
been quiet for ``--settle`` seconds, reads VmRSS from /proc, and ends it by
its PID. The subjects:

- ``tarry serve``, the embedded defaults (listeners moved to free ports, the
  history in a temporary state directory, the dashboard on a free port);
- ``tarry serve``, the same with the dashboard, metrics and countries off;
- ``tarry ssh`` (endlessh's flags, banner mode);
- Debian's ``endlessh`` (``apt-get install endlessh``), when installed.

Usage: python bench/idle.py [--settle 3] [--python PYTHON]
Run it as the user tarry runs as: as root, tarry drops to nobody first and
loads what its config needs before the switch, which is what it then holds.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sshmem import rss

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def defaults(extra: str) -> str:
    """The embedded defaults on free loopback ports, plus ``extra`` sections."""
    from tarry.config import DEFAULT_CONFIG

    text = DEFAULT_CONFIG
    for old in ("*:2222", "*:8080", "*:2525"):
        text = text.replace(old, f"127.0.0.1:{free_port()}")
    return extra + "\n" + text


def measure(argv: list[str], port: int, settle: float, env: dict[str, str]) -> int:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 30
        while not listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not listen on {port}")
            time.sleep(0.05)
        time.sleep(settle)
        return rss(proc.pid) // 1024
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settle", type=float, default=3.0, help="seconds idle before reading RSS")
    ap.add_argument("--python", default=sys.executable, help="the Python that runs tarry")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    state = tempfile.mkdtemp(prefix="tarry-idle-")
    os.chmod(state, 0o755)  # tarry as root hands it to nobody
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "XDG_STATE_HOME": state,
        "STATE_DIRECTORY": state,
    }
    rows: list[tuple[str, int]] = []
    tarry = [args.python, "-m", "tarry"]
    cases = (
        ("tarry serve (embedded defaults)", f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'),
        (
            "tarry serve (defaults; no dashboard, metrics, countries)",
            '[admin]\nlisten = ""\n[metrics]\nenabled = false\n[geo]\nenabled = false\n',
        ),
    )
    for name, extra in cases:
        text = defaults(extra)
        path = Path(state) / "tarry.toml"
        path.write_text(text)
        port = int(re.findall(r'listen = \["127\.0\.0\.1:(\d+)"\]', text)[0])
        rows.append((name, measure([*tarry, "serve", "-c", str(path)], port, args.settle, env)))
    port = free_port()
    rows.append(("tarry ssh", measure([*tarry, "ssh", "-p", str(port)], port, args.settle, env)))
    endlessh = shutil.which("endlessh")
    if endlessh:
        port = free_port()
        rows.append(("endlessh", measure([endlessh, "-p", str(port)], port, args.settle, env)))
    else:
        print("endlessh is not installed (apt-get install endlessh): not measured")
    shutil.rmtree(state, ignore_errors=True)
    width = max(len(n) for n, _ in rows)
    for name, kb in rows:
        print(f"{name:<{width}}  {kb / 1024:6.1f} MB RSS idle")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
