"""Tests import tarry from this checkout's src/, whatever else is installed."""

import os
import sys

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
sys.path.insert(0, SRC)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.join(os.path.dirname(SRC), "bench"))  # shared helpers, e.g. sshhello
os.environ["PYTHONPATH"] = SRC + os.pathsep + os.environ.get("PYTHONPATH", "")

# tarry keeps history in its state directory: never the machine's own in tests
if "TARRY_TEST_KEEP_STATE" not in os.environ:
    import tempfile

    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="tarry-test-state-")
    # a tarry that switches to nobody (started as root) must reach its state dir in it
    os.chmod(os.environ["XDG_STATE_HOME"], 0o755)

import pytest  # noqa: E402

STATE_BASE = os.environ.get("XDG_STATE_HOME")


@pytest.fixture(autouse=True)
def _own_state_dir(monkeypatch):
    """A state directory per test: the history (and what the SSH adaptive mode
    seeds from it) must not carry over from one test's tarry to the next."""
    if "TARRY_TEST_KEEP_STATE" not in os.environ:
        import tempfile

        own = tempfile.mkdtemp(prefix="t-", dir=STATE_BASE)
        os.chmod(own, 0o755)  # as above: reachable by a tarry that dropped privileges
        monkeypatch.setenv("XDG_STATE_HOME", own)
