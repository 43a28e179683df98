"""The HTML that names each object in its mask colour (all text HTML-escaped); colours and overlays are
`model.media.render`'s."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import numpy as np

from model.media.render import Color, colors_for


def _label_text(label: str | None, i: int) -> str:
    return label if label else f"object {i + 1}"


def _css(color: Color) -> str:
    r, g, b = (int(c) for c in color)
    return f"rgb({r}, {g}, {b})"


def legend_html(labels: Sequence[str | None], colors: Sequence[Color] | None = None,
                summary: str = "") -> str:
    """A row of colour swatches with labels (unnamed objects become "object N"), after an optional summary line
    (e.g. counts)."""
    colors = colors_for(len(labels), colors)
    items = "".join(
        '<span class="segchat-legend-item" style="display:inline-flex;align-items:center;'
        'margin-right:0.8em">'
        f'<span style="display:inline-block;width:0.9em;height:0.9em;border-radius:2px;'
        f'margin-right:0.3em;background:{_css(color)}"></span>'
        f"{html.escape(_label_text(label, i))}</span>"
        for i, (label, color) in enumerate(zip(labels, colors))
    )
    head = f'<div class="segchat-counts">{html.escape(summary)}</div>' if summary else ""
    return f'<div class="segchat-legend">{head}{items}</div>'


def _phrase_spans(text: str, labels: Sequence[str | None]) -> list[tuple[int, int, int]]:
    """Non-overlapping (start, end, object index) of whole-word label matches.

    Longer labels claim text first, so "red cup" wins over "cup" inside it.
    """
    taken = np.zeros(len(text), dtype=bool)
    spans: list[tuple[int, int, int]] = []
    named = [i for i, label in enumerate(labels) if label and label.strip()]
    order = sorted(named, key=lambda i: -len(labels[i].strip()))
    for i in order:
        phrase = re.escape(labels[i].strip())
        for m in re.finditer(rf"(?<!\w){phrase}(?!\w)", text, flags=re.IGNORECASE):
            if not taken[m.start() : m.end()].any():
                taken[m.start() : m.end()] = True
                spans.append((m.start(), m.end(), i))
    return sorted(spans)


def colored_answer_html(
    text: str, labels: Sequence[str | None], colors: Sequence[Color] | None = None
) -> str:
    """The answer as HTML with every mention of each object's label highlighted in its colour.

    Everything from `text` and `labels` is escaped, so neither can inject markup.
    """
    colors = colors_for(len(labels), colors)
    parts: list[str] = []
    pos = 0
    for start, end, i in _phrase_spans(text, labels):
        r, g, b = (int(c) for c in colors[i])
        parts.append(html.escape(text[pos:start]))
        parts.append(
            f'<span class="segchat-object" style="background-color:rgba({r}, {g}, {b}, 0.35);'
            f'border-bottom:2px solid rgb({r}, {g}, {b})">{html.escape(text[start:end])}</span>'
        )
        pos = end
    parts.append(html.escape(text[pos:]))
    return f'<span class="segchat-answer" style="white-space:pre-wrap">{"".join(parts)}</span>'
