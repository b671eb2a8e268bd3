"""Dashboard charts as server-side SVG, drawn by pygal (the ``dashboard`` extra).

Rendering takes milliseconds of pure Python, so the admin app runs it in a
worker thread on a copy of the data (``LiveStats.chart_data``), never on the
event loop thread.
"""

from __future__ import annotations

import time
from typing import Any

from .stats import DURATION_BUCKETS

CHARTS = ("connections", "durations", "countries", "software", "world")
PALETTE = ("#88c0d0", "#ebcb8b", "#a3be8c", "#b48ead", "#d08770", "#5e81ac", "#bf616a")
# one colour per protocol in every chart (and the page's legend); others take the rest
PROTO_COLOURS = {"ssh": "#88c0d0", "http": "#ebcb8b", "smtp": "#a3be8c"}
OTHER_COLOURS = ("#b48ead", "#d08770", "#5e81ac", "#bf616a")


def colour(proto: str) -> str:
    """The protocol's colour, the same for a name wherever it is drawn."""
    known = PROTO_COLOURS.get(proto)
    if known:
        return known
    return OTHER_COLOURS[sum(proto.encode()) % len(OTHER_COLOURS)]


def int_ticks(peak: float, most: int = 6) -> list[int]:
    """Whole-number axis ticks from 0 to at least ``peak``: counts have no fractions."""
    top = max(1, int(-(-peak // 1)))
    step = 1
    while top / step > most:
        for mult in (2, 5, 10):
            if top / (step * mult) <= most:
                step *= mult
                break
        else:
            step *= 10
    return list(range(0, top + step, step))


def _ticks(top: list[tuple[str, int]]) -> dict[str, Any]:
    """Integer ticks for a chart of (label, count); none on an empty chart, which
    pygal cannot draw with explicit labels."""
    return {"y_labels": int_ticks(max(n for _k, n in top))} if top else {}


def _style(colours: tuple[str, ...] = PALETTE) -> Any:
    from pygal.style import Style

    return Style(
        background="transparent",
        plot_background="transparent",
        foreground="#d8dee9",
        foreground_strong="#eceff4",
        foreground_subtle="#4c566a",
        colors=colours,
        font_family="sans-serif",
        title_font_size=14,
        label_font_size=11,
        major_label_font_size=11,
        legend_font_size=11,
    )


def _config(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        style=_style(),
        js=[],  # no script from a CDN: the SVG is inlined into the page
        disable_xml_declaration=True,
        width=640,
        height=300,
        margin=12,
        legend_at_bottom=True,
        truncate_legend=24,
        print_values=False,
        no_data_text="no data yet",
    )
    base.update(kw)
    return base


def render(name: str, data: dict[str, Any]) -> str:
    """One chart of the dashboard as an SVG document (a string)."""
    import pygal

    if name == "connections":
        minutes: list[int] = data["minutes"]
        labels = data.get("labels") or [
            time.strftime("%H:%M", time.gmtime(m * 60)) for m in minutes
        ]
        series: dict[str, list[int]] = data["series"]
        chart = pygal.StackedBar(
            **_config(
                title=data.get("title", "Connections per minute, last 3 h (UTC)"),
                x_label_rotation=0,
                show_minor_x_labels=False,
                x_labels_major_every=max(1, len(labels) // 6),
                truncate_label=-1,
                spacing=1,
                style=_style(tuple(colour(p) for p in series) or PALETTE),
                **_ticks([("", sum(c)) for c in zip(*series.values(), strict=True)]),
            )
        )
        chart.x_labels = labels
        for proto, counts in series.items():
            chart.add(proto, counts)
    elif name == "durations":
        durations: dict[str, list[int]] = data["durations"]
        chart = pygal.StackedBar(
            **_config(
                title=f"Hold durations ({data.get('range', 'since start')})",
                style=_style(tuple(colour(p) for p in durations) or PALETTE),
                **_ticks([("", sum(c)) for c in zip(*durations.values(), strict=True)]),
            )
        )
        chart.x_labels = [label for _le, label in DURATION_BUCKETS]
        for proto, counts in durations.items():
            chart.add(proto, counts)
    elif name == "countries":
        top = [(cc, n) for cc, n in data["countries"] if cc and cc != "??"][:10]
        chart = pygal.HorizontalBar(
            **_config(
                title=f"Top countries ({data.get('range', 'since start')})",
                show_legend=False,
                **_ticks(top),
            )
        )
        chart.x_labels = [cc for cc, _n in reversed(top)]
        if top:
            chart.add("connections", [n for _cc, n in reversed(top)])
    elif name == "software":
        top = data["families"][:10]
        chart = pygal.HorizontalBar(
            **_config(
                title=f"Top client software ({data.get('range', 'since start')})",
                show_legend=False,
                **_ticks(top),
            )
        )
        chart.x_labels = [f for f, _n in reversed(top)]
        if top:
            chart.add("sessions", [n for _f, n in reversed(top)])
    elif name == "world":
        from pygal_maps_world.maps import World

        chart = World(
            **_config(
                title=f"Connections by country ({data.get('range', 'since start')})",
                show_legend=False,
                height=360,
            )
        )
        values = {cc.lower(): n for cc, n in data["countries"] if len(cc) == 2 and cc != "??"}
        if values:
            chart.add("connections", values)
    else:
        raise KeyError(name)
    return chart.render(is_unicode=True)
