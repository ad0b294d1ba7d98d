"""Teacher-forced passes: the logits that predict each answer token, in length-sorted batches,
at the precision asked for (eval_mode); what certifies an answer without generating it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from factmem.batching import pad_rows
from factmem.data.example import Example, encode_prompt, encode_response
from factmem.models import accepts_logits_to_keep


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


def batched(order: list[int], size: int) -> Iterator[list[int]]:
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
    for batch in batched(order, batch_size):
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
