"""A short gauntlet: every real attack tool against tarry's defaults and the endless reference.

One run of bench/gauntlet.py (60 s cap, tools in parallel, about two minutes) serves every
test; each tool is one test, which fails when tarry held it for less than the reference did
(minus the gauntlet's 2 s margin). Tools come from scripts/install-gauntlet-tools.sh.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import gauntlet
from support import IN_CI, need

pytestmark = [pytest.mark.realclient, pytest.mark.gauntlet]

CAP = 60.0
PARALLEL = 20  # two rounds of tool pairs: about 2 x CAP in all
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gauntlet_rows(tmp_path_factory) -> dict[str, dict]:
    """Run the gauntlet once, over the tools installed here; its rows by tool name."""
    out = tmp_path_factory.mktemp("gauntlet") / "gauntlet.json"
    installed = [t.name for t in gauntlet.TOOLS if gauntlet.resolve(t)]
    if not installed:
        pytest.skip("no gauntlet tool is installed (scripts/install-gauntlet-tools.sh)")
    cmd = [sys.executable, str(REPO / "bench" / "gauntlet.py"), "--cap", str(CAP),
           "--parallel", str(PARALLEL), "--tools", ",".join(installed), "--json", str(out)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=CAP * 8)
    print(run.stdout)
    assert out.exists(), f"the gauntlet wrote no JSON:\n{run.stdout}\n{run.stderr[-3000:]}"
    return {r["tool"]: r for r in json.loads(out.read_text())["rows"]}


# Still held less than by the reference, with what was measured (issue 12 stays open for
# them): reported as expected failures while they last, and as passes once fixed.
KNOWN_SHORT = {
    "nmap-sV-ssh": "13.7 s against 60 s at cap 60: it still gets an OpenSSH version",
    "nmap-sV-smtp": "48.6 s against 60 s at cap 60",
}


@pytest.mark.parametrize("tool", gauntlet.TOOLS, ids=lambda t: t.name)
def test_tarry_holds_tool_at_least_as_long_as_reference(tool, gauntlet_rows):
    if gauntlet.resolve(tool) is None:
        need(tool.exe)  # skips locally, fails under CI=true
    row = gauntlet_rows[tool.name]
    tarry, ref = row["tarry"], row["reference"]
    if tool.name in KNOWN_SHORT and tarry["held"] < ref["held"] - gauntlet.LESS_MARGIN:
        pytest.xfail(f"known, issue 12: {KNOWN_SHORT[tool.name]}")
    assert tarry["held"] >= ref["held"] - gauntlet.LESS_MARGIN, (
        f"{tool.name} ({tool.category}, {tool.proto}) held {tarry['held']:.1f} s by tarry, "
        f"{ref['held']:.1f} s by the reference; its limits: {tool.timeouts}; "
        f"its last words against tarry: {tarry['tail'][-300:]!r}"
    )


def test_every_tool_is_installed_in_ci():
    """CI must run the whole gauntlet: a tool missing there is an install-script bug."""
    missing = [t.exe for t in gauntlet.TOOLS if gauntlet.resolve(t) is None]
    if missing and IN_CI:
        pytest.fail(f"not installed: {', '.join(missing)}")
