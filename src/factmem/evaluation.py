"""Exact match as the paper defines it, computed fast without changing a single verdict.

The definition: greedy decoding from the prompt until EOS; the output, stripped and
lower-cased, equals a gold answer (or, for sets such as WebQuestions, contains it).

Output text is always `decode(generated_ids, skip_special_tokens=True,
clean_up_tokenization_spaces=False)`: the clean-up would make decoding of a prefix not a
prefix of the decoding, which the early stop below relies on.

The fast path (why it is exact):
  1. One teacher-forced forward pass over prompt + gold + EOS. If at every gold position the
     argmax is the gold token, by a margin of at least `tie_margin` over the runner-up, then
     greedy decoding would emit exactly gold + EOS, so the output is the gold itself.
  2. Every other example is decoded with `model.generate` (greedy), which stops early only
     once no continuation could change the verdict (`verdict_is_final`).
The margin guard sends near-ties to real generation, where batched and incremental
arithmetic could disagree in the last bit (fp32 only: under bf16 the two differ by more than
any useful margin, so there every example is generated). An answer longer than
`max_new_tokens` is never certified: generation would be cut off before its end.

A generated output that stopped early is a prefix of what the model would have written; its
prediction says so (`output_cut`), so error analysis does not read a cut output as the answer.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from factmem.batching import pad_rows
from factmem.data.example import Example, encode_prompt, encode_response
from factmem.models import accepts_logits_to_keep
from factmem.records import Prediction  # noqa: F401  (written here, typed in records)

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


# ------------------------------------------------------------------------ forward helpers


@contextlib.contextmanager
def eval_mode(model: PreTrainedModel, bf16: bool = False) -> Iterator[None]:
    """model.eval() + inference mode (+ bf16 autocast), restoring training mode after.

    Scoring runs at the precision asked for, whatever training did: a model being trained
    with mixed precision has its `forward` replaced by accelerate with an autocast-wrapped
    one (kept as `_original_forward`), which would score in bf16 silently (forgetting-curve
    probes and exact-match stop rules score during training); the original is used here.
    """
    was_training = model.training
    model.eval()
    device = model.device.type
    autocast = torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    original = model.__dict__.get("_original_forward")
    wrapped = model.__dict__.get("forward")
    if original is not None:
        model.forward = original
    try:
        with torch.inference_mode(), autocast:
            yield
    finally:
        model.train(was_training)
        if original is not None:
            model.forward = wrapped


def _batches(order: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield order[start : start + size]


def target_logits(
    model: PreTrainedModel, sequences: list[list[int]], prompt_lengths: list[int], pad_id: int
) -> list[torch.Tensor]:
    """For each sequence, the logits that predict its tokens after the prompt (fp32).

    Only those positions go through the output head, so memory stays small even with a
    large vocabulary and long answers.
    """
    device = model.device
    input_ids, mask = pad_rows(sequences, pad_id)
    width = input_ids.shape[1]
    # The model's own forward (so any logit scaling or soft-capping applies), asked for logits
    # only from the earliest answer position on when it supports `logits_to_keep`.
    keep = width - (min(prompt_lengths) - 1)
    kwargs = {"logits_to_keep": keep} if accepts_logits_to_keep(model) else {}
    logits = model(
        input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False, **kwargs
    ).logits
    offset = width - logits.shape[1]
    return [
        logits[row, plen - 1 - offset : len(seq) - 1 - offset].float()
        for row, (seq, plen) in enumerate(zip(sequences, prompt_lengths, strict=True))
    ]


# Mean answer length (tokens, EOS included) from which certifying by teacher forcing beats
# generating: shorter answers cost a generate call little more than its prefill, which the
# teacher-forced pass repeats (BENCHMARKS.md, bench_eval.py).
TEACHER_FORCING_MIN_TOKENS = 16


def teacher_forcing_pays(tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example]) -> bool:
    lengths = [len(encode_response(tokenizer, e.response)) for e in examples]
    return bool(lengths) and sum(lengths) / len(lengths) >= TEACHER_FORCING_MIN_TOKENS


def answer_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    batch_size: int,
    bf16: bool,
    desc: str | None = None,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(index, logits predicting each answer token, answer token ids incl. EOS) per example.

    Batches are sorted by length, so little is spent on padding.
    """
    batches = list(teacher_forced_batches(tokenizer, examples, batch_size))
    with eval_mode(model, bf16):
        for batch, prompts, targets in tqdm(batches, desc=desc, disable=desc is None,
                                            leave=False):  # fmt: skip
            sequences = [p + t for p, t in zip(prompts, targets, strict=True)]
            lengths = [len(p) for p in prompts]
            logits = target_logits(model, sequences, lengths, tokenizer.pad_token_id)
            for i, lg, target in zip(batch, logits, targets, strict=True):
                yield i, lg, torch.tensor(target, device=lg.device)


