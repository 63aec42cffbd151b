"""Small, dependency-free SVG charts for the HTML report.

Each function takes plain Python values (already aggregated: a handful of rows) and returns one
``<svg class="chart">`` element as a string, sized by its viewBox so it scales with the page.
Every chart carries ``data-marks``: the number of data marks it draws, which the report's
render check compares with what the browser laid out.
"""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

PALETTE = ("#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#718096", "#b7791f")
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _fmt(value: float) -> str:
    """A short number label: 1.2k, 0.034, 12.5."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    a = abs(value)
    if a >= 1e6:
        return f"{value / 1e6:.1f}M"
    if a >= 1e4:
        return f"{value / 1e3:.0f}k"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _nice_max(value: float) -> float:
    """The next 'nice' axis maximum (1, 2, 2.5 or 5 times a power of ten) above ``value``."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _svg(width: int, height: int, body: list[str], marks: int, title: str) -> str:
    return (f'<svg class="chart" role="img" aria-label="{escape(title)}" data-marks="{marks}" '
            f'viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" '
            f'xmlns="http://www.w3.org/2000/svg" {_FONT}>'
            f'<title>{escape(title)}</title>{"".join(body)}</svg>')


def _legend(names: Sequence[str], x: float, y: float) -> list[str]:
    out = []
    for i, name in enumerate(names):
        out.append(f'<rect x="{x}" y="{y + i * 16}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
                   f'<text x="{x + 14}" y="{y + i * 16 + 9}">{escape(name)}</text>')
    return out


def bar_chart(labels: Sequence[str], series: dict[str, Sequence[float]], title: str,
              value_format=_fmt, width: int = 640) -> str:
    """Horizontal bars, one group per label and one bar per series in the group."""
    names = list(series)
    n_series = max(len(names), 1)
    bar_h, gap = 14, 10
    longest = max((len(str(label)) for label in labels), default=10)
    label_w = int(min(max(6.3 * min(longest, 60) + 12, 80), 400))
    legend_w = 130 if n_series > 1 else 0
    width = max(width, label_w + legend_w + 250)
    plot_w = width - label_w - legend_w - 50
    height = 20 + len(labels) * (n_series * bar_h + gap) + 10
    top = _nice_max(max((v for s in series.values() for v in s if v is not None), default=1.0))
    body, marks = [], 0
    y = 20
    for i, label in enumerate(labels):
        body.append(f'<text x="{label_w - 6}" y="{y + n_series * bar_h / 2 + 4}" text-anchor="end">'
                    f'{escape(_clip(str(label), 60))}</text>')
        for j, name in enumerate(names):
            value = series[name][i]
            if value is not None:
                w = max(plot_w * value / top, 0.5)
                body.append(f'<rect class="mark" x="{label_w}" y="{y + j * bar_h}" width="{w:.1f}" '
                            f'height="{bar_h - 2}" fill="{PALETTE[j % len(PALETTE)]}">'
                            f'<title>{escape(str(label))} {escape(name)}: {value_format(value)}</title></rect>'
                            f'<text x="{label_w + w + 4:.1f}" y="{y + j * bar_h + bar_h - 4}">'
                            f'{value_format(value)}</text>')
                marks += 1
        y += n_series * bar_h + gap
    body.append(f'<line x1="{label_w}" y1="14" x2="{label_w}" y2="{height - 10}" stroke="#999"/>')
    if n_series > 1:
        body += _legend(names, width - legend_w, 20)
    return _svg(width, height, body, marks, title)


