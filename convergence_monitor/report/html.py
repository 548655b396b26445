"""Render the report's ``index.html``: one self-contained page with inline CSS and relative image paths."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

MISSING_TEXT = "n/a"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 2rem auto; max-width: 1400px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
figure { margin: 1rem 0 2rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.92rem; margin-top: 0.3rem; }
.meta { color: #555; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.text { text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
dt { font-weight: 600; margin-top: 0.4rem; }
dd { margin-left: 1.2rem; }
"""


@dataclass(frozen=True)
class FigureEntry:
    """A figure on the page: its file name relative to the page, a heading and a caption."""

    filename: str
    heading: str
    caption: str


def render_index(
    *,
    title: str,
    metadata: Sequence[str],
    figures: Sequence[FigureEntry],
    summary: pd.DataFrame,
    definitions: Sequence[tuple[str, str]],
    shift: pd.DataFrame | None = None,
    missing: pd.DataFrame | None = None,
) -> str:
    """Return the HTML text of the report page.

    The page loads nothing from the network: styles are inline and images are
    referenced by ``FigureEntry.filename`` relative to the page. NaN cells
    of the tables read ``n/a``.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [f'<p class="meta">{html.escape(line)}</p>' for line in metadata]

    parts.append('<nav><ul>')
    for index, entry in enumerate(figures):
        parts.append(f'<li><a href="#figure-{index}">{html.escape(entry.heading)}</a></li>')
    parts.append('<li><a href="#summary">Summary table</a></li>')
    parts.append("</ul></nav>")

    for index, entry in enumerate(figures):
        parts += [
            f'<h2 id="figure-{index}">{html.escape(entry.heading)}</h2>',
            "<figure>",
            f'<img src="{html.escape(entry.filename)}" alt="{html.escape(entry.heading)}">',
            f"<figcaption>{html.escape(entry.caption)}</figcaption>",
            "</figure>",
        ]

    if shift is not None and not shift.empty:
        parts += ["<h2>Shift magnitude per probe set</h2>", _render_table(shift)]

    parts += [
        '<h2 id="summary">Summary table</h2>',
        '<p>The same values are in <a href="summary.csv">summary.csv</a>. '
        f"{MISSING_TEXT} marks a value that is missing or not defined; the note column says why.</p>",
        _render_table(summary),
        "<h3>Definitions</h3>",
        "<dl>",
    ]
    for term, meaning in definitions:
        parts += [f"<dt>{html.escape(term)}</dt>", f"<dd>{html.escape(meaning)}</dd>"]
    parts.append("</dl>")

    if missing is not None and not missing.empty:
        parts += [
            "<h2>Missing scores</h2>",
            "<p>Steps at which at least one seed pair has a NaN score. "
            "Means over pairs leave those pairs out; a step where every pair is NaN has no mean.</p>",
            _render_table(missing),
        ]

    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _render_table(frame: pd.DataFrame) -> str:
    rows = ['<div class="table-wrap"><table>', "<thead><tr>"]
    rows += [f"<th>{html.escape(str(column))}</th>" for column in frame.columns]
    rows.append("</tr></thead><tbody>")
    for record in frame.itertuples(index=False):
        cells = []
        for value in record:
            css_class = ' class="text"' if isinstance(value, str) else ""
            cells.append(f"<td{css_class}>{html.escape(_format_cell(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</tbody></table></div>")
    return "\n".join(rows)


def _format_cell(value) -> str:
    if value is None or value is pd.NA:
        return MISSING_TEXT
    if isinstance(value, float):
        if value != value:
            return MISSING_TEXT
        return f"{value:.4g}"
    return str(value)
