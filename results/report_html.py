"""The HTML of the report page: text escaped, tables, and the page around the sections with its
inline style (:mod:`results.report` puts the sections together)."""
from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

import pandas as pd

#: At most this many rows of one listing (missing cells, a comparison).
MAX_ROWS = 200
_NUM = ' class="num"'


def escape(value: object) -> str:
    """``value`` as HTML text."""
    return html.escape("" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value))


def html_table(header: Sequence[str], rows: Iterable[Sequence[object]], numeric_from: int | None = None,
               last_row_total: bool = False, marked: Sequence[bool] | None = None) -> str:
    """An HTML table; columns from ``numeric_from`` on are right-aligned, ``marked`` rows highlighted."""
    def cell(index: int, value: object, tag: str) -> str:
        numeric = numeric_from is not None and index >= numeric_from
        return f"<{tag}{_NUM if numeric else ''}>{escape(value)}</{tag}>"

    out = ["<table><thead><tr>", *(cell(i, name, "th") for i, name in enumerate(header)), "</tr></thead><tbody>"]
    rows = list(rows)
    for number, row in enumerate(rows):
        classes = []
        if marked is not None and number < len(marked) and marked[number]:
            classes.append("sig")
        if last_row_total and number == len(rows) - 1:
            classes.append("total")
        out.append(f'<tr class="{" ".join(classes)}">' if classes else "<tr>")
        out.extend(cell(i, value, "td") for i, value in enumerate(row))
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


#: the page's style sheet, inline: nothing is fetched.
STYLE = """
body { font-family: sans-serif; margin: 1.5em 2em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; } h4 { margin: .3em 0; }
.meta { color: #555; } nav a { margin: 0 .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .2em .5em; text-align: left; white-space: nowrap; }
th { background: #f3f3f3; } td.num, th.num { text-align: right; }
tr.total td { font-weight: bold; } tr.sig td { background: #fff3c4; }
.figures { display: flex; flex-direction: column; gap: 1.5em; }
figure { margin: 0; } svg.plot { display: block; width: 100%; max-width: 1500px; height: auto; }
figcaption { color: #444; } details { margin: .4em 0; } summary { cursor: pointer; }
pre { background: #f7f7f7; padding: .5em; overflow-x: auto; max-height: 20em; }
.failure { border-left: 3px solid #c33; padding-left: .8em; margin-bottom: 1em; }
.label { font-weight: normal; color: #555; } .problem { color: #a00; }
"""

#: the page around its body; the Content-Security-Policy lets it load nothing from anywhere.
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
{body}
</body>
</html>
"""
