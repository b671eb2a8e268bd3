"""Tests import tarry from this checkout's src/, whatever else is installed."""

import os
import sys

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
sys.path.insert(0, SRC)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = SRC + os.pathsep + os.environ.get("PYTHONPATH", "")

# tarry keeps history in its state directory: never the machine's own in tests
if "TARRY_TEST_KEEP_STATE" not in os.environ:
    import tempfile

    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="tarry-test-state-")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path_factory, monkeypatch):
    """A state directory per test: the history (and what the SSH adaptive mode
    seeds from it) must not carry over from one test's tarry to the next."""
    if "TARRY_TEST_KEEP_STATE" not in os.environ:
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
