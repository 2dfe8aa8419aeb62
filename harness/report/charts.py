"""Line charts as inline SVG, for the load report: titled, both axes labelled with units, round ticks.

No plotting library and nothing loaded by the page: a chart is a few hundred bytes of SVG drawn
here and passed to the template as ``Markup``. Every point carries a tooltip with its value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from markupsafe import Markup

from .fmt import esc

PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#bc4c00", "#8250df", "#1b7c83", "#9a6700", "#57606a"]
CHAR_PX = 6.6  # estimated width of one character of 11 px text
TOOLTIP_POINTS = 150  # beyond this many points a series is drawn without per-point markers


@dataclass
class Series:
    name: str
    points: list[tuple[float, float | None]]  # (x, y); None: no value there
    color: str = ""  # "" picks the next colour of the palette
    dashed: bool = False
    bridge: bool = False  # draw the line across missing values (an interval without samples) instead of breaking it


def nice_ticks(top: float, target: int = 5, bottom: float = 0.0, whole: bool = False) -> list[float]:
    """Round ticks (steps of 1, 2, 2.5 or 5 × 10^k) from at or below ``bottom`` to at or above ``top``.

    ``whole``: counts (calls) get whole-number steps only, so no axis reads "2.5 calls".
    """
    span = top - bottom if top > bottom else 1.0
    raw = (max(top, -bottom) if bottom < 0 < top else span) / target  # a little below 0 costs a step, not the scale
    mag = 10 ** math.floor(math.log10(raw))
    steps = [m * mag for m in (1, 2, 2.5, 5, 10) if not whole or (m * mag >= 1 and m * mag == int(m * mag))]
    step = next((x for x in steps if x >= raw * (1 - 1e-9)), max(1.0, 10 * mag))
    first = math.floor(bottom / step + 1e-9)
    last = max(first + 1, math.ceil((bottom + span) / step - 1e-9))
    return [round(i * step, 10) + 0.0 for i in range(first, last + 1)]


def tick_label(v: float) -> str:
    return f"{int(v):,}" if v == int(v) else f"{v:g}"


def value_label(v: float) -> str:
    """A value for a tooltip: three significant digits are what a reader compares."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _legend_rows(series: list[Series], width: float, left: float) -> list[list[tuple[float, Series]]]:
    """Legend entries placed left to right, wrapped to the chart's width."""
    rows: list[list[tuple[float, Series]]] = [[]]
    x = left
    for s in series:
        w = 30 + CHAR_PX * len(s.name) + 14
        if rows[-1] and x + w > width:
            rows.append([])
            x = left
        rows[-1].append((x, s))
        x += w
    return rows


def line_chart(title: str, series: list[Series], y_label: str, x_label: str = "time since the first call (s)",
               width: int = 560, height: int = 250, whole: bool = False,
               y_fmt: Callable[[float], str] = value_label) -> Markup:
    """One chart; the y axis starts at 0 so heights compare, the x axis spans the data (and 0).

    ``whole``: the values are counts, so the y ticks are whole numbers.
    """
    series = [Series(s.name, s.points, s.color or PALETTE[i % len(PALETTE)], s.dashed, s.bridge)
              for i, s in enumerate(series)]
    pts = [(x, y) for s in series for x, y in s.points if y is not None]

    def head(h: float) -> str:
        return (f'<svg class="chart" viewBox="0 0 {width} {h:.0f}" role="img" aria-label="{esc(title)}">'
                f'<title>{esc(title)}</title><text class="title" x="8" y="18">{esc(title)}</text>')

    if not pts:
        return Markup(head(56) + '<text class="none" x="8" y="42">no data in this run</text></svg>')
    left, right, bottom = 62.0, 22.0, 46.0
    legend = _legend_rows(series, width - right, left)
    top = 30.0 + 16 * len(legend) + 8
    height = max(height, int(top + 120 + bottom))
    xt = nice_ticks(max(x for x, _ in pts), 6, bottom=min(0.0, min(x for x, _ in pts)))
    yt = nice_ticks(max(y for _, y in pts), 5, whole=whole)
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + pw * (x - xt[0]) / (xt[-1] - xt[0])

    def sy(y: float) -> float:
        return top + ph - ph * y / yt[-1]

    out = [head(height)]
    for y in yt:
        out.append(f'<line class="grid" x1="{left}" y1="{sy(y):.1f}" x2="{left + pw}" y2="{sy(y):.1f}"/>'
                   f'<text class="tick" x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{tick_label(y)}</text>')
    for x in xt:
        out.append(f'<line class="grid" x1="{sx(x):.1f}" y1="{top}" x2="{sx(x):.1f}" y2="{top + ph}"/>'
                   f'<text class="tick" x="{sx(x):.1f}" y="{top + ph + 15}" text-anchor="middle">'
                   f"{tick_label(x)}</text>")
    out.append(f'<line class="axis" x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}"/>'
               f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}"/>'
               f'<text class="axis-label" x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">'
               f"{esc(x_label)}</text>"
               f'<text class="axis-label" transform="translate(14 {top + ph / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">{esc(y_label)}</text>')
    for n, row in enumerate(legend):
        ly = 32 + 16 * n
        for lx, s in row:
            out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="{s.color}" stroke-width="2.5"'
                       f'{_dash(s)}/><text class="legend" x="{lx + 30}" y="{ly + 4}">{esc(s.name)}</text>')
    for s in series:
        out += _series_svg(s, sx, sy, x_label, y_label, y_fmt)
    out.append("</svg>")
    return Markup("".join(out))


def _dash(s: Series) -> str:
    return ' stroke-dasharray="6 4"' if s.dashed else ""


def _series_svg(s: Series, sx: Callable[[float], float], sy: Callable[[float], float], x_label: str,
                y_label: str, y_fmt: Callable[[float], str]) -> list[str]:
    """The series' line (broken where a value is missing), and a marker with a tooltip at each point."""
    out: list[str] = []
    segments: list[list[tuple[float, float]]] = [[]]
    for x, y in s.points:
        if y is None:
            if not s.bridge:
                segments.append([])
        else:
            segments[-1].append((x, y))
    for seg in segments:
        if len(seg) > 1:
            line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in seg)
            out.append(f'<polyline fill="none" stroke="{s.color}" stroke-width="1.8"{_dash(s)} points="{line}"/>')
    shown = [(x, y) for seg in segments for x, y in seg]
    if len(shown) <= TOOLTIP_POINTS:
        x_name = x_label.split(" (")[0]
        for x, y in shown:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.6" fill="{s.color}"><title>'
                       f"{esc(s.name)}: {esc(y_fmt(y))} {esc(y_label)} at {x:g} s ({esc(x_name)})</title></circle>")
    return out
