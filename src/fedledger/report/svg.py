"""Hand-written inline SVG charts: no JavaScript library, no font or file to fetch.

The x axis always spans every planned round, so a live page fills its charts in from the left as
rounds are finalised instead of rescaling. Every label passes through :func:`html.escape`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

WIDTH, HEIGHT = 480, 250
LEFT, RIGHT, TOP, BOTTOM = 54, 14, 14, 40
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

PART_COLORS = {
    "train": "#3b6fb6",
    "crypto": "#e0892b",
    "ledger": "#4a9d5b",
    "store": "#9a6bb8",
    "aggregate": "#d1495b",
    "evaluate": "#5fb3b3",
}


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    raw = (hi - lo) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks = []
    value = start
    while value < hi + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _round_ticks(num_rounds: int) -> list[int]:
    if num_rounds <= 12:
        return list(range(1, num_rounds + 1))
    step = nice_ticks(0, num_rounds, 8)[1]
    step_i = max(1, int(step))
    return [1, *range(step_i, num_rounds + 1, step_i)]


def _fmt_tick(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return f"{value:.{min(decimals, 6)}f}"


def _frame(
    title: str,
    num_rounds: int,
    ticks: list[float],
    x_of: Callable[[float], float],
    y_of: Callable[[float], float],
    y_label: str,
) -> list[str]:
    """Axes, grid lines and tick labels shared by both chart kinds."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in ticks:
        y = y_of(tick)
        out.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(
            f'<text class="tick" x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{_fmt_tick(tick, step)}</text>'
        )
    base = TOP + PLOT_H
    out.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{base}" y2="{base}"/>')
    for r in _round_ticks(num_rounds):
        x = x_of(r)
        out.append(f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{base + 17}" text-anchor="middle">{r}</text>')
    out.append(
        f'<text class="label" x="{LEFT + PLOT_W / 2:.1f}" y="{HEIGHT - 4}" text-anchor="middle">round</text>'
    )
    out.append(
        f'<text class="label" transform="translate(13 {TOP + PLOT_H / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    return out


def _empty(out: list[str], message: str) -> None:
    out.append(
        f'<text class="empty" x="{LEFT + PLOT_W / 2:.1f}" y="{TOP + PLOT_H / 2:.1f}" '
        f'text-anchor="middle">{escape(message)}</text>'
    )


def line_chart(
    points: Sequence[tuple[int, float]],
    *,
    num_rounds: int,
    title: str,
    y_label: str,
    color: str,
    kind: str,
    fmt: Callable[[float], str],
    floor: float | None = None,
    ceiling: float | None = None,
    from_zero: bool = False,
) -> str:
    """A line with a marker per round; each marker carries ``data-round`` and a tooltip."""
    num_rounds = max([num_rounds, 1, *(r for r, _ in points)])
    values = [v for _, v in points if math.isfinite(v)]
    if values:
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.15 or max(abs(hi) * 0.05, 0.01)
        lo = 0.0 if from_zero else lo - pad
        hi = hi + pad
        if floor is not None:
            lo = max(lo, floor)
        if ceiling is not None:
            hi = min(hi, ceiling)
    else:
        lo, hi = (floor or 0.0), (ceiling or 1.0)
    ticks = nice_ticks(lo, hi)
    t_lo, t_hi = ticks[0], ticks[-1]
    span = (t_hi - t_lo) or 1.0

    def x_of(r: float) -> float:
        return LEFT + PLOT_W / 2 if num_rounds == 1 else LEFT + (r - 1) / (num_rounds - 1) * PLOT_W

    def y_of(v: float) -> float:
        return TOP + PLOT_H - (v - t_lo) / span * PLOT_H

    out = _frame(title, num_rounds, ticks, x_of, y_of, y_label)
    finite = [(r, v) for r, v in points if math.isfinite(v)]
    if not finite:
        _empty(out, "no finalised round yet")
    else:
        coords = [(x_of(r), y_of(v)) for r, v in finite]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        base = TOP + PLOT_H
        if len(coords) > 1:
            area = f"{coords[0][0]:.1f},{base} {path} {coords[-1][0]:.1f},{base}"
            out.append(f'<polygon class="area" points="{area}" fill="{color}"/>')
            out.append(f'<polyline class="line" points="{path}" stroke="{color}"/>')
        for (r, v), (x, y) in zip(finite, coords, strict=True):
            out.append(
                f'<circle class="pt" data-kind="{escape(kind)}" data-round="{r}" cx="{x:.1f}" cy="{y:.1f}" r="3.6" '
                f'fill="{color}"><title>round {r}: {escape(y_label)} {escape(fmt(v))}</title></circle>'
            )
        (r, v), (x, y) = finite[-1], coords[-1]
        anchor = "end" if x > LEFT + PLOT_W * 0.8 else "start"
        dx = -7 if anchor == "end" else 7
        out.append(
            f'<text class="value" x="{x + dx:.1f}" y="{y - 8:.1f}" text-anchor="{anchor}" fill="{color}">'
            f"{escape(fmt(v))}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def stacked_bars(
    bars: Sequence[tuple[int, Mapping[str, float]]],
    *,
    num_rounds: int,
    title: str,
    parts: Sequence[str],
) -> str:
    """One bar per round, split into ``parts`` (seconds); each segment has ``data-round``/``data-part``."""
    num_rounds = max([num_rounds, 1, *(r for r, _ in bars)])
    totals = [sum(max(0.0, s.get(p, 0.0)) for p in parts) for _, s in bars]
    ticks = nice_ticks(0.0, max(totals, default=0.0) or 1.0)
    top = ticks[-1] or 1.0
    slot = PLOT_W / num_rounds
    bar_w = max(2.0, min(34.0, slot * 0.62))

    def x_of(r: float) -> float:
        return LEFT + (r - 0.5) * slot

    def y_of(v: float) -> float:
        return TOP + PLOT_H - v / top * PLOT_H

    out = _frame(title, num_rounds, ticks, x_of, y_of, "seconds")
    if not bars:
        _empty(out, "no finalised round yet")
    for (r, seconds), total in zip(bars, totals, strict=True):
        x = x_of(r) - bar_w / 2
        y = float(TOP + PLOT_H)
        for part in parts:
            value = max(0.0, seconds.get(part, 0.0))
            h = value / top * PLOT_H
            y -= h
            out.append(
                f'<rect class="seg" data-round="{r}" data-part="{escape(part)}" x="{x:.1f}" y="{y:.2f}" '
                f'width="{bar_w:.1f}" height="{h:.2f}" fill="{PART_COLORS.get(part, "#888")}">'
                f"<title>round {r}: {escape(part)} {value:.3f} s</title></rect>"
            )
        out.append(
            f'<rect class="bar" data-round="{r}" x="{x:.1f}" y="{y:.2f}" width="{bar_w:.1f}" '
            f'height="{TOP + PLOT_H - y:.2f}" fill="none"><title>round {r}: {total:.3f} s in all</title></rect>'
        )
    out.append("</svg>")
    return "".join(out)


def share_bar(totals: Mapping[str, float], parts: Sequence[str]) -> str:
    """A thin 100% bar: where the run's measured time went, all rounds together."""
    total = sum(max(0.0, totals.get(p, 0.0)) for p in parts)
    if total <= 0:
        return ""
    out = ['<div class="share" role="img" aria-label="share of time by part">']
    for part in parts:
        value = max(0.0, totals.get(part, 0.0))
        pct = value / total * 100
        if pct <= 0:
            continue
        out.append(
            f'<span style="width:{pct:.3f}%;background:{PART_COLORS.get(part, "#888")}" '
            f'title="{escape(part)}: {value:.3f} s ({pct:.1f}%)"></span>'
        )
    out.append("</div>")
    return "".join(out)
