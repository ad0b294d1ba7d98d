"""exact_match: every example scored, with the verdicts of greedy `model.generate`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from factmem.data.example import Example, encode_response
from factmem.evaluation.forward import teacher_forced_certify, teacher_forcing_pays
from factmem.evaluation.generation import greedy_generate_with_stops
from factmem.evaluation.verdicts import MatchMode, decode, is_correct
from factmem.records import Prediction


def _certified(model, tokenizer, examples: Sequence[Example], batch_size: int,
               max_new_tokens: int, fast_path: bool | Literal["auto"], tie_margin: float,
               bf16: bool, progress: bool) -> list[bool]:  # fmt: skip
    """Which examples the teacher-forced pass proves right (the fast path); the rest are
    generated. One step for `exact_match` and `exact_match_reaches`, so both count the
    same verdicts."""
    if fast_path is True and bf16:
        raise ValueError("fast_path needs fp32 evaluation: under bf16, teacher-forced and "
                         "generated logits differ by more than tie_margin")  # fmt: skip
    if fast_path == "auto":
        fast_path = not bf16 and teacher_forcing_pays(tokenizer, examples)
    certified = (
        teacher_forced_certify(model, tokenizer, examples, batch_size=batch_size,
                               tie_margin=tie_margin, bf16=bf16, progress=progress)
        if fast_path else [False] * len(examples)
    )  # fmt: skip
    # an answer generation could not finish within the cap is left to generation
    return [ok and len(encode_response(tokenizer, e.response)) - 1 <= max_new_tokens
            for ok, e in zip(certified, examples, strict=True)]  # fmt: skip


def exact_match(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    *,
    mode: MatchMode = "equal",
    batch_size: int = 64,
    max_new_tokens: int = 1000,
    fast_path: bool | Literal["auto"] = "auto",
    tie_margin: float = 1e-3,
    bf16: bool = False,
    progress: bool = True,
    share_prefix: bool = True,
) -> list[Prediction]:
    """Score every example; the verdicts equal those of greedy `model.generate`."""
    certified = _certified(model, tokenizer, examples, batch_size, max_new_tokens, fast_path,
                           tie_margin, bf16, progress)  # fmt: skip
    rest = [i for i, ok in enumerate(certified) if not ok]
    generated = (
        greedy_generate_with_stops(
            model,
            tokenizer,
            [examples[i] for i in rest],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            answers=[examples[i].gold_answers() for i in rest],
            mode=mode,
            bf16=bf16,
            progress=progress,
            share_prefix=share_prefix,
        )
        if rest
        else []
    )
    outputs = dict(zip(rest, generated, strict=True))
    predictions = []
    for i, example in enumerate(examples):
        if certified[i]:
            output, cut = decode(tokenizer, encode_response(tokenizer, example.response)), False
        else:
            output, cut = outputs[i]
        answers = list(example.gold_answers())
        predictions.append(
            Prediction(
                prompt=example.prompt,
                gold=example.response,
                answers=answers,
                output=output,
                correct=is_correct(output, answers, mode),
                method="teacher_forced" if certified[i] else "generated",
                output_cut=cut,
            )
        )
    return predictions


def exact_match_reaches(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    threshold: float,
    *,
    mode: MatchMode = "equal",
    batch_size: int = 64,
    max_new_tokens: int = 1000,
    fast_path: bool | Literal["auto"] = "auto",
    tie_margin: float = 1e-3,
    bf16: bool = False,
) -> tuple[float, str]:
    """Whether exact match reaches `threshold`, answered as soon as it is known: a stop rule
    asks only that, and generating the rest of a set once more than (1 - threshold) of it is
    known wrong (most epochs of a stage 1) cost 42% of a 128-fact stage 1 (BENCHMARKS.md).

    Returns (value, kind): kind "exact" with the accuracy `exact_match` gives; "at_least" or
    "at_most" with a bound on it that lies on the same side of `threshold` as the accuracy.
    The verdicts it counts are those of `exact_match` with the same settings: the same
    teacher-forced certificate, the same generation batches, only the later batches left out,
    so the answer `accuracy >= threshold` is exactly that of scoring every example."""
    n = len(examples)
    needed = math.ceil(threshold * n - 1e-9)
    certified = _certified(model, tokenizer, examples, batch_size, max_new_tokens, fast_path,
                           tie_margin, bf16, progress=False)  # fmt: skip
    rest = [i for i, ok in enumerate(certified) if not ok]
    count = {"right": sum(certified), "unknown": len(rest)}

    def settled() -> bool:
        return count["right"] >= needed or count["right"] + count["unknown"] < needed

    def decided(batch: list[tuple[int, str]]) -> bool:
        for j, output in batch:
            count["unknown"] -= 1
            count["right"] += is_correct(output, examples[rest[j]].gold_answers(), mode)
        return settled()

    if rest and not settled():
        greedy_generate_with_stops(
            model, tokenizer, [examples[i] for i in rest], max_new_tokens=max_new_tokens,
            batch_size=batch_size, answers=[examples[i].gold_answers() for i in rest],
            mode=mode, bf16=bf16, progress=False, decided=decided,
        )  # fmt: skip
    if count["unknown"] == 0:
        return count["right"] / n, "exact"
    if count["right"] >= needed:
        return count["right"] / n, "at_least"
    return (count["right"] + count["unknown"]) / n, "at_most"
