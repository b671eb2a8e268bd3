"""The raw stack's nftables table, installed and removed in a namespace of its own."""

from __future__ import annotations

import json

import pytest

from netns import run_python
from support import need
from tarry.raw import nftables
from tarry.raw.nftables import NftError

LIFECYCLE = r"""
import json, subprocess
from tarry.raw import nftables as n

def listing():
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout

n.install([("127.0.0.1", 2222), ("::1", 2222), ("*", 2300)])
first = listing()
n.install([("127.0.0.1", 2400)])  # a stale table from a crash: replaced in one step
second = listing()
n.remove()
n.remove()  # removing what is not there is no error
print(json.dumps([first, second, listing(), n.present()]))
"""


def test_install_replaces_a_stale_table_and_remove_leaves_nothing():
    done = run_python(LIFECYCLE)
    assert done.returncode == 0, done.stderr
    first, second, after, present = json.loads(done.stdout)
    for rule in (
        "ip daddr 127.0.0.1 tcp dport 2222 notrack",
        "ip6 daddr ::1 tcp dport 2222 notrack",
        "ip saddr 127.0.0.1 tcp sport 2222 notrack",
        "tcp dport 2300 drop",
        "hook prerouting priority raw",
        "hook output priority raw",
        "hook input priority filter",
    ):
        assert rule in first
    assert "2222" not in second and "ip daddr 127.0.0.1 tcp dport 2400 drop" in second
    assert "tarry" not in after and present is False


def test_without_cap_net_admin_one_clear_line():
    setpriv = need("setpriv")
    code = (
        "from tarry.raw import nftables as n\n"
        "try:\n    n.install([('127.0.0.1', 22)])\n"
        "except n.NftError as exc:\n    print(exc)\n"
    )
    done = run_python(code, setpriv, "--inh-caps=-all", "--bounding-set=-all")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        'stack = "raw" needs CAP_NET_ADMIN to install its nftables table (nft: Operation not permitted)'
    )


def test_without_nft_one_clear_line():
    with pytest.raises(NftError, match=r"needs the nft program .* not on PATH"):
        nftables.install([("127.0.0.1", 22)], nft="/nonexistent/nft")


def test_a_bad_address_is_named():
    with pytest.raises(NftError, match=r"'example\.org' is not an IP address"):
        nftables.ruleset([("example.org", 22)])


def test_the_transaction_removes_before_it_adds():
    commands = nftables.ruleset([("*", 22)])["nftables"]
    table = {"table": {"family": "inet", "name": "tarry"}}
    assert commands[:3] == [{"add": table}, {"delete": table}, {"add": table}]
