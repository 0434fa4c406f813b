"""How report tables look, in every format but CSV (which keeps the raw values): numbers rounded, counts (params,
epochs, best_epoch…) as integers, verdicts marked (PASS/FAIL bold in Markdown, green/red in HTML), and one
stylesheet for every HTML page nnlab writes: a sweep's `table.html` and a lab's `lab_NAME.html`."""

import html
import math
import re
from fnmatch import fnmatch
from numbers import Number

import pandas as pd

# Columns that count things: shown as integers wherever every value in them is a whole number.
COUNTS = ("params", "*epoch*", "*_count", "*_size", "num_*", "n_*", "trial")
GOOD, BAD = ("PASS",), ("FAIL", "ERROR", "FAILED", "KILLED")  # a verdict (a bar, a graded script) or a run's status
LONG_TEXT = 60  # characters: a cell of more (a reason, a note) wraps instead of widening its column
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; line-height: 1.45;
       max-width: 1400px; margin: 1.5rem auto; padding: 0 1rem; }
h1 { font-size: 1.45rem; } h2 { font-size: 1.15rem; margin-top: 2rem; } h3 { font-size: 1rem; }
p.caption { color: #57606a; font-size: .9rem; margin: .25rem 0 .5rem; }
.table-wrap { overflow-x: auto; max-width: 100%; border: 1px solid #d0d7de; border-radius: 6px; margin-bottom: 1rem; }
table.report { border-collapse: collapse; font-size: .85rem; font-variant-numeric: tabular-nums; }
table.report th, table.report td { border: 1px solid #d0d7de; padding: .3rem .55rem; vertical-align: top; }
table.report td { white-space: nowrap; }
table.report thead th { background: #eaeef2; font-weight: 600; text-align: left; min-width: 3.5rem; }
table.report tbody tr:nth-child(even) td { background: #f6f8fa; }
table.report tbody tr:nth-child(odd) td { background: #fff; }
table.report tbody tr:hover td { background: #ddf4ff; }
table.report td:first-child, table.report th:first-child { position: sticky; left: 0; z-index: 1; }
table.report .num { text-align: right; }
table.report td.long { white-space: normal; min-width: 22rem; }
.pass { color: #1a7f37; font-weight: 700; }
.fail { color: #cf222e; font-weight: 700; }
figure { margin: 1rem 0; } img { max-width: 100%; } figcaption { color: #57606a; font-size: .85rem; }
"""


def count_columns(table: pd.DataFrame) -> list[str]:
    """The count columns whose values (where present) are all whole numbers."""
    return [c for c in table.columns if any(fnmatch(str(c), p) for p in COUNTS) and whole(table[c])]


def whole(column: pd.Series) -> bool:
    values = [v for v in column if not missing(v)]
    return bool(values) and all(isinstance(v, Number) and not isinstance(v, bool) and float(v).is_integer()
                                for v in values)


def missing(value) -> bool:
    """No value: None, NaN, pandas' NA, or the empty text of a param a run did not log."""
    return value is None or value is pd.NA or value == "" or (isinstance(value, float) and math.isnan(value))


def as_counts(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its count columns as integers (pandas' nullable Int64: a missing count stays missing)."""
    return table.astype({c: "Int64" for c in count_columns(table)})


def rounded(value):
    """4 decimals; a tiny value keeps 3 significant digits instead of becoming 0."""
    if value == 0 or abs(value) >= 1e-3:
        return round(value, 4)
    return float(f"{value:.3g}")


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """Cells as the md/tex/html writers show them: counts as Python ints, other floats rounded, missing as None."""
    counts = set(count_columns(table))

    def cell(value, column):
        if missing(value):
            return None
        if column in counts:
            return int(value)
        return rounded(float(value)) if isinstance(value, float) else value

    return pd.DataFrame({c: [cell(v, c) for v in table[c]] for c in table.columns}, dtype=object)


def verdict_class(value) -> str | None:
    return "pass" if value in GOOD else "fail" if value in BAD else None


def markdown(table: pd.DataFrame, marks: bool = True) -> str:
    """A pipe table; with `marks`, PASS/FAIL/ERROR (and FAILED/KILLED runs) in bold."""
    from tabulate import tabulate  # as pandas' to_markdown, but on rows: from a frame, a missing cell prints "nan"

    rows = [[f"**{v}**" if marks and verdict_class(v) else v for v in row] for row in shown(table).values.tolist()]
    return tabulate(rows, headers=[str(c) for c in table.columns], tablefmt="pipe", floatfmt=".10g", intfmt=",",
                    missingval="")


def latex(table: pd.DataFrame, caption: str) -> str:
    """A tabular with numbers right-aligned, as the other formats round them (pandas would print 0.400000)."""
    cells = shown(table)
    align = "".join("r" if numeric(cells[c]) else "l" for c in cells.columns)
    plain = cells.map(lambda v: "" if missing(v) else f"{v:.10g}" if isinstance(v, float) else str(v))
    return plain.to_latex(index=False, caption=caption, escape=True, column_format=align)


def numeric(column: pd.Series) -> bool:
    """A column of numbers, or of numbers written as text (swept params: "0.5", "64")."""
    values = [v for v in column if not missing(v)]
    return bool(values) and all((isinstance(v, Number) and not isinstance(v, bool)) or number_text(v) for v in values)


def number_text(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", value) is not None


def text(value) -> str:
    if missing(value):
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def header(name: str) -> str:
    """A header that may wrap after `_` and `.`: long names (last_gap_accuracy) need not widen their column."""
    return re.sub(r"([_.])", r"\1<wbr>", html.escape(str(name)))


def html_table(table: pd.DataFrame, caption: str | None = None) -> str:
    """The table as an HTML fragment: its caption, then the table in a box that scrolls sideways when it is wider
    than the page (the page itself never clips it). Numbers right-aligned, verdicts coloured."""
    cells = shown(table)
    right = {c for c in cells.columns if numeric(cells[c])}

    def td(value, column) -> str:
        long = "long" if len(text(value)) > LONG_TEXT else None
        classes = [name for name in ("num" if column in right else None, verdict_class(value), long) if name]
        attr = f' class="{" ".join(classes)}"' if classes else ""
        return f"<td{attr}>{html.escape(text(value))}</td>"

    num = ' class="num"'
    head = "".join(f'<th{num if c in right else ""} title="{html.escape(str(c))}">{header(c)}</th>'
                   for c in cells.columns)
    rows = "\n".join("<tr>" + "".join(td(v, c) for v, c in zip(row, cells.columns)) + "</tr>"
                     for row in cells.itertuples(index=False))
    top = f'<p class="caption">{html.escape(caption)}</p>\n' if caption else ""
    return (f'{top}<div class="table-wrap"><table class="report">\n<thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{rows}\n</tbody>\n</table></div>\n")


def html_page(title: str, body: str) -> str:
    """A whole page with nnlab's stylesheet."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")
