"""``tarry serve`` without ``-c`` reads the system config file when it exists,
and says which file it read (issue 18 item 5). The tests point
``TARRY_CONFIG_FILE`` at a temp file: they never write to /etc."""

from __future__ import annotations

import os
from pathlib import Path

from support import ADMIN_DEFAULT_GROUP, Tarry

pytestmark = ADMIN_DEFAULT_GROUP  # configs with no [admin] table: the default 8787

CONFIG = """
[[tarpit]]
protocol = "ssh"
listen = ["127.0.0.1:0"]
delay = 0.05

[history]
enabled = false
"""


def test_serve_reads_the_system_config_and_says_so(tmp_path: Path) -> None:
    conf = tmp_path / "tarry.toml"
    extra = "\n[privileges]\nallow_root = true\n" if os.geteuid() == 0 else ""
    conf.write_text(CONFIG + extra)
    t = Tarry(["serve"], env={"TARRY_CONFIG_FILE": str(conf)})
    try:
        t.wait_for(r"LISTEN proto=ssh listener=127\.0\.0\.1:\d+ ", timeout=15)
        assert t.count(r"LISTEN ") == 1  # its one tarpit, not the defaults' three
        assert f"tarry: config {conf}" in t.err, t.err
    finally:
        t.stop()
