"""``tarry top`` in a real 80x24 terminal (tmux) against a real ``tarry serve``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from support import need, need_module, start_tarry, wait_until
from tarry.top import said

CONFIG = (
    '[history]\nenabled = false\n[admin]\nlisten = "127.0.0.1:0"\n'
    '[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:0"]\ndelay = 0.2\n'
    '[[tarpit]]\nprotocol = "http"\nlisten = ["127.0.0.1:0"]\ndelay = 0.2\n'
)


class Pane:
    """One tmux session on a private server (its own socket), 80x24."""

    def __init__(self, tmux: str, name: str, command: list[str]) -> None:
        self.base = [tmux, "-L", name, "-f", "/dev/null"]
        subprocess.run(
            [*self.base, "new-session", "-d", "-x", "80", "-y", "24", "-s", "top", *command],
            check=True,
            timeout=10,
        )

    def text(self) -> list[str]:
        out = subprocess.run(
            [*self.base, "capture-pane", "-p", "-t", "top"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.splitlines()

    def alive(self) -> bool:
        return subprocess.run([*self.base, "has-session", "-t", "top"], timeout=10).returncode == 0

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "top", *keys], check=True, timeout=10)

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], stderr=subprocess.DEVNULL, timeout=10)


def test_top_shows_a_real_tarry_in_80x24_and_quits_on_q():
    tmux = need("tmux")
    curl = need("curl")
    need_module("rich")
    t = start_tarry(CONFIG)
    pane = None
    held = []
    try:
        url = t.wait_for(r" ADMIN listener=\S+ url=(\S+)", timeout=10).group(1)
        held = [socket.create_connection(("127.0.0.1", t.port("ssh"))) for _ in range(2)]
        http = t.port("http")
        subprocess.run(
            [
                curl,
                "-sS",
                "-o",
                "/dev/null",
                "--max-time",
                "0.5",
                f"http://127.0.0.1:{http}/top-probe",
            ],
            timeout=10,
        )
        wait_until(lambda: t.count(r" CLOSE ") >= 1, 10, "the curl's CLOSE")
        name = f"tarry-top-{os.getpid()}"
        pane = Pane(tmux, name, [sys.executable, "-m", "tarry", "top", "--url", url])

        def screen() -> list[str] | None:
            lines = pane.text()
            text = "\n".join(lines)
            return lines if "Latest closes" in text and "top-probe" in text else None

        lines = wait_until(screen, 15, "tarry top's view")
        text = "\n".join(lines)
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
        for title in ("Held now (by protocol)", "Longest held now", "Latest closes", "q quits"):
            assert title in text
        row = next(line.split() for line in lines if line.startswith("ssh "))
        assert row[1] == "2"  # two clients held now
        assert "GET /top-probe" in text  # what the curl said, readable
        # updated every second: the longest-held client's time goes up
        first = [line for line in lines if "127.0.0.1" in line and line.startswith("ssh")]
        wait_until(
            lambda: (
                [ln for ln in pane.text() if "127.0.0.1" in ln and ln.startswith("ssh")] != first
            ),
            5,
            "a refresh",
        )
        pane.keys("q")
        wait_until(lambda: not pane.alive(), 5, "tarry top to quit on q")
    finally:
        for s in held:
            s.close()
        if pane is not None:
            pane.close()
        t.stop()


def test_no_tarry_to_read_is_one_line(tmp_path):
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    r = subprocess.run(
        [sys.executable, "-m", "tarry", "top", "--url", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "tarry top: error:" in r.stderr
    assert "refused" in r.stderr.lower(), r.stderr
    cfg = tmp_path / "t.toml"
    cfg.write_text('[admin]\nlisten = ""\n[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:0"]\n')
    r = subprocess.run(
        [sys.executable, "-m", "tarry", "top", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 2 and "[admin] listen is off" in r.stderr and r.stderr.count("\n") == 1


def test_what_a_client_said_reads_as_words():
    assert said({"method": "GET", "path": "/.env", "user_agent": "curl/8.5.0"}) == (
        "GET /.env curl/8.5.0"
    )
    assert said({"ehlo": "User", "mail_from": "a@b", "rcpt_to": "c@d,e@f"}) == (
        "EHLO User from a@b to c@d,e@f"
    )
    assert said({"mode": "kex"}) == ""
