"""Country lookup: offline, from iptocc's bundled table or a .mmdb file."""

from __future__ import annotations

import pytest

from tarry.events import ACCEPT, Event
from tarry.geo import CountryTagger, GeoError, make_lookup, mmdb_lookup


def write_mmdb(path, networks: dict[str, str]) -> str:
    """A small MaxMind-format country database written with mmdb-writer."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country")
    for net, cc in networks.items():
        w.insert_network(IPSet([net]), {"country": {"iso_code": cc}})
    w.to_db_file(str(path))
    return str(path)


def test_iptocc_is_offline_and_maps_known_blocks():
    look = make_lookup()
    assert look is not None
    # Public resolvers whose registration is stable; no network is used (the data is in the wheel).
    assert look("8.8.8.8") == "US"
    assert look("::ffff:8.8.8.8") == "US"  # mapped IPv4 on a dual-stack listener
    assert look("1.1.1.1") == "AU"
    assert look("127.0.0.1") == ""
    assert look("not an address") == ""


def test_mmdb_is_used_when_configured(tmp_path):
    path = write_mmdb(tmp_path / "c.mmdb", {"127.0.0.0/8": "NL", "2001:db8::/32": "SE"})
    look = make_lookup(path)
    assert look("127.0.0.5") == "NL"
    assert look("::ffff:127.0.0.5") == "NL"
    assert look("2001:db8::1") == "SE"
    assert look("8.8.8.8") == ""  # not in this database: no fallback to another source
    tagger = CountryTagger(look)
    e = Event(kind=ACCEPT, time=0.0, host="::ffff:127.0.0.9")
    tagger.emit(e)
    assert e.country == "NL"


def test_bad_mmdb_is_one_clear_error(tmp_path):
    with pytest.raises(GeoError, match="no such file"):
        mmdb_lookup(str(tmp_path / "missing.mmdb"))
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"\0" * 1000)
    with pytest.raises(GeoError, match="cannot read"):
        mmdb_lookup(str(junk))


def test_many_distinct_addresses_cost_the_lookup_no_memory():
    """A flood from many addresses must not grow the process through the lookup
    (a cache once held ~110 B per address). The tables load at start-up."""
    import tracemalloc

    look = make_lookup()
    assert look is not None
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(20000):
        look(f"::ffff:{(i >> 16) + 11}.{(i >> 8) & 255}.{i & 255}.{i % 7 + 1}")
        look(f"2001:db8:{i:x}::1")
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 64 * 1024, f"grew {grown} bytes over 40,000 distinct addresses"
