"""Factoid question sets (PopQA, TriviaQA, WebQuestions, EntityQuestions, LAMA) as Examples.

Each `*_example(row, label)` reads one upstream row, in the hub's schema or the local
files' (see ../shared/data/README.md), and raises DataError naming the row and field.

Which answer is trained on (the response), when a row lists several aliases:
  - the schema's canonical answer when it has one (TriviaQA on the hub: `answer.value`;
    LAMA: `obj_label`);
  - otherwise the first answer in the row's list that contains a letter or a digit
    (skipping entries like an emoji that DPR's TriviaQA lists sometimes put first).
All aliases are kept in `meta["aliases"]`: the familiarity filter accepts any of them, while
exact match after training asks for the trained response, as the paper does.
"""

from __future__ import annotations

import re

from factmem.data.example import Example
from factmem.data.lama_questions import lama_prompt
from factmem.data.sources import list_field, text_field
from factmem.errors import DataError

# PopQA / TriviaQA prompt suffix of the paper's authors. Their code strips the trailing
# space when training but not when evaluating; here the same string is used for both.
ANSWER_SUFFIX = "\nThe answer is: "


def pick_answer(aliases: list[str], label: str, field: str) -> str:
    """The first alias with a letter or digit (the documented rule above)."""
    for alias in aliases:
        if re.search(r"\w", alias) and alias.strip():
            return alias.strip()
    raise DataError(f"{label}: field {field!r} has no answer with a letter or digit")


def _qa(question: str, aliases: list[str], answer: str, label: str, suffix: str = "") -> Example:
    return Example(
        prompt=question.strip() + suffix,
        response=answer,
        meta={"source": label, "aliases": aliases},
    )


def popqa_example(row: dict, label: str) -> Example:
    """Hub (`question`, `possible_answers`) or the local file (`input`, `output`)."""
    q_field = "question" if "question" in row else "input"
    a_field = "possible_answers" if "possible_answers" in row else "output"
    question = text_field(row, q_field, label)
    aliases = list_field(row, a_field, label)
    return _qa(question, aliases, pick_answer(aliases, label, a_field), label, ANSWER_SUFFIX)


def triviaqa_example(row: dict, label: str) -> Example:
    """Hub (`question`, `answer: {value, aliases}`) or DPR's TSV (`question`, `answers`)."""
    question = text_field(row, "question", label)
    if isinstance(row.get("answer"), dict):
        answer = row["answer"]
        value = text_field(answer, "value", f"{label}: field 'answer'")
        aliases = [value] + [a for a in answer.get("aliases", []) if a != value]
        return _qa(question, aliases, value.strip(), label, ANSWER_SUFFIX)
    aliases = list_field(row, "answers", label)
    return _qa(question, aliases, pick_answer(aliases, label, "answers"), label, ANSWER_SUFFIX)


def webquestions_example(row: dict, label: str) -> Example:
    """Hub (`question`, `answers`) or the brmson files (`qText`, `answers`); scored by
    'gold contained in output'."""
    question = text_field(row, "question" if "question" in row else "qText", label)
    aliases = list_field(row, "answers", label)
    return _qa(question, aliases, pick_answer(aliases, label, "answers"), label)


def entityquestions_example(row: dict, label: str) -> Example:
    """The authors' files: `question`, `answers`."""
    question = text_field(row, "question", label)
    aliases = list_field(row, "answers", label)
    return _qa(question, aliases, pick_answer(aliases, label, "answers"), label)


def lama_example(
    row: dict, label: str, templates: dict[str, str] | None = None, form: str = "question"
) -> Example:
    """T-REx: `sub_label`, `obj_label`, and the relation (`predicate_id` on the hub; the
    file name, e.g. P19.jsonl, locally) with its template (a hub column, or relations.jsonl)."""
    subject = text_field(row, "sub_label", label)
    answer = text_field(row, "obj_label", label).strip()
    relation = row.get("predicate_id") or _relation_from_label(label)
    if not relation:
        raise DataError(f"{label}: no relation: field 'predicate_id' missing and not a P*.jsonl")
    template = row.get("template") or (templates or {}).get(relation)
    try:
        prompt = lama_prompt(relation, subject, template, form)
    except KeyError:
        raise DataError(
            f"{label}: relation {relation} has no question and no cloze template "
            "(give `options: {templates: relations.jsonl}`)"
        ) from None
    return Example(
        prompt=prompt,
        response=answer,
        meta={"source": label, "aliases": [answer], "relation": relation},
    )


def _relation_from_label(label: str) -> str | None:
    match = re.search(r"(P\d+)[^/\\]*\.jsonl?:", label)
    return match.group(1) if match else None
