"""Non-factoid sets (GSM8K, MATH, EvolCode, APPS, UltraChat) as Examples.

These are stage-2 data only: trained on, never scored by exact match (the paper scores the
factoids of earlier stages). Each reader takes the hub's schema or the local upstream file's
and raises DataError naming the row and field; returning None skips a row on purpose
(an APPS problem with no solution), which the loader counts.
"""

from __future__ import annotations

import json

from factmem.data.example import Example
from factmem.data.sources import text_field
from factmem.errors import DataError


def _pair(prompt: str, response: str, label: str) -> Example:
    return Example(prompt=prompt.strip(), response=response.strip(), meta={"source": label})


def gsm8k_example(row: dict, label: str) -> Example:
    """`question` -> `answer` (the worked solution ending `#### N`)."""
    return _pair(text_field(row, "question", label), text_field(row, "answer", label), label)


def math_example(row: dict, label: str) -> Example:
    """`problem` -> `solution` (with its \\boxed{} answer)."""
    return _pair(text_field(row, "problem", label), text_field(row, "solution", label), label)


def evolcode_example(row: dict, label: str) -> Example:
    """`instruction` -> `output`."""
    return _pair(text_field(row, "instruction", label), text_field(row, "output", label), label)


def apps_example(row: dict, label: str) -> Example | None:
    """`question` (+ `starter_code`) -> the first of `solutions` (a JSON-encoded list)."""
    question = text_field(row, "question", label)
    raw = row.get("solutions")
    if raw in (None, "", "[]", []):
        return None  # APPS has problems without a reference solution: nothing to train on
    try:
        solutions = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        raise DataError(f"{label}: field 'solutions' is not a JSON list") from None
    if not isinstance(solutions, list) or not all(isinstance(s, str) for s in solutions):
        raise DataError(f"{label}: field 'solutions' must be a list of strings")
    solutions = [s for s in solutions if s.strip()]
    if not solutions:
        return None
    starter = row.get("starter_code") or ""
    prompt = question.strip() + (f"\n\n{starter.strip()}" if starter.strip() else "")
    return _pair(prompt, solutions[0], label)


def ultrachat_example(row: dict, label: str) -> Example:
    """`data`: alternating user / assistant turns. Every assistant turn is trained on."""
    turns = row.get("data")
    if not isinstance(turns, list) or len(turns) < 2:
        raise DataError(f"{label}: field 'data' must list at least a user and an assistant turn")
    for i, turn in enumerate(turns):
        if not isinstance(turn, str) or not turn.strip():
            raise DataError(f"{label}: field 'data' turn {i} is missing or empty")
    pairs = [(turns[i].strip(), turns[i + 1].strip()) for i in range(0, len(turns) - 1, 2)]
    *history, (prompt, response) = pairs  # a trailing user turn has no answer: dropped
    return Example(prompt=prompt, response=response, meta={"source": label},
                   history=tuple(history))  # fmt: skip
