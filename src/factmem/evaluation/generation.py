"""Greedy generation in left-padded batches, each row stopping once its verdict is final, and
a prompt prefix every row shares (few-shot demonstrations) encoded once."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from factmem.batching import pad_rows
from factmem.data.example import Example, encode_prompt
from factmem.evaluation.forward import batched, eval_mode
from factmem.evaluation.verdicts import MatchMode, decode, verdict_is_final
from factmem.models import accepts_logits_to_keep


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
    decided: Callable[[list[tuple[int, str]]], bool] | None = None,
) -> list[tuple[str, bool]]:
    """Greedy outputs, each with True where the early stop (`answers` given) cut it: the
    output is then a prefix of what the model would have written.

    `decided(batch)`, called with each batch's (prompt index, output) pairs, may end the
    generation after that batch (a stop rule's question answered); the prompts of later
    batches then keep ("", False). The batches are the same with or without it.

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
                list(batched(order, batch_size)),
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
                if decided is not None and decided([(i, outputs[i][0]) for i in batch]):
                    break
    finally:
        model.generation_config = saved_config
    return outputs
