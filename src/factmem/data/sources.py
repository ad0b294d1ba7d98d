"""Rows of a dataset, from local files in the upstream format or from the Hugging Face hub.

A row comes with a label naming where it came from (`file:line`, `file: row 3`,
`hub-id[split] row 7`), so that an error about it names the file, row and field.
Reading files is done by hand for JSON/JSONL/TSV because the upstream files need it
(PopQA's `{dev: [...], test: [...]}` wrapper, DPR's TSV of Python lists, and errors that
name a line); parquet and the hub go through `datasets`.
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from factmem.errors import DataError

log = logging.getLogger(__name__)

Row = tuple[str, dict[str, Any]]  # (where it came from, the row)

SUFFIXES = (".jsonl", ".json", ".tsv", ".txt", ".parquet", ".csv")


def local_rows(
    path: str | Path, tsv_fields: tuple[str, ...] = (), split: str | None = None
) -> Iterator[Row]:
    """Rows of a file, or of every data file in a folder (sorted by name).

    `split` picks one list of a JSON object of lists (PopQA's `{dev: [...], test: [...]}`).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"{path}: no data files ({', '.join(SUFFIXES)}) in this folder")
        for file in files:
            yield from local_rows(file, tsv_fields, split)
        return
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if path.suffix == ".jsonl":
        yield from _jsonl_rows(path)
    elif path.suffix in (".tsv", ".txt"):
        yield from _tsv_rows(path, tsv_fields)
    elif path.suffix in (".parquet", ".csv"):
        yield from _table_rows(path)
    else:
        yield from _json_rows(path, split)


def _jsonl_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not valid JSON: {err.msg}") from None
            yield f"{path}:{number}", _as_dict(row, f"{path}:{number}")


def _json_rows(path: Path, split: str | None = None) -> Iterator[Row]:
    """A JSON list of rows, or an object whose list values are splits (PopQA's dev/test)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None
    if isinstance(data, dict):
        splits = {k: v for k, v in data.items() if isinstance(v, list)}
        if not splits:
            raise DataError(f"{path}: expected a JSON list of rows, or an object of lists")
        if split is not None:
            if split not in splits:
                raise DataError(f"{path}: no split {split!r}; it has {', '.join(splits)}")
            splits = {split: splits[split]}
        for key, rows in splits.items():
            for i, row in enumerate(rows):
                yield f"{path}: {key} row {i}", _as_dict(row, f"{path}: {key} row {i}")
        return
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows")
    for i, row in enumerate(data):
        yield f"{path}: row {i}", _as_dict(row, f"{path}: row {i}")


def _tsv_rows(path: Path, fields: tuple[str, ...]) -> Iterator[Row]:
    """Tab-separated rows; a cell that is a Python/JSON list literal is parsed (DPR's format)."""
    if not fields:
        raise DataError(f"{path}: a .tsv file is not a format this dataset reads")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            cells = line.split("\t")
            if len(cells) != len(fields):
                raise DataError(
                    f"{path}:{number}: expected {len(fields)} tab-separated fields "
                    f"({', '.join(fields)}), got {len(cells)}"
                )
            yield (
                f"{path}:{number}",
                {
                    name: _literal(cell, f"{path}:{number}", name)
                    for name, cell in zip(fields, cells, strict=True)
                },
            )


def _literal(cell: str, label: str, name: str) -> Any:
    text = cell.strip()
    if text.startswith('"') and text.endswith('"') and text[1:2] == "[":
        text = text[1:-1].replace('""', '"')  # a CSV-quoted list
    if not text.startswith("["):
        return cell
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise DataError(f"{label}: field {name!r} is not a readable list") from None


def _table_rows(path: Path) -> Iterator[Row]:
    import datasets

    kind = "parquet" if path.suffix == ".parquet" else "csv"
    try:
        table = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as err:  # a library error about a user's file: say which file
        raise DataError(f"{path}: cannot read as {kind}: {err}") from None
    for i, row in enumerate(table):
        yield f"{path}: row {i}", row


def hub_rows(hub_id: str, config: str | None, split: str) -> Iterator[Row]:
    """Rows of a hub dataset (downloaded once by `datasets`, then cached)."""
    import datasets

    name = f"{hub_id}" + (f"/{config}" if config else "")
    log.info("loading %s [%s] from the Hugging Face hub", name, split)
    try:
        table = datasets.load_dataset(hub_id, config, split=split)
    except Exception as err:  # no network, unknown id, gated set: one clear sentence
        raise DataError(
            f"cannot load {name} [{split}] from the Hugging Face hub ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); without internet, download it elsewhere and "
            "give the file with `path:`"
        ) from None
    for i, row in enumerate(table):
        yield f"{name}[{split}] row {i}", row


def _as_dict(row: object, label: str) -> dict:
    if not isinstance(row, dict):
        raise DataError(f"{label}: expected an object, got {type(row).__name__}")
    return row


# ------------------------------------------------------------------ reading fields of a row


def text_field(row: dict, name: str, label: str) -> str:
    """A non-empty string field, or an error naming row and field."""
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{label}: field {name!r} is missing or empty")
    return value


def list_field(row: dict, name: str, label: str) -> list[str]:
    """A non-empty list of non-empty strings; a JSON-encoded list string is accepted too."""
    value = row.get(name)
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = _literal(value, label, name)
    if not isinstance(value, list | tuple) or not value:
        raise DataError(f"{label}: field {name!r} is missing or not a non-empty list")
    items = [v for v in value if isinstance(v, str) and v.strip()]
    if not items:
        raise DataError(f"{label}: field {name!r} has no non-empty strings")
    return items