def histogram(edges: Sequence[float], series: dict[str, Sequence[int]], title: str,
              x_label: str, width: int = 640, height: int = 240, marker: float | None = None) -> str:
    """Counts per bin (``len(edges) - 1`` bins), series side by side within each bin; an optional
    vertical marker line (e.g. at 1.0 for MASE)."""
    names = list(series)
    n_bins = len(edges) - 1
    left, bottom, right, top_pad = 45, 40, 140, 15
    plot_w, plot_h = width - left - right, height - bottom - top_pad
    top = _nice_max(max((c for s in series.values() for c in s), default=1))
    lo, hi = edges[0], edges[-1]

    def x_of(v: float) -> float:
        return left + plot_w * (v - lo) / (hi - lo)

    body, marks = [], 0
    bin_w = plot_w / n_bins
    for b in range(n_bins):
        for j, name in enumerate(names):
            count = series[name][b]
            h = plot_h * count / top
            x = left + b * bin_w + j * bin_w / len(names)
            body.append(f'<rect class="mark" x="{x:.1f}" y="{top_pad + plot_h - h:.1f}" '
                        f'width="{bin_w / len(names) - 1:.1f}" height="{h:.1f}" '
                        f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(name)} '
                        f'{_fmt(edges[b])}-{_fmt(edges[b + 1])}: {count}</title></rect>')
            marks += 1
    for b in range(0, n_bins + 1, max(1, n_bins // 8)):
        body.append(f'<text x="{x_of(edges[b]):.1f}" y="{height - bottom + 14}" text-anchor="middle">'
                    f'{_fmt(edges[b])}</text>')
    body.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">{escape(x_label)}</text>')
    body.append(f'<text x="{left - 6}" y="{top_pad + 4}" text-anchor="end">{_fmt(top)}</text>'
                f'<text x="{left - 6}" y="{top_pad + plot_h}" text-anchor="end">0</text>')
    body.append(f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" stroke="#999"/>')
    if marker is not None and lo <= marker <= hi:
        body.append(f'<line x1="{x_of(marker):.1f}" y1="{top_pad}" x2="{x_of(marker):.1f}" '
                    f'y2="{top_pad + plot_h}" stroke="#c53030" stroke-dasharray="4 3"/>')
    body += _legend(names, width - right + 10, top_pad)
    return _svg(width, height, body, marks, title)


def forecast_chart(history: Sequence[tuple[float, float]], forecast: Sequence[tuple],
                   title: str, width: int = 420, height: int = 200) -> str:
    """Actual demand (x, y) as a line, then the forecast (x, y, lo80, hi80, lo95, hi95) with its
    80% and 95% intervals as bands; x is a day number."""
    left, bottom, right, top_pad = 40, 22, 10, 22
    plot_w, plot_h = width - left - right, height - bottom - top_pad
    xs = [p[0] for p in history] + [p[0] for p in forecast]
    ys = [p[1] for p in history] + [v for p in forecast for v in (p[1], p[5]) if v is not None]
    if not xs:
        return _svg(width, height, [f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text>'], 0, title)
    x_lo, x_hi = min(xs), max(max(xs), min(xs) + 1)
    top = _nice_max(max(ys, default=1.0))

    def pt(x: float, y: float) -> str:
        return f"{left + plot_w * (x - x_lo) / (x_hi - x_lo):.1f},{top_pad + plot_h - plot_h * min(y, top) / top:.1f}"

    body, marks = [f'<text x="{left}" y="14" font-weight="600">{escape(title)}</text>'], 0
    for lo_i, hi_i, fill in ((4, 5, "#bee3f8"), (2, 3, "#90cdf4")):
        band = [p for p in forecast if p[lo_i] is not None and p[hi_i] is not None]
        if band:
            points = [pt(p[0], p[hi_i]) for p in band] + [pt(p[0], p[lo_i]) for p in reversed(band)]
            body.append(f'<polygon class="mark" points="{" ".join(points)}" fill="{fill}"/>')
            marks += 1
    if history:
        body.append(f'<polyline class="mark" points="{" ".join(pt(x, y) for x, y in history)}" '
                    f'fill="none" stroke="#2d3748" stroke-width="1.2"/>')
        marks += 1
    if forecast:
        body.append(f'<polyline class="mark" points="{" ".join(pt(p[0], p[1]) for p in forecast)}" '
                    f'fill="none" stroke="#dd6b20" stroke-width="1.8"/>')
        marks += 1
    body.append(f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" stroke="#999"/>'
                f'<text x="{left - 4}" y="{top_pad + 4}" text-anchor="end">{_fmt(top)}</text>'
                f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end">0</text>')
    return _svg(width, height, body, marks, title)


def heatmap(rows: Sequence[str], cols: Sequence[str], values: dict[tuple[str, str], float],
            labels: dict[tuple[str, str], str], title: str, width: int = 360, label_width: int = 40) -> str:
    """A grid of cells shaded by value (0..max), each with its label; rows named in the left
    ``label_width`` pixels, columns above."""
    cell, left, top_pad = 90, label_width, 30
    height = top_pad + cell * len(rows) + 10
    vmax = max(values.values(), default=0) or 1.0
    body, marks = [], 0
    for j, col in enumerate(cols):
        body.append(f'<text x="{left + j * cell + cell / 2}" y="{top_pad - 8}" text-anchor="middle" '
                    f'font-weight="600">{escape(_clip(col, 12))}</text>')
    for i, row in enumerate(rows):
        body.append(f'<text x="{left - 8}" y="{top_pad + i * cell + cell / 2 + 4}" text-anchor="end" '
                    f'font-weight="600">{escape(row)}</text>')
        for j, col in enumerate(cols):
            v = values.get((row, col), 0.0)
            shade = int(235 - 160 * v / vmax)
            body.append(f'<rect class="mark" x="{left + j * cell}" y="{top_pad + i * cell}" width="{cell - 2}" '
                        f'height="{cell - 2}" fill="rgb({shade},{shade + 10 if shade < 245 else 245},250)"/>'
                        f'<text x="{left + j * cell + cell / 2}" y="{top_pad + i * cell + cell / 2 + 4}" '
                        f'text-anchor="middle">{escape(labels.get((row, col), ""))}</text>')
            marks += 1
    return _svg(max(width, left + cell * len(cols) + 10), height, body, marks, title)


def calibration_chart(series: dict[str, Sequence[tuple[float, float, float]]], title: str,
                      width: int = 420, height: int = 320) -> str:
    """Observed rate against mean predicted probability on [0, 1] × [0, 1], one line of points
    per series ((predicted, observed, customers): the point's area grows with its customers),
    and the diagonal of a perfectly calibrated model."""
    left, bottom, right, top_pad = 45, 40, 130, 15
    plot_w, plot_h = width - left - right, height - bottom - top_pad
    x_of = lambda v: left + plot_w * v  # noqa: E731
    y_of = lambda v: top_pad + plot_h * (1 - v)  # noqa: E731
    most = max((n for s in series.values() for _, _, n in s), default=1.0) or 1.0
    body = [f'<rect x="{left}" y="{top_pad}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
            f'<line x1="{x_of(0)}" y1="{y_of(0)}" x2="{x_of(1)}" y2="{y_of(1)}" stroke="#999" '
            f'stroke-dasharray="4 3"/>']
    for v in (0, 0.5, 1):
        body.append(f'<text x="{x_of(v):.1f}" y="{height - bottom + 14}" text-anchor="middle">{_fmt(v)}</text>'
                    f'<text x="{left - 6}" y="{y_of(v) + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    body.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">mean predicted</text>')
    marks = 0
    for j, (name, points) in enumerate(series.items()):
        colour = PALETTE[j % len(PALETTE)]
        pts = sorted(points)
        if len(pts) > 1:
            path = " ".join(f"{x_of(p):.1f},{y_of(o):.1f}" for p, o, _ in pts)
            body.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for p, o, n in pts:
            r = 2 + 5 * math.sqrt(n / most)
            body.append(f'<circle class="mark" cx="{x_of(p):.1f}" cy="{y_of(o):.1f}" r="{r:.1f}" fill="{colour}">'
                        f'<title>{escape(name)}: predicted {_fmt(p)}, observed {_fmt(o)}, {int(n):,} customers'
                        f'</title></circle>')
            marks += 1
    body += _legend(list(series), width - right + 10, top_pad)
    return _svg(width, height, body, marks, title)
