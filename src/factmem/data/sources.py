"""Rows of a dataset, from local files in the upstream format or from the Hugging Face hub.

A row comes with a label naming where it came from (`file:line`, `file: row 3`,
`hub-id[split] row 7`), so that an error about it names the file, row and field.
Reading files is done by hand for JSON/JSONL/TSV because the upstream files need it
(PopQA's `{dev: [...], test: [...]}` wrapper, DPR's CSV-quoted TSV of Python lists, MATH's
one-problem-per-file folders, and errors that name a line); parquet and the hub go through
`datasets`.

A row that cannot be read (a cut JSON line, a line that is not UTF-8, a TSV line with the
wrong number of cells) stops the load with an error naming file and line, or, given a
`BadRows` counter (`options: {skip_bad_rows: true}`), is left out and counted.
"""

from __future__ import annotations

import ast
import codecs
import csv
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from factmem.errors import DataError

log = logging.getLogger(__name__)

Row = tuple[str, dict[str, Any]]  # (where it came from, the row)

SUFFIXES = (".jsonl", ".json", ".tsv", ".txt", ".parquet", ".csv")
SPLIT_FOLDERS = ("train", "dev", "validation", "valid", "test")  # EntityQuestions, MATH
SKIP_HINT = " (`options: {skip_bad_rows: true}` skips such rows)"
HEADER_CELL = re.compile(r"[A-Za-z_]\w*")  # a TSV column name, e.g. possible_answers


class BadRow(DataError):
    """A row that cannot be read; `skip_bad_rows` may leave it out."""


