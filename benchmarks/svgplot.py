"""A tiny SVG line plot writer, so benchmarks draw figures without matplotlib.

``write_svg(path, panels)`` draws the panels side by side, each a set of
series (one y value per x = 0, 1, 2, ...) on shared axes, with an optional
dashed horizontal guide (a target).  Text only: the file is a few kilobytes
and renders on GitHub and in any browser.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

WIDTH, HEIGHT, MARGIN = 480, 320, 48
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


@dataclass
class Panel:
    title: str
    series: list[list[float]]
    guide: float | None = None


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    step = (hi - lo) / (count - 1)
    return [lo + k * step for k in range(count)]


def write_svg(path: Path, panels: list[Panel], *, xlabel: str, ylabel: str) -> None:
    """Write ``panels`` side by side as one SVG file at ``path``."""
    values = [v for p in panels for s in p.series for v in s]
    values += [p.guide for p in panels if p.guide is not None]
    lo, hi = min(0.0, *values), max(values) * 1.05
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH * len(panels)}" '
        f'height="{HEIGHT}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH * len(panels)}" height="{HEIGHT}" fill="white"/>',
    ]
    for k, panel in enumerate(panels):
        parts += _panel(panel, k * WIDTH, lo, hi, xlabel, ylabel)
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")


def _panel(panel: Panel, left: int, lo: float, hi: float, xlabel: str, ylabel: str) -> list[str]:
    x0, x1, y0, y1 = left + MARGIN, left + WIDTH - 12, HEIGHT - MARGIN, 28
    rounds = max(len(s) for s in panel.series) - 1 or 1

    def px(i: float) -> float:
        return x0 + (x1 - x0) * i / rounds

    def py(v: float) -> float:
        return y0 - (y0 - y1) * (v - lo) / ((hi - lo) or 1.0)

    out = [
        f'<text x="{left + WIDTH / 2}" y="16" text-anchor="middle">{escape(panel.title)}</text>',
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>',
        f'<text x="{(x0 + x1) / 2}" y="{HEIGHT - 10}" text-anchor="middle">{escape(xlabel)}</text>',
        f'<text x="{left + 12}" y="{(y0 + y1) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 {left + 12} {(y0 + y1) / 2})">{escape(ylabel)}</text>',
    ]
    for v in _ticks(lo, hi):
        out.append(f'<text x="{x0 - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    for i in range(0, rounds + 1, max(1, rounds // 10)):
        out.append(f'<text x="{px(i):.1f}" y="{y0 + 14}" text-anchor="middle">{i}</text>')
    for n, series in enumerate(panel.series):
        points = " ".join(f"{px(i):.1f},{py(v):.1f}" for i, v in enumerate(series))
        colour = PALETTE[n % len(PALETTE)]
        out.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" '
            'stroke-width="1" stroke-opacity="0.6"/>'
        )
    if panel.guide is not None:
        g = py(panel.guide)
        out.append(
            f'<line x1="{x0}" y1="{g:.1f}" x2="{x1}" y2="{g:.1f}" stroke="black" '
            'stroke-dasharray="4 3"/>'
        )
        out.append(f'<text x="{x1}" y="{g - 4:.1f}" text-anchor="end">{panel.guide:g}</text>')
    return out
