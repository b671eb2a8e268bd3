"""The raw stack's capability check: one line naming every gap."""

from __future__ import annotations

from netns import run_python
from support import need
from tarry.raw import caps

ALL = 1 << caps.CAP_NET_RAW | 1 << caps.CAP_NET_ADMIN


def test_nothing_missing_as_root_with_nft():
    need("nft")
    assert caps.missing(caps=ALL) is None


def test_each_gap_is_named_in_one_line():
    line = caps.missing(nft="/nonexistent/nft", caps=0)
    assert line is not None and "\n" not in line
    assert line.startswith(
        'stack = "raw" cannot start: missing CAP_NET_RAW, CAP_NET_ADMIN, the nft program'
    )
    assert (
        caps.missing(caps=1 << caps.CAP_NET_RAW)
        == 'stack = "raw" cannot start: missing CAP_NET_ADMIN'
    )


def test_reads_the_real_effective_set_of_a_process_without_caps():
    code = "from tarry.raw import caps; print(caps.effective_caps(), caps.missing())"
    done = run_python(code, need("setpriv"), "--inh-caps=-all", "--bounding-set=-all")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(" ", 1) == [
        "0",
        'stack = "raw" cannot start: missing CAP_NET_RAW, CAP_NET_ADMIN\n',
    ]