class BadRows:
    """Rows left out under `skip_bad_rows`: counted, the first few logged."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if self.count <= 3:
            log.warning("skipping a bad row: %s", message)

    def report(self, what: str) -> None:
        if self.count:
            log.warning("%s: skipped %d bad rows (skip_bad_rows)", what, self.count)


def bad_row(message: str, skip: BadRows | None) -> None:
    """Raise (fail fast) or count (skip_bad_rows) a row that cannot be read."""
    if skip is None:
        raise BadRow(message)
    skip.add(message)


def local_rows(
    path: str | Path,
    tsv_fields: tuple[str, ...] = (),
    split: str | None = None,
    skip: BadRows | None = None,
) -> Iterator[Row]:
    """Rows of a file, or of every data file in a folder and its subfolders (sorted by path).

    `split` picks one list of a JSON object of lists (PopQA's `{dev: [...], test: [...]}`),
    or one subfolder of a folder of splits (EntityQuestions' `dataset/{train,dev,test}/`,
    MATH's `{train,test}/<subject>/<n>.json`; default `train`).
    """
    path = Path(path)
    if path.is_dir():
        folder, split = _split_folder(path, split)
        for file in _data_files(folder):
            yield from local_rows(file, tsv_fields, split, skip)
        return
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if path.suffix == ".jsonl":
        yield from _jsonl_rows(path, skip)
    elif path.suffix in (".tsv", ".txt"):
        yield from _tsv_rows(path, tsv_fields, skip)
    elif path.suffix in (".parquet", ".csv"):
        yield from _table_rows(path)
    else:
        yield from _json_rows(path, split, skip)


def _split_folder(path: Path, split: str | None) -> tuple[Path, str | None]:
    """(folder to read, split left for the files): a folder of split folders gives one."""
    splits = [n for n in SPLIT_FOLDERS if (path / n).is_dir()]
    if not splits:
        return path, split
    if split is None and "train" in splits:
        others = ", ".join(s for s in splits if s != "train")
        log.info("%s: reading its train/ folder%s", path,
                 f" (`options: {{split: ...}}` picks {others})" if others else "")  # fmt: skip
        return path / "train", None
    if split not in splits:
        raise DataError(f"{path}: holds the split folders {', '.join(splits)}; pick one with "
                        "`options: {split: NAME}` or give that folder as `path:`")  # fmt: skip
    return path / split, None


def _data_files(folder: Path) -> list[Path]:
    """Data files under `folder`, hidden files and folders left out, sorted by path."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix in SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise DataError(f"{folder}: no data files ({', '.join(SUFFIXES)}) in this folder "
                        "or below")  # fmt: skip
    return files


def _lines(path: Path, skip: BadRows | None) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line; a BOM is dropped, and a line that is
    not UTF-8 is a bad row (one byte must not hide which of 24 files is broken)."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad_row(f"{path}:{number}: not UTF-8 text (byte 0x{raw[err.start]:02x} at "
                        f"column {err.start + 1}); re-save the file as UTF-8", skip)  # fmt: skip
                continue
            if line.strip():
                yield number, line.rstrip("\r\n")


def _jsonl_rows(path: Path, skip: BadRows | None) -> Iterator[Row]:
    for number, line in _lines(path, skip):
        label = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            bad_row(f"{label}: not valid JSON: {err.msg} (column {err.colno})", skip)
            continue
        if not isinstance(row, dict):
            bad_row(f"{label}: expected an object, got {type(row).__name__}", skip)
            continue
        yield label, row


def _json_rows(path: Path, split: str | None, skip: BadRows | None) -> Iterator[Row]:
    """A JSON list of rows, an object whose lists of rows are splits (PopQA's dev/test), or
    one row (a MATH problem file)."""
    data, lossy = _read_json(path, skip)
    if isinstance(data, dict):
        splits = {k: v for k, v in data.items()
                  if isinstance(v, list) and all(isinstance(r, dict) for r in v)}  # fmt: skip
        if not any(splits.values()):  # no list of rows: the object is one row
            rows: list[tuple[str, Any]] = [(f"{path}", data)]
        else:
            if split is not None:
                if split not in splits:
                    raise DataError(f"{path}: no split {split!r}; it has {', '.join(splits)}")
                splits = {split: splits[split]}
            rows = [(f"{path}: {key} row {i}", row)
                    for key, rows_ in splits.items() for i, row in enumerate(rows_)]  # fmt: skip
    elif isinstance(data, list):
        rows = [(f"{path}: row {i}", row) for i, row in enumerate(data)]
    else:
        raise DataError(f"{path}: expected a JSON list of rows, an object of lists, or a row")
    for label, row in rows:
        if not isinstance(row, dict):
            bad_row(f"{label}: expected an object, got {type(row).__name__}", skip)
        elif lossy and _has_bad_bytes(row):
            bad_row(f"{label}: not UTF-8 text; re-save the file as UTF-8", skip)
        else:
            yield label, row


def _read_json(path: Path, skip: BadRows | None) -> tuple[Any, bool]:
    """(the parsed file, whether it held bytes that are not UTF-8). Under skip_bad_rows
    such bytes are kept apart (surrogateescape), so that only their rows are left out."""
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    lossy = False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if skip is None:
            line = raw.count(b"\n", 0, err.start) + 1
            column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
            raise BadRow(f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at "
                         f"column {column}); re-save the file as UTF-8") from None  # fmt: skip
        text, lossy = raw.decode("utf-8", errors="surrogateescape"), True
    try:
        return json.loads(text), lossy
    except json.JSONDecodeError as err:  # one document: no row of it can be trusted
        raise DataError(f"{path}:{err.lineno}: not valid JSON: {err.msg} (the file is one "
                        "JSON document: fix or download it again)") from None  # fmt: skip


def _has_bad_bytes(value: Any) -> bool:
    """Whether a decoded row holds a byte that was not UTF-8 (a lone surrogate)."""
    if isinstance(value, str):
        return any("\udc80" <= ch <= "\udcff" for ch in value)
    if isinstance(value, dict):
        return any(_has_bad_bytes(k) or _has_bad_bytes(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_bad_bytes(v) for v in value)
    return False


def _tsv_rows(path: Path, fields: tuple[str, ...], skip: BadRows | None) -> Iterator[Row]:
    """Tab-separated rows, quoted as the csv module (and pandas, and DPR) quote them.

    A first row of column names (PopQA's popQA.tsv) names the cells; without one, the
    dataset's `fields` do (DPR's `question<TAB>answers`). Each line is one row: a quoted
    cell cannot hold a line break, so one stray quote cannot swallow the rest of the file.
    """
    columns: tuple[str, ...] | None = None
    for number, line in _lines(path, skip):
        label = f"{path}:{number}"
        try:
            cells = next(csv.reader([line], delimiter="\t", strict=True))
        except csv.Error as err:
            bad_row(f"{label}: not a readable tab-separated line ({err})", skip)
            continue
        if columns is None:
            if len(cells) > 1 and all(HEADER_CELL.fullmatch(c.strip()) for c in cells):
                columns = tuple(c.strip() for c in cells)
                continue
            if not fields:
                raise DataError(
                    f"{path}: a .tsv/.txt file for this dataset needs a first row naming its "
                    "columns (as PopQA's popQA.tsv has: id, subj, ..., question, "
                    "possible_answers)"
                )
            columns = fields
        if len(cells) != len(columns):
            bad_row(f"{label}: expected {len(columns)} tab-separated fields "
                    f"({', '.join(columns)}), got {len(cells)}", skip)  # fmt: skip
            continue
        yield label, dict(zip(columns, cells, strict=True))


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


# ------------------------------------------------------------------ reading fields of a row


def text_field(row: dict, name: str, label: str) -> str:
    """A non-empty string field, or an error naming row and field."""
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{label}: field {name!r} is missing or empty")
    return value


def list_field(row: dict, name: str, label: str) -> list[str]:
    """A non-empty list of non-empty strings; a list written as a JSON or Python literal
    string is accepted too (PopQA's `possible_answers`, DPR's TSV answers)."""
    value = row.get(name)
    if isinstance(value, str) and value.strip().startswith("["):
        value = _list_literal(value, label, name)
    if not isinstance(value, list | tuple) or not value:
        raise DataError(f"{label}: field {name!r} is missing or not a non-empty list")
    items = [v for v in value if isinstance(v, str) and v.strip()]
    if not items:
        raise DataError(f"{label}: field {name!r} has no non-empty strings")
    return items


def _list_literal(text: str, label: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise DataError(f"{label}: field {name!r} is not a readable list") from None
