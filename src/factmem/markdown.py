"""The one markdown table writer for what factmem prints and documents: `factmem run`'s
table, the lens and gradient tables, docs/config.md.

Written by hand beside pandas' `DataFrame.to_markdown` (which the report uses for its wide
tables) because these tables are built row by row from records, not frames, and keep the
compact `| a | b |` / `|---|---|` form that README and docs quote byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[object], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub pipe table: a header row, a `|---|` rule, one line per row."""
    lines = [_row(header), "|" + "---|" * len(header)]
    lines += [_row(row) for row in rows]
    return "\n".join(lines)


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"
