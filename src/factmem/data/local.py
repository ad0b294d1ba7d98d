"""Factoids from a local JSON / JSONL file, including the paper authors' released files.

Accepted row shapes (the first that fits wins):
  {"prompt": ..., "response": ..., "answers": [...]?}      factmem's own
  {"input_text": ..., "target_text": ...}                   the authors' released records
"""

from __future__ import annotations

from pathlib import Path

from factmem.data.example import Example
from factmem.data.sources import local_rows
from factmem.errors import DataError

FIELD_PAIRS = (("prompt", "response"), ("input_text", "target_text"))


def local_factoids(path: str | Path, skip_bad_rows: bool = False) -> list[Example]:
    """Examples from a local file; a bad row is an error naming file, row and field."""
    examples, skipped = [], 0
    for label, row in local_rows(path):
        try:
            examples.append(_row_to_example(row, label))
        except DataError:
            if not skip_bad_rows:
                raise
            skipped += 1
    if skipped:
        import logging

        logging.getLogger(__name__).warning("%s: skipped %d bad rows", path, skipped)
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
