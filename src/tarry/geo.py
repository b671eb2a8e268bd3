"""Country of a peer address, offline only.

Two sources: the ``iptocc`` package (data compiled into the wheel, so nothing
is fetched at run time) by default, or a MaxMind-format ``.mmdb`` file (GeoLite2,
GeoIP2, DB-IP lite) read with ``maxminddb`` when the operator configures one.
Lookups run on the event loop thread, so they must be cheap: both are
in-process, from tens of nanoseconds to a few microseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .events import BaseSink, Event
from .net import unmapped

Lookup = Callable[[str], str]
"""An address in, an upper-case ISO 3166 alpha-2 code (or "") out."""


class GeoError(Exception):
    """A configured lookup cannot be used; the text is one line for the operator."""


def iptocc_lookup() -> Lookup:
    """The bundled offline table; raises GeoError when the package is missing."""
    try:
        import iptocc
    except ImportError as exc:
        raise GeoError("country lookup needs the 'geo' extra (pip install 'tarry[geo]')") from exc

    def lookup(ip: str) -> str:
        try:
            return iptocc.country_code(unmapped(ip)) or ""
        except Exception:
            return ""

    return lookup


def mmdb_lookup(path: str) -> Lookup:
    """A MaxMind-format database; raises GeoError with the reason it cannot be read."""
    try:
        import maxminddb
    except ImportError as exc:
        raise GeoError("geo.mmdb needs the 'geo' extra (pip install 'tarry[geo]')") from exc
    try:
        reader = maxminddb.open_database(path)
    except FileNotFoundError as exc:
        raise GeoError(f"geo.mmdb: no such file: {path}") from exc
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise GeoError(f"geo.mmdb: cannot read {path}: {exc}") from exc

    def lookup(ip: str) -> str:
        try:
            rec: Any = reader.get(unmapped(ip))
        except (ValueError, maxminddb.InvalidDatabaseError):
            return ""
        if not isinstance(rec, dict):
            return ""
        # Country and City databases name the country; fall back to where the
        # block is registered, as GeoLite2 leaves "country" out for some ranges.
        for key in ("country", "registered_country"):
            sub = rec.get(key)
            if isinstance(sub, dict):
                code = sub.get("iso_code")
                if isinstance(code, str) and len(code) == 2:
                    return code.upper()
        code = rec.get("country_code")  # flat layouts (e.g. some free databases)
        if isinstance(code, str) and len(code) == 2:
            return code.upper()
        return ""

    return lookup


def make_lookup(mmdb: str = "", enabled: bool = True) -> Lookup | None:
    """The configured lookup: the .mmdb when given, else iptocc, else None.

    Not cached: a lookup (0.6 µs with iptocc, a few µs with maxminddb) costs
    about what a cache's bookkeeping does, and a cache of the last 4096
    addresses held ~0.5 MB: most of what a flood from many distinct addresses
    added to the process. Both tables are loaded here, at start-up,
    not by the first client of each family (iptocc's IPv6 table is ~2 MB)."""
    if not enabled:
        return None
    lookup = mmdb_lookup(mmdb) if mmdb else iptocc_lookup()
    lookup("192.0.2.1")
    lookup("2001:db8::1")
    return lookup


class CountryTagger(BaseSink):
    """The first sink on the bus: fills ``Event.country`` for the sinks after it."""

    name = "geo"

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup

    def emit(self, event: Event) -> None:
        if not event.country and event.host:
            event.country = self.lookup(event.host)
