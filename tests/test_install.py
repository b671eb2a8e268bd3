"""``make install`` puts in place what the units name (issue 18 item 5): the man
page, generated from the help texts, and the documents of Documentation=."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from support import need

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_man_page_is_what_the_help_texts_make() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-manpage.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert out == (ROOT / "man" / "tarry.1").read_text(), "run `make man` and commit man/tarry.1"


def test_make_install_installs_what_the_units_document(tmp_path: Path) -> None:
    make = need("make")
    stage = tmp_path / "stage"
    for prefix in ("/usr/local", "/usr"):
        r = subprocess.run(
            [make, "-C", str(ROOT), "install", f"DESTDIR={stage}", f"PREFIX={prefix}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        units = [
            stage / prefix.lstrip("/") / "lib/systemd/system/tarry.service",
            *(stage / prefix.lstrip("/") / "share/doc/tarry/socket-activated").iterdir(),
        ]
        assert len(units) == 3
        for unit in units:
            text = unit.read_text()
            docs = re.search(r"^Documentation=(.*)$", text, re.M)
            assert docs is not None, unit
            for uri in docs.group(1).split():
                if uri.startswith("man:"):
                    page = re.fullmatch(r"man:([\w-]+)\((\d)\)", uri)
                    assert page is not None, uri
                    name, section = page.groups()
                    path = f"{prefix}/share/man/man{section}/{name}.{section}"
                else:
                    assert uri.startswith("file:"), uri
                    path = uri.removeprefix("file:")
                assert (stage / path.lstrip("/")).is_file(), (unit, uri)
            assert f"ExecStart={prefix}/bin/tarry serve" in text or unit.name == "tarry.socket"
    man = need("man")
    page = stage / "usr/share/man/man1/tarry.1"
    shown = subprocess.run(
        [man, "-l", str(page)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": ""},
    )
    assert shown.returncode == 0, shown.stderr
    text = re.sub(r".\x08", "", shown.stdout)
    for needle in ("tarry serve", "-c FILE", "check-config", "-f CONFIG", "/etc/tarry/tarry.toml"):
        assert needle in text, needle
