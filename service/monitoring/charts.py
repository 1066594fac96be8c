"""Inline SVG charts for the monitoring page, and the number formats they share with it.

Pure: numbers in, ``markupsafe.Markup`` SVG out; every piece of text is escaped here. Colour
is never the only signal: bars carry ``<title>`` text and legends use words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

MISSING = "—"
# Chart palette: colour is never the only signal (bars carry <title> text, legends use words).
BLUE, RED, GREY, MUTED = "#2563eb", "#dc2626", "#cbd5e1", "#64748b"


def finite_number(value: Any) -> float | None:
    """Return a finite float, or ``None`` for anything else (missing, NaN, text, bools)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def fmt_pct(value: Any, digits: int = 1) -> str:
    number = finite_number(value)
    return MISSING if number is None else f"{number * 100:.{digits}f}%"


def fmt_num(value: Any, digits: int = 3) -> str:
    number = finite_number(value)
    if number is None:
        return MISSING
    if number == int(number) and abs(number) < 1e12:
        return f"{int(number):,}"
    return f"{number:.{digits}g}" if abs(number) < 1e-3 else f"{number:,.{digits}f}".rstrip("0").rstrip(".")


def fmt_ms(value: Any) -> str:
    number = finite_number(value)
    return MISSING if number is None else f"{number:,.1f} ms"


def fmt_time(epoch: Any) -> str:
    number = finite_number(epoch)
    return MISSING if number is None else datetime.fromtimestamp(number, UTC).strftime("%H:%M")


def moment(value: Any) -> datetime | None:
    """Read a point in time given as unix seconds (the store) or ISO 8601 text (reports); else ``None``."""
    number = finite_number(value)
    try:
        if number is not None:
            return datetime.fromtimestamp(number, UTC)
        if isinstance(value, str) and value:
            parsed = datetime.fromisoformat(value)  # Python 3.11 reads a trailing "Z"
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    return None


def fmt_utc(when: datetime) -> str:
    """A time people read at a glance: ``2026-11-24 10:12 UTC``."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso_utc(when: datetime) -> str:
    """The same time for machines (a ``<time datetime>`` attribute): ``2026-11-24T10:12:07Z``."""
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def fmt_duration(seconds: Any) -> str:
    """Round a non-negative duration to its two largest units: ``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    number = finite_number(seconds)
    if number is None or number < 0:
        return MISSING
    total = int(number)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min" if minutes else f"{secs} s"


# -- charts --------------------------------------------------------------------------------


def _svg(width: int, height: int, label: str, body: list[str]) -> Markup:
    text = escape(label)
    return Markup(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '  # nosec B704  # noqa: S704  ints, the label escaped above, parts built escaped
                  f'aria-label="{text}" class="chart" preserveAspectRatio="xMidYMid meet">'
                  f"<title>{text}</title>{''.join(body)}</svg>")


def _text(x: float, y: float, content: str, anchor: str = "start", cls: str = "axis") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="{cls}">{escape(content)}</text>'


def traffic_chart(timeline: Sequence[Mapping[str, Any]], width: int = 560, height: int = 170) -> Markup | None:
    """Draw requests per time bucket as bars, the failed part of each bar in red; ``None`` if empty."""
    buckets = [(b.get("start"), finite_number(b.get("requests")) or 0.0, finite_number(b.get("errors")) or 0.0) for b in timeline]
    if not buckets:
        return None
    left, right, top, bottom = 44, 8, 12, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(r for _, r, _ in buckets) or 1.0
    slot = plot_w / len(buckets)
    body = _axes(left, top, plot_w, plot_h, fmt_num(peak), "0")
    for i, (start, requests, errors) in enumerate(buckets):
        x = left + i * slot + slot * 0.1
        h_req, h_err = plot_h * requests / peak, plot_h * min(errors, requests) / peak
        tip = escape(f"{fmt_time(start)} UTC: {fmt_num(requests)} requests, {fmt_num(errors)} errors")
        body.append(f'<g><title>{tip}</title>'
                    f'<rect x="{x:.1f}" y="{top + plot_h - h_req:.1f}" width="{slot * 0.8:.1f}" height="{h_req:.1f}" '
                    f'fill="{BLUE}" class="bar"/>'
                    + (f'<rect x="{x:.1f}" y="{top + plot_h - h_err:.1f}" width="{slot * 0.8:.1f}" height="{h_err:.1f}" '
                       f'fill="{RED}" class="bar error"/>' if h_err else "") + "</g>")
    body += _time_labels(buckets[0][0], buckets[-1][0], left, left + plot_w, top + plot_h + 14)
    body.append(_legend([(BLUE, "requests"), (RED, "errors")], left, height - 4))
    return _svg(width, height, "Requests and errors over time", body)


