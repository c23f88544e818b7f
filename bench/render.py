"""The figures table: rich on a terminal, markdown for the README (and without rich), JSON for machines.

Pure formatting: takes rows and the run's metadata, returns or prints text.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from bench.figures import Measure, Row, Stats

COLUMN_SHARES = (5, 4, 7, 3, 3)  # relative widths in the rich table
HEADERS = ("figure", "ours (median [min\N{EN DASH}max])", "alternatives, same run", "ratio", "target")


def number(value: float, unit: str) -> str:
    if unit == "/s":
        return f"{value:,.0f}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def stats_text(stats: Stats, unit: str) -> str:
    return f"{number(stats.median, unit)} {unit} [{number(stats.low, unit)}\N{EN DASH}{number(stats.high, unit)}]"


def measure_text(measure: Measure | None, unit: str, *, labelled: bool) -> str:
    if measure is None:
        return "—"
    value = measure.note if measure.stats is None else stats_text(measure.stats, unit)
    return f"{measure.label}: {value}" if labelled else value


def ratio_text(row: Row) -> str:
    ratio = row.ratio()
    if ratio is None:
        return "—"
    shown = f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.1f}" if ratio >= 1 else f"{ratio:.2g}"
    return f"{shown}\N{MULTIPLICATION SIGN} {row.ratio_to}"


def target_text(row: Row) -> str:
    if not row.target:
        return "—"
    mark = {True: " ✓", False: " ✗", None: ""}[row.met]
    return row.target + mark


def ours_text(row: Row) -> str:
    if row.ours is None:
        return "—"
    text = measure_text(row.ours, row.unit, labelled=False)
    return f"{text} ({row.ours.label})" if row.ours.label else text


def cells(row: Row, separator: str) -> tuple[str, str, str, str, str]:
    alternatives = separator.join(measure_text(alt, row.unit, labelled=True) for alt in row.alternatives)
    return (row.figure, ours_text(row), alternatives or "—", ratio_text(row), target_text(row))


def notes(rows: Sequence[Row]) -> list[str]:
    return [f"{row.figure}: {row.note}" for row in rows if row.note]


def meta_line(meta: dict[str, Any]) -> str:
    return (
        f"{meta['date']} · {meta['cores']} cores · Python {meta['python']} · numpy {meta['numpy']} · "
        f"`{meta['command']}` · {meta['elapsed_s']:.0f} s"
    )


def markdown(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    lines = [meta_line(meta), "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(row, "<br>")) + " |")
    extra = notes(rows) + list(meta.get("notes", []))
    if extra:
        lines.append("")
        lines.extend(f"- {text}" for text in extra)
    return "\n".join(lines)


def print_table(rows: Sequence[Row], meta: dict[str, Any], *, force_markdown: bool = False) -> None:
    if not force_markdown:
        try:
            from rich.console import Console
            from rich.markup import escape
            from rich.table import Table
        except ImportError:
            force_markdown = True
    if force_markdown:
        print(markdown(rows, meta))
        return
    console = Console(width=None if sys.stdout.isatty() else 200)
    # Cells are plain text: "[0.49-2.27]" and "[min-max]" must not be read as rich markup.
    table = Table(title=escape(meta_line(meta)), show_lines=False, title_justify="left", expand=True)
    for header, share in zip(HEADERS, COLUMN_SHARES, strict=True):
        table.add_column(escape(header), overflow="fold", ratio=share)
    for i, row in enumerate(rows):
        last_of_group = i + 1 == len(rows) or rows[i + 1].group != row.group
        table.add_row(*(escape(cell) for cell in cells(row, "\n")), end_section=last_of_group)
    console.print(table)
    for text in notes(rows) + list(meta.get("notes", [])):
        console.print(f"- {text}", highlight=False, markup=False)


def print_json(rows: Sequence[Row], meta: dict[str, Any]) -> None:
    json.dump({"meta": meta, "rows": [row.to_json() for row in rows]}, sys.stdout, indent=2)
    sys.stdout.write("\n")
