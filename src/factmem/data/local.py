"""Factoids from a local JSON / JSONL file, including the paper authors' released files.

Accepted row shapes (the first that fits wins):
  {"prompt": ..., "response": ..., "answers": [...]?}      factmem's own
  {"input_text": ..., "target_text": ...}                   the authors' released records
"""

from __future__ import annotations

from pathlib import Path

from factmem.data.example import Example
from factmem.data.sources import SKIP_HINT, BadRow, BadRows, local_rows
from factmem.errors import DataError

FIELD_PAIRS = (("prompt", "response"), ("input_text", "target_text"))


def local_factoids(path: str | Path, skip_bad_rows: bool = False) -> list[Example]:
    """Examples from a local file; a bad row is an error naming file, row and field (and
    the option that skips it), or under `skip_bad_rows` left out and counted."""
    skip = BadRows() if skip_bad_rows else None
    examples = []
    try:
        for label, row in local_rows(path, skip=skip):
            try:
                examples.append(_row_to_example(row, label))
            except DataError as err:
                if skip is None:
                    raise BadRow(str(err)) from None
                skip.add(str(err))
    except BadRow as err:
        raise DataError(f"{err}{SKIP_HINT}") from None
    if skip is not None:
        skip.report(str(path))
    if not examples:
        raise DataError(f"{path}: no usable rows")
    return examples


def _row_to_example(row: dict, label: str) -> Example:
    pair = next((p for p in FIELD_PAIRS if p[0] in row), None)
    if pair is None:
        raise DataError(f"{label}: missing field 'prompt' (or 'input_text')")
    prompt_key, response_key = pair
    for key in (prompt_key, response_key):
        value = row.get(key)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{label}: field {key!r} is missing or empty")
    answers = row.get("answers", ())
    if not isinstance(answers, list | tuple) or not all(isinstance(a, str) for a in answers):
        raise DataError(f"{label}: field 'answers' must be a list of strings")
    return Example(
        prompt=row[prompt_key],
        response=row[response_key],
        answers=tuple(answers),
        meta={"source": label},
    )
