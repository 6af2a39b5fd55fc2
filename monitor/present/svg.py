"""Charts as SVG text, drawn on the server: no JavaScript and no dependency, pure functions.

`line_chart` draws a score history (one line per series, each with its own colour *and* dash
pattern, so no line is told apart by colour alone; every point has a native tooltip).
`interval_chart` draws one drop with its confidence bounds against the tolerance it was held to.
Every text that goes into the SVG is escaped here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from monitor import units
from monitor.vocabulary import Kind

# Okabe-Ito: told apart by people with any common colour-vision deficiency.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
DASHES = ("", "6 3", "2 3", "8 3 2 3")
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 44, 12, 12, 28


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]  # (x, y), x ascending


@dataclass(frozen=True)
class Frame:
    """Where data lands on the drawing: x and y ranges mapped into a width x height box."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int
    height: int

    def x(self, value: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return PAD_LEFT + (value - self.x0) / span * (self.width - PAD_LEFT - PAD_RIGHT)

    def y(self, value: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.height - PAD_BOTTOM - (value - self.y0) / span * (self.height - PAD_TOP - PAD_BOTTOM)


def line_chart(title: str, series: Sequence[Series], *, width: int = 380, height: int = 190,
               y_range: tuple[float, float] | None = None,
               x_format: Callable[[float], str] = lambda x: f"{x:g}",
               y_format: Callable[[float], str] = lambda y: f"{y:.2f}") -> str:
    """One line per series over a shared x axis; `y_range` fixes the axis (accuracy: 0 to 1)."""
    points = [p for s in series for p in s.points]
    if not points:
        return _svg(width, 40, title, f'<text x="4" y="28" class="muted">{escape(title)}: no runs yet</text>')
    frame = _frame(points, width, height, y_range)
    parts = [*_axes(frame, x_format, y_format)]
    for index, one in enumerate(series):
        parts.append(_line(frame, one, index, x_format, y_format))
    return _svg(width, height, title, "".join(parts))


def legend(names: Sequence[str]) -> str:
    """The key to `line_chart`'s lines, as a small SVG of its own (same order, same styles)."""
    items = []
    for index, name in enumerate(names):
        x = 4 + 120 * index
        items.append(f'<line x1="{x}" y1="10" x2="{x + 28}" y2="10" stroke="{_colour(index)}" '
                     f'stroke-width="2.5" stroke-dasharray="{_dash(index)}"/>'
                     f'<text x="{x + 34}" y="14">{escape(name)}</text>')
    return _svg(4 + 120 * len(names), 20, "legend: " + ", ".join(names), "".join(items))


def interval_chart(drop: float, low: float, high: float, tolerance: float | None, *,
                   kind: str = Kind.GENERATE_UNTIL, width: int = 300, height: int = 44) -> str:
    """The drop (a dot) inside its confidence bounds (a bar), beside zero and the tolerance (a
    dashed red line); right of the line is past the tolerance. Numbers in `kind`'s unit."""
    marks = [drop, low, high, 0.0, *([tolerance] if tolerance is not None else [])]
    lo, hi = min(marks), max(marks)
    margin = (hi - lo) * 0.08 or 0.01
    frame = Frame(lo - margin, hi + margin, 0, 1, width, height)
    mid = 24
    zero = frame.x(0)
    parts = [f'<line x1="{zero:.1f}" y1="{mid - 8}" x2="{zero:.1f}" y2="{mid + 8}" class="axis"/>',
             f'<text x="{zero:.1f}" y="{height - 2}" text-anchor="middle" class="muted">0</text>']
    if tolerance is not None:
        tx = frame.x(tolerance)
        anchor, shift = ("end", -4) if tx > width * 0.6 else ("start", 4)
        parts += [f'<line x1="{tx:.1f}" y1="2" x2="{tx:.1f}" y2="{mid + 10}" class="tolerance"/>',
                  f'<text x="{tx + shift:.1f}" y="10" text-anchor="{anchor}" class="tolerance-text">'
                  f"tolerance {units.tolerance_text(kind, tolerance)}</text>"]
    parts += [f'<line x1="{frame.x(low):.1f}" y1="{mid}" x2="{frame.x(high):.1f}" y2="{mid}" '
              f'class="bounds"/>',
              f'<circle cx="{frame.x(drop):.1f}" cy="{mid}" r="4.5" class="estimate"/>']
    title = f"drop {units.drop_text(kind, drop)}, bounds {units.bounds_text(kind, low, high)}"
    if tolerance is not None:
        title += f", tolerance {units.tolerance_text(kind, tolerance)}"
    return _svg(width, height, title, "".join(parts))


def _frame(points: Sequence[tuple[float, float]], width: int, height: int,
           y_range: tuple[float, float] | None) -> Frame:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    y0, y1 = y_range if y_range is not None else (min(ys), max(ys))
    if y_range is None:
        pad = (y1 - y0) * 0.1 or abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    return Frame(min(xs), max(xs), y0, y1, width, height)


def _axes(frame: Frame, x_format: Callable[[float], str], y_format: Callable[[float], str]) -> list[str]:
    right, bottom = frame.width - PAD_RIGHT, frame.height - PAD_BOTTOM
    parts = [f'<line x1="{PAD_LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" class="axis"/>',
             f'<line x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{bottom}" class="axis"/>']
    for step in range(3):
        value = frame.y0 + (frame.y1 - frame.y0) * step / 2
        y = frame.y(value)
        parts.append(f'<line x1="{PAD_LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{PAD_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{escape(y_format(value))}</text>")
    for value, anchor in ((frame.x0, "start"), (frame.x1, "end")):
        parts.append(f'<text x="{frame.x(value):.1f}" y="{frame.height - 8}" text-anchor="{anchor}">'
                     f"{escape(x_format(value))}</text>")
    return parts


def _line(frame: Frame, series: Series, index: int, x_format: Callable[[float], str],
          y_format: Callable[[float], str]) -> str:
    colour = _colour(index)
    coords = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in series.points)
    dots = "".join(f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="2.6" fill="{colour}"><title>'
                   f"{escape(series.name)}: {escape(y_format(y))} at {escape(x_format(x))}</title></circle>"
                   for x, y in series.points)
    return (f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2" '
            f'stroke-dasharray="{_dash(index)}"/>{dots}')


def _svg(width: int, height: int, title: str, body: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
            f"<title>{escape(title)}</title>{body}</svg>")


def _colour(index: int) -> str:
    return COLOURS[index % len(COLOURS)]


def _dash(index: int) -> str:
    return DASHES[index % len(DASHES)]