def line_chart(points: Sequence[tuple[Any, Any]], *, label: str, unit: str, fmt: Any = fmt_num,
               reference: float | None = None, bounds: tuple[float, float] | None = None,
               zero_based: bool = False, width: int = 560, height: int = 170) -> Markup | None:
    """Draw values over time as a line with dots (gaps where a value is missing); ``None`` if empty."""
    values = [(t, finite_number(v)) for t, v in points]
    known = [v for _, v in values if v is not None]
    if not known:
        return None
    span = known if reference is None else [*known, reference]
    lo, hi = bounds or (min([*span, 0.0]) if zero_based else min(span), max(span))
    if hi - lo < 1e-9:  # a flat line still needs a scale
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    left, right, top, bottom = 56, 8, 12, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(len(values) - 1, 1)

    def y(v: float) -> float:
        return top + plot_h * (1 - (v - lo) / (hi - lo))

    body = _axes(left, top, plot_w, plot_h, fmt(hi), fmt(lo))
    if reference is not None and lo <= reference <= hi:
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(reference):.1f}" y2="{y(reference):.1f}" '
                    f'stroke="{MUTED}" stroke-dasharray="5 4" class="reference"/>')
    segment: list[str] = []
    for i, (t, v) in enumerate([*values, (None, None)]):
        if v is None:
            if len(segment) > 1:
                body.append(f'<polyline points="{" ".join(segment)}" fill="none" stroke="{BLUE}" stroke-width="2"/>')
            segment = []
            continue
        x = left + (i * step if len(values) > 1 else plot_w / 2)
        segment.append(f"{x:.1f},{y(v):.1f}")
        body.append(f'<circle cx="{x:.1f}" cy="{y(v):.1f}" r="3" fill="{BLUE}" class="point">'
                    f"<title>{escape(f'{fmt_time(t)} UTC: {fmt(v)}')}</title></circle>")
    body += _time_labels(values[0][0], values[-1][0], left, left + plot_w, top + plot_h + 14)
    legend = [(BLUE, label.split(" over ")[0].lower() + (f" ({unit})" if unit else ""))]
    if reference is not None:
        legend.append((MUTED, f"reference {fmt(reference)} (dashed)"))
    body.append(_legend(legend, left, height - 4))
    return _svg(width, height, label, body)


def distribution_chart(reference: Sequence[float | None], current: Sequence[float | None], bins: Sequence[str],
                       *, label: str, width: int = 240, height: int = 64) -> Markup | None:
    """Draw reference (outlined grey) and current (solid blue) shares side by side per bin."""
    count = max(len(reference), len(current))
    if not count:
        return None
    peak = max([v for v in [*reference, *current] if v is not None] or [0.0]) or 1.0
    top, bottom = 4, 4
    plot_h = height - top - bottom
    slot = width / count
    bar = slot * 0.4
    body = [f'<line x1="0" x2="{width}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{MUTED}"/>']
    for i in range(count):
        ref = reference[i] if i < len(reference) else None
        cur = current[i] if i < len(current) else None
        name = bins[i] if i < len(bins) else f"bin {i + 1}"
        tip = escape(f"{name}: reference {fmt_pct(ref)}, current {fmt_pct(cur)}")
        x = i * slot + slot * 0.1
        parts = [f"<title>{tip}</title>"]
        for offset, value, style in ((0.0, ref, f'fill="{GREY}" stroke="{MUTED}" class="bar reference"'),
                                     (bar, cur, f'fill="{BLUE}" class="bar current"')):
            h = plot_h * (value or 0.0) / peak
            parts.append(f'<rect x="{x + offset:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" {style}/>')
        body.append(f"<g>{''.join(parts)}</g>")
    return _svg(width, height, label, body)


def _axes(left: int, top: int, plot_w: float, plot_h: float, high: str, low: str) -> list[str]:
    return [f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="{MUTED}"/>',
            f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{MUTED}"/>',
            f'<line x1="{left}" x2="{left + plot_w}" y1="{top}" y2="{top}" stroke="{GREY}" stroke-dasharray="2 3"/>',
            _text(left - 4, top + 4, high, "end"), _text(left - 4, top + plot_h, low, "end")]


def _time_labels(first: Any, last: Any, x0: float, x1: float, y: float) -> list[str]:
    labels = [_text(x0, y, fmt_time(first), "start")]
    if last != first:
        labels.append(_text(x1, y, f"{fmt_time(last)} UTC", "end"))
    return labels


def _legend(items: Sequence[tuple[str, str]], x: float, y: float) -> str:
    parts = []
    for colour, text in items:
        parts.append(f'<rect x="{x:.1f}" y="{y - 8:.1f}" width="10" height="10" fill="{colour}"/>'
                     + _text(x + 14, y, text, "start", "legend"))
        x += 24 + 6.5 * len(text)
    return f"<g>{''.join(parts)}</g>"
