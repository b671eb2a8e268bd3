"""Run code in a network namespace of its own, for the raw stack's tests.

The raw stack installs nftables tables and reads every packet of a host; its
tests do that only inside a namespace they create (``unshare -n``, with ``lo``
up), so nothing touches the machine's own network. They need root (CI runs as
root); elsewhere they skip, and in CI they fail rather than skip.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support import IN_CI, need


def need_root() -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the raw stack's namespace tests need root, and CI runs as root")
        pytest.skip("needs root to create a network namespace")
    need("unshare")
    need("ip")


def netns_argv(*argv: str) -> list[str]:
    """``argv`` in a new network namespace whose ``lo`` is up."""
    need_root()
    return [need("unshare"), "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "netns", *argv]


def run_python(code: str, *prefix: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` in a fresh namespace (after ``prefix``, e.g. setpriv)."""
    return subprocess.run(
        netns_argv(*prefix, sys.executable, "-c", code),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
