"""endlessh-go's six metric families, byte for byte as its Prometheus text.

Grafana dashboard 15156 (endlessh-go's ``dashboard/endlessh.json``) queries them
by name; endlessh-go (``metrics/metrics.go``) registers all six as counters:

* ``endlessh_client_open_count_total``, ``endlessh_client_closed_count_total``,
  ``endlessh_sent_bytes_total``, ``endlessh_trapped_time_seconds_total``, each
  labelled ``local_port``;
* ``endlessh_client_open_count`` {ip, local_port, geohash, country, location} and
  ``endlessh_client_trapped_time_seconds`` {ip, local_port}: per client address,
  counters whose names do *not* end in ``_total``.

prometheus_client renames every counter to ``*_total``, so these are written
here as text (the Prometheus 0.0.4 format that client_golang writes) and
appended to the rest of the scrape. Only SSH tarpits feed them, as endlessh-go
is SSH only; tarry's own ``tarry_*`` families count every protocol.

``country`` is a name and ``location`` the best place known, as endlessh-go
writes them (``composeCountry``/``composeLocation`` in its ``geoip/geoip.go``):
"Unknown" when no country is known. tarry knows a peer's country only, so the
location is the country's name and the geohash that of its rough centroid
(tarry.countries).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .countries import COUNTRIES

UNKNOWN = ("Unknown", "Unknown", "s000")
"""endlessh-go's labels for an address it could not place."""
GEOHASH_PRECISION = 9  # ~5 m cells: far finer than a country centroid needs
_BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"


def geohash(lat: float, lon: float, precision: int = GEOHASH_PRECISION) -> str:
    """The standard geohash (interleaved longitude/latitude bisection, base 32)."""
    lat_lo, lat_hi, lon_lo, lon_hi = -90.0, 90.0, -180.0, 180.0
    out: list[str] = []
    bits = value = 0
    even = True  # longitude first
    while len(out) < precision:
        if even:
            mid = (lon_lo + lon_hi) / 2
            value = value * 2 + (lon >= mid)
            lon_lo, lon_hi = (mid, lon_hi) if lon >= mid else (lon_lo, mid)
        else:
            mid = (lat_lo + lat_hi) / 2
            value = value * 2 + (lat >= mid)
            lat_lo, lat_hi = (mid, lat_hi) if lat >= mid else (lat_lo, mid)
        even = not even
        bits += 1
        if bits == 5:
            out.append(_BASE32[value])
            bits = value = 0
    return "".join(out)


_PLACES: dict[str, tuple[str, str, str]] = {}


def place(cc: str) -> tuple[str, str, str]:
    """(country name, location, geohash) of an ISO 3166 alpha-2 code, cached."""
    got = _PLACES.get(cc)
    if got is None:
        row = COUNTRIES.get(cc)
        if row is None:  # endlessh-go adds the code when it cannot place it
            got = (f"Unknown ({cc})", f"Unknown ({cc})", "s000") if cc else UNKNOWN
        else:
            name, lat, lon = row
            got = (name, name, geohash(lat, lon))
        _PLACES[cc] = got
    return got


def _number(v: float) -> str:
    """A sample value as Go's strconv 'g' writes it: 3, not 3.0."""
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


Sample = tuple[Sequence[tuple[str, str]], float]


def family(name: str, doc: str, samples: Iterable[Sample]) -> str:
    """One counter family in the text format; labels sorted by name, as client_golang does."""
    lines = [f"# HELP {name} {doc}", f"# TYPE {name} counter"]
    for labels, value in samples:
        inner = ",".join(f'{k}="{_label(v)}"' for k, v in sorted(labels))
        lines.append(f"{name}{{{inner}}} {_number(value)}")
    return "\n".join(lines) + "\n"


HELP = {  # endlessh-go's help texts, its names and types
    "endlessh_client_open_count_total": "Total number of clients that tried to connect to this host.",
    "endlessh_client_closed_count_total": "Total number of clients that stopped connecting to this host.",
    "endlessh_sent_bytes_total": "Total bytes sent to clients that tried to connect to this host.",
    "endlessh_trapped_time_seconds_total": "Total seconds clients spent on endlessh.",
    "endlessh_client_open_count": "Number of connections of clients.",
    "endlessh_client_trapped_time_seconds": "Seconds a client spends on endlessh.",
}
TOTALS = tuple(HELP)[:4]
