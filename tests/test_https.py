"""HTTPS: the HTTP tarpit under the TLS layer, against real clients."""

from __future__ import annotations

import re
import ssl
import subprocess
import time
import urllib.request

from support import need, start_tarry

DELAY = 0.05


def https_tarry():
    return start_tarry(
        "[admin]\nlisten = ''\n[history]\nenabled = false\n"
        "[[tarpit]]\nprotocol = 'http'\nlisten = ['127.0.0.1:0']\ntls = true\n"
        f"delay = {DELAY}\nstrategy = 'body'\nhostname = 'www.example.test'\n"
    )


def test_curl_over_tls_is_still_waiting_after_many_delays() -> None:
    curl = need("curl")
    t = https_tarry()
    try:
        port = t.port("http")
        started = time.monotonic()
        result = subprocess.run(
            [
                curl,
                "-ksS",
                "--max-time",
                "3",
                "-o",
                "-",
                "-A",
                "tls-test/1.0",
                f"https://127.0.0.1:{port}/admin/",
            ],
            capture_output=True,
            timeout=20,
        )
        held = time.monotonic() - started
        # 28: curl's own --max-time ran out while the body was still coming
        assert result.returncode == 28, result.stderr
        assert held >= 2.9
        assert result.stdout.startswith(b"<!DOCTYPE html>") and len(result.stdout) > 1000
        close = t.wait_for(r" CLOSE ", timeout=5).string
        assert re.search(r"tls=yes", close) and "path=/admin/" in close
        assert "user_agent=tls-test/1.0" in close
    finally:
        t.stop()


def test_urllib_over_tls_reads_an_endless_body() -> None:
    t = https_tarry()
    try:
        port = t.port("http")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/", context=ctx, timeout=5) as r:
            assert r.status == 200 and r.headers["Transfer-Encoding"] == "chunked"
            cert = r.fp.raw._sock.getpeercert(binary_form=True)  # the generated certificate
            assert cert
            got = 0
            started = time.monotonic()
            while time.monotonic() - started < 40 * DELAY:
                got += len(r.read1(4096))
            assert got > 20 * 60  # a chunk of HTML per delay, and still no end
    finally:
        t.stop()
