"""The intake chart: the last hour's webhook outcomes per minute, as stacked bars in an inline
SVG (no script, no asset), each bar titled with its figures, and the figures as a table beside
it for screen readers and for copying."""

from __future__ import annotations

from infrastructure.intake_tally import CATEGORIES, Intake
from interfaces.console.html import esc, table

WIDTH, HEIGHT = 600, 160
LABELS = {
    "accepted": "Accepted",
    "duplicate": "Duplicate",
    "parked": "Parked",
    "refused": "Refused",
}


def _time(minute: str) -> str:
    return minute[11:16]  # 2025-03-04T15:22Z: 15:22 (UTC)


def intake_chart(intake: Intake) -> str:
    peak = max([sum(m.counts.values()) for m in intake.minutes] + [1])
    slot = WIDTH / max(len(intake.minutes), 1)
    bars = []
    for index, minute in enumerate(intake.minutes):
        top = float(HEIGHT)
        rects = []
        for name in CATEGORIES:
            height = HEIGHT * minute.counts[name] / peak
            if height:
                top -= height
                rects.append(
                    f'<rect class="s-{name}" x="{index * slot + 1:.1f}" y="{top:.1f}"'
                    f' width="{slot - 2:.1f}" height="{height:.1f}"/>'
                )
        said = ", ".join(f"{LABELS[n].lower()} {minute.counts[n]}" for n in CATEGORIES)
        bars.append(f"<g><title>{esc(_time(minute.minute))} UTC: {esc(said)}</title>")
        bars.append("".join(rects) + "</g>")
    first, last = intake.minutes[0].minute, intake.minutes[-1].minute
    summary = ", ".join(f"{LABELS[n].lower()} {intake.total(n)}" for n in CATEGORIES)
    legend = "".join(
        f'<li><span class="key s-{name}" aria-hidden="true"></span>{LABELS[name]}</li>'
        for name in CATEGORIES
    )
    return (
        '<figure class="chart">'
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="intake-caption">'
        f'<line class="axis" x1="0" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}"/>'
        f"{''.join(bars)}</svg>"
        f'<div class="chart-axis"><span>{esc(_time(first))}</span>'
        f"<span>peak {peak} a minute</span><span>{esc(_time(last))} UTC</span></div>"
        f'<ul class="legend">{legend}</ul>'
        f'<figcaption id="intake-caption">Webhook intake per minute, {esc(_time(first))} to '
        f"{esc(_time(last))} UTC: {esc(summary)}.</figcaption></figure>"
        f"<details><summary>Figures by minute</summary>{_figures(intake)}</details>"
    )


def _figures(intake: Intake) -> str:
    rows = [
        [esc(_time(m.minute)), *(esc(m.counts[n]) for n in CATEGORIES)]
        for m in reversed(intake.minutes)
        if any(m.counts.values())
    ]
    return table("Intake by minute (UTC), newest first", ["Minute", *LABELS.values()], rows)
