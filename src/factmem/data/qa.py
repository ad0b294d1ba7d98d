"""Factoid question sets (PopQA, TriviaQA, WebQuestions, EntityQuestions, LAMA) as Examples.

Each `*_example(row, label)` reads one upstream row, in the hub's schema or the local
files' (see ../shared/data/README.md), and raises DataError naming the row and field.

Which answer is trained on (the response), when a row lists several aliases:
  - the schema's canonical answer when it has one (TriviaQA on the hub: `answer.value`;
    LAMA: `obj_label`);
  - TriviaQA from DPR's TSV, which lists only aliases in no useful order: the hub's value
    as estimated from them (data/triviaqa.py says how, and why not the first alias);
  - otherwise the first answer in the row's list that contains a letter or a digit
    (PopQA's and EntityQuestions' lists start with the canonical name).
All aliases are kept in `meta["aliases"]`: the familiarity filter accepts any of them, while
exact match after training asks for the trained response, as the paper does.
"""

from __future__ import annotations

import re

from factmem.data.example import Example
from factmem.data.lama_questions import CLOZE_TEMPLATES, lama_prompt
from factmem.data.sources import list_field, text_field
from factmem.data.triviaqa import answer_from_aliases, spelled, unquote_question
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
    """Hub (`question`, `answer: {value, aliases}`) or DPR's TSV (`question`, `answers`):
    the same question and answer from both (data/triviaqa.py)."""
    question = unquote_question(text_field(row, "question", label))
    if isinstance(row.get("answer"), dict):
        answer = row["answer"]
        value = text_field(answer, "value", f"{label}: field 'answer'").strip()
        aliases = [value] + [a for a in answer.get("aliases", []) if a != value]
        return _qa(question, aliases, spelled(value, aliases), label, ANSWER_SUFFIX)
    aliases = list_field(row, "answers", label)
    answer = answer_from_aliases(aliases, question)
    return _qa(question, aliases, answer, label, ANSWER_SUFFIX)


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
) -> Example | None:
    """T-REx: `sub_label`, `obj_label`, and the relation (`predicate_id` on the hub; the
    file name, e.g. P19.jsonl, locally) with its template (a hub column, or relations.jsonl).
    Google-RE (`pred: /people/person/place_of_birth`, ...): the relation is the predicate's
    last part; a fact its raters judged false more often than true is left out (None), as
    LAMA's own evaluation leaves it out."""
    subject = text_field(row, "sub_label", label)
    answer = text_field(row, "obj_label", label).strip()
    relation = row.get("predicate_id") or _google_re_relation(row) or _relation_from_label(label)
    if not relation:
        raise DataError(f"{label}: no relation: no field 'predicate_id' (T-REx on the hub) or "
                        "'pred' (Google-RE), and the file is not named P*.jsonl")  # fmt: skip
    if _judged_false(row):
        return None
    template = (row.get("template") or (templates or {}).get(relation)
                or CLOZE_TEMPLATES.get(relation))  # fmt: skip
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


def _google_re_relation(row: dict) -> str | None:
    pred = row.get("pred")
    return pred.rstrip("/").rsplit("/", 1)[-1] if isinstance(pred, str) and pred else None


def _judged_false(row: dict) -> bool:
    """Google-RE: more raters said the evidence does not state the fact than said it does."""
    votes = [j.get("judgment") for j in row.get("judgments") or () if isinstance(j, dict)]
    return votes.count("yes") < len(votes) - votes.count("yes")


def _relation_from_label(label: str) -> str | None:
    match = re.search(r"(P\d+)[^/\\]*\.jsonl?:", label)
    return match.group(1) if match else None
