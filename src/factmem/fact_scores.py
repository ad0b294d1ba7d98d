"""Each scored fact read more richly than exact match: kept, hidden or lost.

Exact match cannot tell a fact the model lost from one it still holds but says in another
shape (after generic-text mixing, answers can start like a passage continuation: "in the
minds of many people ... Seoul"). So beside every exact-match verdict the pipeline records,
per fact (weight-free numbers that survive in the archive):

  contains            the gold (an alias) occurs in the greedy output, normalised
  gold_logprob        the gold answer's mean log-probability per token (EOS included)
                      under teacher forcing after the prompt
  first_token_rank    the rank of the gold's first token at the first answer position
                      (1 = greedy decoding would start with it)
  lens_first_layer    the first layer whose Logit Lens top-10 holds that token (the paper's
                      layer of first occurrence, LoF); None if no layer does

and after the last stage each fact is **kept** (exact match), **hidden** (not exact, but the
gold is in the output or its first token ranks 1 under teacher forcing: the model still
leads with it) or **lost** (neither): `records.fact_status`, which the report reads. One
extra forward pass per set (teacher forcing, with per-layer hooks for the Logit Lens), no
generation: BENCHMARKS.md measures the cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from factmem.data.example import Example
from factmem.evaluation import (
    Prediction,
    eval_mode,
    normalize,
    target_logits,
    teacher_forced_batches,
)
from factmem.lens import LogitLens

LENS_TOP_K = 10  # the paper's Logit Lens top-10


def score_facts(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                examples: Sequence[Example], predictions: Sequence[Prediction], *,
                batch_size: int = 64, bf16: bool = False) -> None:  # fmt: skip
    """Fill each prediction's fact scores in place (see the module doc).

    One forward pass per batch serves both the teacher-forced scores and the Logit Lens:
    under causal attention, the residual at the last prompt position is the same whether
    the answer follows or not, so the lens reads it from the teacher-forced pass (hooks)
    instead of running the prompts again (BENCHMARKS.md: the two-pass way's cost).
    """
    if not examples:
        return
    lens = LogitLens(model)
    scores: dict[int, tuple[float, int, int | None]] = {}
    with eval_mode(model, bf16):
        for batch, prompts, targets in teacher_forced_batches(tokenizer, examples, batch_size):
            sequences = [p + t for p, t in zip(prompts, targets, strict=True)]
            lengths = [len(p) for p in prompts]
            positions = torch.tensor(lengths, device=model.device) - 1  # right-padded rows
            with lens.capture(positions) as residuals:
                logits = target_logits(model, sequences, lengths, tokenizer.pad_token_id)
            first_tokens = torch.tensor([t[0] for t in targets])
            hits = lens.hits(torch.stack(residuals), first_tokens, LENS_TOP_K).T.tolist()
            for i, lg, target, row in zip(batch, logits, targets, hits, strict=True):
                gold = torch.tensor(target, device=lg.device)
                mean = torch.log_softmax(lg, dim=-1).gather(1, gold[:, None]).mean().item()
                rank = int((lg[0] > lg[0, gold[0]]).sum().item()) + 1
                layer = next((n + 1 for n, hit in enumerate(row) if hit), None)
                scores[i] = (mean, rank, layer)
    for i, prediction in enumerate(predictions):
        output = normalize(prediction.output)
        prediction.contains = any(normalize(a) in output for a in prediction.answers if a.strip())
        prediction.gold_logprob = round(scores[i][0], 4)
        prediction.first_token_rank, prediction.lens_first_layer = scores[i][1], scores[i][2]
