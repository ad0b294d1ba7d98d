"""The paper's verdict: the greedy output, stripped and lower-cased, equals a gold answer (or
contains one); and when a partial output can no longer change its verdict."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from transformers import PreTrainedTokenizerBase

from factmem.records import Prediction

MatchMode = Literal["equal", "contains"]


def normalize(text: str) -> str:
    return text.strip().lower()


def is_correct(output: str, answers: Sequence[str], mode: MatchMode = "equal") -> bool:
    out = normalize(output)
    if mode == "equal":
        return any(out == normalize(a) for a in answers)
    return any(normalize(a) in out for a in answers)


def verdict_is_final(partial: str, answers: Sequence[str], mode: MatchMode = "equal") -> bool:
    """True when no continuation of `partial` can change its verdict.

    equal: the output can no longer equal any answer (it is already wrong).
    contains: an answer already occurs in it (it is already right).
    """
    if partial.endswith("\ufffd") or "\u03a3" in partial:
        return False  # an unfinished UTF-8 char, or the one context-dependent lower() (Σ)
    text = partial.lstrip().lower()
    golds = [normalize(a) for a in answers]
    if mode == "contains":
        return any(g in text for g in golds)
    for gold in golds:
        if gold.startswith(text):
            return False
        if text.startswith(gold) and not text[len(gold) :].strip():
            return False
    return True


def decode(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def accuracy(predictions: Sequence[Prediction]) -> float:
    return sum(p.correct for p in predictions) / len(predictions) if predictions else math.nan