def teacher_forced_batches(tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example],
                           batch_size: int
                           ) -> Iterator[tuple[list[int], list[list[int]], list[list[int]]]]:
    """(example indices, prompt ids, answer ids incl. EOS) per batch, sorted by length so
    that little is spent on padding."""
    prompts = [encode_prompt(tokenizer, e.prompt, e.history) for e in examples]
    targets = [encode_response(tokenizer, e.response) for e in examples]
    order = sorted(range(len(examples)), key=lambda i: len(prompts[i]) + len(targets[i]))
    for batch in _batches(order, batch_size):
        yield batch, [prompts[i] for i in batch], [targets[i] for i in batch]


def teacher_forced_certify(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    *,
    batch_size: int = 64,
    tie_margin: float = 1e-3,
    bf16: bool = False,
    progress: bool = True,
) -> list[bool]:
    """certified[i] is True iff greedy decoding of example i provably emits response + EOS."""
    certified = [False] * len(examples)
    desc = "exact match (forward)" if progress else None
    for i, logits, gold in answer_logits(model, tokenizer, examples, batch_size, bf16, desc):
        top2 = logits.topk(2, dim=-1)
        margins = top2.values[:, 0] - top2.values[:, 1]
        certified[i] = bool((top2.indices[:, 0] == gold).all() and (margins >= tie_margin).all())
    return certified


def mean_response_loss(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    *,
    batch_size: int = 64,
    bf16: bool = False,
) -> float:
    """Token-mean cross-entropy on response tokens (incl. EOS), in eval mode."""
    total, count = 0.0, 0
    for _, logits, gold in answer_logits(model, tokenizer, examples, batch_size, bf16):
        total += F.cross_entropy(logits, gold, reduction="sum").item()
        count += len(gold)
    return total / max(count, 1)


# ------------------------------------------------------------------------------ generation


