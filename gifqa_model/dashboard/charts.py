"""Small inline SVG charts: drawn in microseconds, no plotting library on the page's path."""

from __future__ import annotations

import html

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
W, H, PAD = 560, 220, 36


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    title: str,
    mark_x: float | None = None,
    y_range: tuple[float, float] = (0.0, 1.0),
) -> str:
    """One line per series over a shared x (versions), y in `y_range`; `mark_x` (the
    champion) drawn as a dashed line. Empty series → a one-line note."""
    points = [p for values in series.values() for p in values]
    if not points:
        return f"<p class=muted>{html.escape(title)}: nothing recorded</p>"
    xs = [x for x, _ in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = y_range

    def sx(x: float) -> float:
        return PAD + (x - x0) / ((x1 - x0) or 1) * (W - 2 * PAD)

    def sy(y: float) -> float:
        return H - PAD - (min(max(y, y0), y1) - y0) / ((y1 - y0) or 1) * (H - 2 * PAD)

    parts = [
        f"<svg class=chart width={W + 140} height={H} role=img><title>{html.escape(title)}</title>",
        f"<text x={PAD} y=14 font-size=12>{html.escape(title)}</text>",
        f"<line x1={PAD} y1={H - PAD} x2={W - PAD} y2={H - PAD} stroke=#999 />",
        f"<line x1={PAD} y1={PAD} x2={PAD} y2={H - PAD} stroke=#999 />",
    ]
    for y in (y0, (y0 + y1) / 2, y1):
        parts.append(f"<text x=4 y={sy(y) + 4:.0f} font-size=10>{y:.2f}</text>")
    for x in sorted(set(xs))[:: max(1, len(set(xs)) // 12)]:
        parts.append(f"<text x={sx(x) - 6:.0f} y={H - PAD + 14} font-size=10>v{x:g}</text>")
    if mark_x is not None and x0 <= mark_x <= x1:
        parts.append(
            f"<line class=champion x1={sx(mark_x):.1f} y1={PAD} x2={sx(mark_x):.1f} "
            f"y2={H - PAD} stroke=#176f2c stroke-dasharray=4 />"
            f"<text x={sx(mark_x) - 20:.0f} y={H - 6} font-size=10 fill=#176f2c>champion</text>"
        )
    for i, (name, values) in enumerate(sorted(series.items())):
        colour = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(values))
        parts.append(
            f"<polyline fill=none stroke={colour} stroke-width=1.5 points='{path}'>"
            f"<title>{html.escape(name)}</title></polyline>"
        )
        parts.append(
            f"<text x={W - PAD + 8} y={PAD + 14 * i} font-size=11 fill={colour}>"
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
