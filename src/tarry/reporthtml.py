"""``tarry report --format html``: the report as one self-contained page.

The charts are the dashboard's (tarry.charts, drawn by pygal, the ``dashboard``
extra), inlined as SVG; the tables are the report's. Nothing is fetched when
the page is opened, so it can be mailed or archived. Every value a peer chose
(paths, senders, software) is HTML-escaped.
"""

from __future__ import annotations

import html
from typing import Any

from .report import NOTE_TOPS, SLOTS, human

CSS = """
body{background:#2e3440;color:#d8dee9;font:14px/1.4 sans-serif;margin:0 auto;padding:12px;
max-width:1400px}
h1{font-size:18px}h2{font-size:15px;margin:18px 0 6px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,420px),1fr));gap:12px}
.card{background:#3b4252;border-radius:6px;padding:8px;min-width:0;overflow-x:auto}
.card svg{width:100%;height:auto}
table{border-collapse:collapse;width:100%}td,th{padding:2px 6px;text-align:left;
overflow-wrap:anywhere}td.n,th.n{text-align:right}
.range{color:#a0a8b8;font-size:12px}
"""


class HtmlError(Exception):
    """The page cannot be drawn (no pygal); the text is one line for the operator."""


def chart_data(data: dict[str, Any]) -> dict[str, Any]:
    """The report's figures in the shape tarry.charts draws (as LiveStats.chart_data)."""
    act = data["activity"]
    key = next((k for k in SLOTS if act and k in act[0]), "day")
    protos = sorted({p for r in act for p in r["protocols"]})
    return {
        "title": f"Connections per {key} (UTC)",
        "range": "this report",
        "minutes": [],
        "labels": [r[key] for r in act],
        "series": {p: [r["protocols"].get(p, 0) for r in act] for p in protos},
        "durations": data["durations_by_proto"],
        "countries": [(r["country"], r["sessions"]) for r in data["top_countries"]],
        "families": [(f"{r['proto']} {r['family']}", r["sessions"]) for r in data["by_family"]],
    }


# the page's tables: title, report section, and (heading, key) per column
TABLES: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("By protocol", "by_proto", (("proto", "proto"), ("sessions", "sessions"),
        ("unique IPs", "unique_ips"), ("time wasted", "seconds"))),
    ("Disconnect reasons", "reasons", (("proto", "proto"), ("reason", "reason"),
        ("sessions", "sessions"))),
    *((section.replace("_", " ").capitalize(), section, ((label, label), ("sessions", "sessions")))
      for section, _key, label in NOTE_TOPS),
    ("Top credentials tried", "top_credentials", (("proto", "proto"), ("user", "user"),
        ("password", "password"), ("sessions", "sessions"))),
    ("Top IPs (by time wasted)", "top_ips", (("ip", "ip"), ("country", "country"),
        ("sessions", "sessions"), ("time wasted", "seconds"))),
    ("Seconds held by client family", "by_family", (("proto", "proto"), ("family", "family"),
        ("sessions", "sessions"), ("time wasted", "seconds"))),
)  # fmt: skip


def _cell(row: dict[str, Any], key: str) -> Any:
    if key == "seconds":
        return human(row[key])
    if key == "country":
        return row[key] or "unknown"
    return row[key]


def _table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(
        f'<th class="n">{html.escape(h)}</th>' if i else f"<th>{html.escape(h)}</th>"
        for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{html.escape(str(c))}</td>'
            if isinstance(c, int | float)
            else f"<td>{html.escape(str(c))}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    if not rows:
        body = f'<tr><td colspan="{len(header)}">(none)</td></tr>'
    return (
        f'<div class="card"><h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table></div>'
    )


def page(data: dict[str, Any]) -> str:
    """The whole page as one string."""
    from .charts import CHARTS, render

    try:
        import pygal  # noqa: F401
        import pygal_maps_world  # noqa: F401
    except ImportError:
        raise HtmlError(
            "--format html draws charts with pygal: pip install 'tarry[dashboard]'"
        ) from None
    shape = chart_data(data)
    svgs = "".join(f'<div class="card">{render(name, shape)}</div>' for name in CHARTS)
    s, rng = data["summary"], data["range"]
    span = f"{rng['since'] or 'the beginning'} to {rng['until'] or 'now'} (UTC)"
    tables = [
        _table(title, [h for h, _k in cols], [[_cell(r, k) for _h, k in cols] for r in data[key]])
        for title, key, cols in TABLES
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>tarry report</title><style>{CSS}</style></head><body>"
        f'<h1>tarry report</h1><p class="range">{html.escape(span)}</p>'
        f'<p><span id="wasted">{html.escape(human(s["time_wasted_seconds"]))}</span> wasted in '
        f'<span id="sessions">{s["sessions"]}</span> sessions from '
        f'<span id="ips">{s["unique_ips"]}</span> addresses</p>'
        f'<div class="grid">{svgs}</div><div class="grid">{"".join(tables)}</div>'
        "</body></html>\n"
    )