class _StopWhenFinal(StoppingCriteria):
    """Per-row early stop once the verdict cannot change (see verdict_is_final)."""

    def __init__(self, tokenizer, prompt_width: int, answers: list[Sequence[str]], mode: MatchMode):
        self.tokenizer, self.prompt_width, self.answers, self.mode = (
            tokenizer,
            prompt_width,
            answers,
            mode,
        )
        self.stopped = [False] * len(answers)  # rows this criterion ended (not EOS, not the cap)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(
            input_ids[:, self.prompt_width :],
            skip_special_tokens=True,
            clean_up_tokenization_spaces=False,
        )
        done = [verdict_is_final(t, a, self.mode) for t, a in zip(texts, self.answers, strict=True)]
        self.stopped = [s or d for s, d in zip(self.stopped, done, strict=True)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


# Shortest common prompt prefix worth encoding once (below it, the copies cost more)
SHARED_PREFIX_MIN_TOKENS = 16


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all rows share, leaving every row one token of its own
    (generate needs at least one uncached token per row)."""
    if not rows:
        return 0
    limit = min(len(row) for row in rows) - 1
    first, length = rows[0], 0
    while length < limit and all(row[length] == first[length] for row in rows):
        length += 1
    return length


def _prefix_cache(model: PreTrainedModel, prefix: list[int]) -> Any:
    """The key/value cache of one prompt prefix (batch 1), to copy into each batch; None for
    a model whose cache cannot be repeated per row (its prompts are then encoded whole)."""
    ids = torch.tensor([prefix], device=model.device)
    kwargs = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    cache = model(input_ids=ids, use_cache=True, **kwargs).past_key_values
    return cache if hasattr(cache, "batch_repeat_interleave") else None


def greedy_generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str | Example],
    **options: Any,
) -> list[str]:
    """Greedy outputs (left-padded batches); with `answers`, rows stop once the verdict is
    final. Options as greedy_generate_with_stops (max_new_tokens is required)."""
    return [text for text, _ in greedy_generate_with_stops(model, tokenizer, prompts, **options)]


def greedy_generate_with_stops(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | Example],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
    answers: Sequence[Sequence[str]] | None = None,
    mode: MatchMode = "equal",
    bf16: bool = False,
    progress: bool = True,
    share_prefix: bool = True,
) -> list[tuple[str, bool]]:
    """Greedy outputs, each with True where the early stop (`answers` given) cut it: the
    output is then a prefix of what the model would have written.

    With `share_prefix`, the tokens every prompt starts with (few-shot demonstrations: ~160
    of the familiarity filter's ~190) are encoded once and their key/value cache is copied
    into every batch, so each row's prefill covers only its own tokens (BENCHMARKS.md)."""
    encoded = [
        encode_prompt(tokenizer, p.prompt, p.history)
        if isinstance(p, Example)
        else encode_prompt(tokenizer, p)
        for p in prompts
    ]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    outputs: list[tuple[str, bool]] = [("", False)] * len(prompts)
    shared = shared_prefix_length(encoded) if share_prefix else 0
    shared = shared if shared >= SHARED_PREFIX_MIN_TOKENS else 0
    config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Swap in a plain greedy config, so that a model's own defaults (repetition penalty, ...)
    # cannot turn "greedy" into something else.
    saved_config, model.generation_config = model.generation_config, config
    try:
        with eval_mode(model, bf16):
            prefix_cache = _prefix_cache(model, encoded[0][:shared]) if shared else None
            shared = shared if prefix_cache is not None else 0
            for batch in tqdm(
                list(_batches(order, batch_size)),
                desc="exact match (generate)",
                disable=not progress,
                leave=False,
            ):
                input_ids, mask = pad_rows([encoded[i][shared:] for i in batch],
                                           tokenizer.pad_token_id, left=True)  # fmt: skip
                extra: dict[str, Any] = {}
                if prefix_cache is not None:
                    # prefix + left-padded own tokens: generate's position ids count only
                    # unmasked tokens, so every row sees the positions it would alone
                    input_ids = torch.cat([torch.tensor([encoded[0][:shared]] * len(batch)),
                                           input_ids], dim=1)  # fmt: skip
                    mask = torch.cat([torch.ones(len(batch), shared, dtype=mask.dtype), mask], 1)
                    extra["past_key_values"] = copy.deepcopy(prefix_cache)
                    extra["past_key_values"].batch_repeat_interleave(len(batch))
                width = input_ids.shape[1]
                criteria = StoppingCriteriaList()
                final = None
                if answers is not None:
                    final = _StopWhenFinal(tokenizer, width, [answers[i] for i in batch], mode)
                    criteria.append(final)
                generated = model.generate(
                    input_ids=input_ids.to(model.device),
                    attention_mask=mask.to(model.device),
                    generation_config=config,
                    stopping_criteria=criteria,
                    **extra,
                )
                for row, i in enumerate(batch):
                    ids = generated[row, width:].tolist()
                    cut = bool(final and final.stopped[row]) and tokenizer.eos_token_id not in ids
                    outputs[i] = (decode(tokenizer, ids), cut)
    finally:
        model.generation_config = saved_config
    return outputs


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
    if fast_path is True and bf16:
        raise ValueError("fast_path needs fp32 evaluation: under bf16, teacher-forced and "
                         "generated logits differ by more than tie_margin")  # fmt: skip
    if fast_path == "auto":
        fast_path = not bf16 and teacher_forcing_pays(tokenizer, examples)
    certified = (
        teacher_forced_certify(
            model,
            tokenizer,
            examples,
            batch_size=batch_size,
            tie_margin=tie_margin,
            bf16=bf16,
            progress=progress,
        )
        if fast_path
        else [False] * len(examples)
    )
    # an answer generation could not finish within the cap is left to generation
    certified = [ok and len(encode_response(tokenizer, e.response)) - 1 <= max_new_tokens
                 for ok, e in zip(certified, examples, strict=True)]  # fmt: skip
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


def accuracy(predictions: Sequence[Prediction]) -> float:
    return sum(p.correct for p in predictions) / len(predictions) if predictions else math.nan
