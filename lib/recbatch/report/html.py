"""Plain HTML for the report: one page, inline CSS, no JavaScript, images referenced relatively.

Every value that comes from a table goes through ``text`` or ``number`` (escaped), so a stage
name or an error message with ``<`` in it cannot break the page. Functions return HTML strings
that are safe to concatenate; ``table`` takes cells that are already HTML.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

CSS = """
body { font: 14px/1.5 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #222; max-width: 1080px; margin: 2em auto; padding: 0 1.2em; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; }
h2 { font-size: 1.25em; margin-top: 2.2em; padding-bottom: 0.2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.02em; margin: 1.4em 0 0.4em; }
.meta { color: #666; margin-top: 0; }
nav ol { padding-left: 1.4em; margin: 0.6em 0; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 13px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e6e6e6; text-align: left; vertical-align: top; }
th { background: #f5f5f5; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfbfb; }
.bar { background: #dbe6f3; height: 10px; border-radius: 2px; min-width: 1px; }
.track { position: relative; width: 260px; height: 12px; background: #f3f3f3; }
.span { position: absolute; top: 1px; height: 10px; background: #4c78a8; border-radius: 2px;
        min-width: 2px; }
.span.failed { background: #e45756; } .span.running { background: #f2b701; }
.span.skipped { background: #bbbbbb; }
.note { color: #555; background: #f7f7f2; border-left: 3px solid #c9c2a6; padding: 0.35em 0.8em;
        margin: 0.6em 0; }
figure { margin: 0.8em 0 1.4em; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; margin-top: 0.3em; max-width: 820px; }
.best { font-weight: 700; }
.status-failed { color: #c0392b; font-weight: 600; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 2px; }
""".strip()


@dataclass(frozen=True)
class Section:
    """One section of the page: its anchor, its title and its body (HTML)."""

    anchor: str
    title: str
    body: str


def text(value: object) -> str:
    """Escaped text of any value; None shows as an em dash."""
    return "—" if value is None else escape(str(value))


def number(value: object, digits: int = 4) -> str:
    """A number for a table cell: thousands separators for integers, ``digits`` decimals for
    fractions, signed infinities, and an em dash for null/NaN (e.g. precision of nothing)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return text(value)
    if isinstance(value, numbers.Integral):  # numpy integers too
        return f"{int(value):,}"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return text(value)
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "+∞" if value > 0 else "−∞"
    if value.is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"{value + 0.0:.{digits}f}"  # + 0.0: print -0.0 as 0.0000


def note(message: str) -> str:
    """A one-line note standing for a skipped part (``message`` is escaped)."""
    return f'<p class="note">{text(message)}</p>'


def paragraph(html: str) -> str:
    return f"<p>{html}</p>"


def table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[str] = ()
) -> str:
    """An HTML table; cells are HTML already (built with ``text``/``number``)."""
    align = [' class="num"' if c in numeric else "" for c in columns]
    head = "".join(f"<th{a}>{text(c)}</th>" for c, a in zip(columns, align, strict=True))
    body = "".join(
        "<tr>"
        + "".join(f"<td{a}>{cell}</td>" for cell, a in zip(row, align, strict=True))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(src: str, alt: str, caption: str) -> str:
    """A PNG beside the page (``src`` is a file name, referenced relatively) with its caption."""
    return (
        f'<figure><img src="{escape(src, quote=True)}" alt="{escape(alt, quote=True)}">'
        f"<figcaption>{text(caption)}</figcaption></figure>"
    )


def bar(fraction: float, width_px: int = 180) -> str:
    """A horizontal bar as a CSS box (``fraction`` of ``width_px``): counts readable at a glance."""
    fraction = 0.0 if not math.isfinite(fraction) else min(max(fraction, 0.0), 1.0)
    return f'<div class="bar" style="width:{fraction * width_px:.0f}px"></div>'


SPAN_CLASSES = {
    "failed": " failed",
    "error": " failed",
    "running": " running",
    "skipped": " skipped",
}


def span(start: float, length: float, status: str | None) -> str:
    """A timeline bar: starts at ``start`` and lasts ``length`` (fractions of the run)."""
    start = min(max(start, 0.0), 1.0)
    length = min(max(length, 0.0), 1.0 - start)
    css = SPAN_CLASSES.get((status or "").lower(), "")
    return (
        f'<div class="track"><div class="span{css}" '
        f'style="left:{start * 100:.1f}%;width:{length * 100:.1f}%"></div></div>'
    )


def page(title: str, meta: str, sections: Sequence[Section]) -> str:
    """The whole document: title, meta line, table of contents, the sections."""
    toc = "".join(f'<li><a href="#{s.anchor}">{text(s.title)}</a></li>' for s in sections)
    body = "\n".join(
        f'<section id="{s.anchor}"><h2>{text(s.title)}</h2>\n{s.body}\n</section>' for s in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{text(title)}</title><style>\n{CSS}\n</style></head>\n<body>\n"
        f'<h1>{text(title)}</h1>\n<p class="meta">{meta}</p>\n'
        f"<nav><ol>{toc}</ol></nav>\n{body}\n</body></html>\n"
    )
