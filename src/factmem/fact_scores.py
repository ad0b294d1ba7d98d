"""Each scored fact read more richly than exact match: kept, hidden or lost.

Exact match cannot tell a fact the model lost from one it still holds but says in another
shape (after generic-text mixing, answers can start like a passage continuation: "in the
minds of many people ... Seoul"). So beside every exact-match verdict the pipeline records,
per fact (weight-free numbers that survive in the archive):

  contains            the gold (an alias) occurs in the greedy output, normalised; exact
                      match stops generating a wrong answer at its first wrong token, so
                      those outputs are generated on (until the gold appears, EOS or
                      evaluation.contains_max_new_tokens, 128) before this is read
  gold_logprob        the gold answer's mean log-probability per token (EOS included)
                      under teacher forcing after the prompt
  first_token_rank    the rank of the gold's first token at the first answer position
                      (1 = greedy decoding would start with it)
  lens_first_layer    the first layer whose Logit Lens top-10 holds that token (the paper's
                      layer of first occurrence, LoF); None if no layer does

and after the last stage each fact is **kept** (exact match), **hidden** (not exact, but the
gold is in the output or its first token ranks 1 under teacher forcing: the model still
leads with it) or **lost** (neither): `records.fact_status`, which the report reads. One
extra forward pass per set (teacher forcing, with per-layer hooks for the Logit Lens), and
generation only for the wrong answers exact match cut short: BENCHMARKS.md measures the cost.
"""

from __future__ import annotations

import logging
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
from factmem.evaluation.generation import greedy_generate_with_stops
from factmem.lens import LogitLens

log = logging.getLogger(__name__)

LENS_TOP_K = 10  # the paper's Logit Lens top-10


def score_facts(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                examples: Sequence[Example], predictions: Sequence[Prediction], *,
                batch_size: int = 64, bf16: bool = False, max_new_tokens: int = 128,
                progress: bool = False) -> None:  # fmt: skip
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
    _finish_cut_outputs(model, tokenizer, examples, predictions, batch_size=batch_size,
                        bf16=bf16, max_new_tokens=max_new_tokens, progress=progress)  # fmt: skip
    for i, prediction in enumerate(predictions):
        output = normalize(prediction.output)
        prediction.contains = any(normalize(a) in output for a in prediction.answers if a.strip())
        prediction.gold_logprob = round(scores[i][0], 4)
        prediction.first_token_rank, prediction.lens_first_layer = scores[i][1], scores[i][2]


def _finish_cut_outputs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                        examples: Sequence[Example], predictions: Sequence[Prediction], *,
                        batch_size: int, bf16: bool, max_new_tokens: int,
                        progress: bool) -> None:  # fmt: skip
    """Generate on the wrong answers exact match cut at their first wrong token, so that
    `contains` reads what the model says ("in the minds of many people ... Seoul"), not
    "in". Generation stops once a gold answer appears (contains mode): a cut output then
    already holds it. The exact-match verdict cannot change: it was final where cut."""
    cut = [i for i, p in enumerate(predictions) if p.output_cut and not p.correct]
    if not cut:
        return
    outputs = greedy_generate_with_stops(
        model,
        tokenizer,
        [examples[i] for i in cut],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        answers=[predictions[i].answers for i in cut],
        mode="contains",
        bf16=bf16,
        progress=progress,
    )
    diverged = 0
    for i, (output, output_cut) in zip(cut, outputs, strict=True):
        prediction = predictions[i]
        if not output.startswith(prediction.output):
            # greedy decoding in another batch took another path (a near-tie); keep the
            # output that gave the verdict, so the record never contradicts itself
            diverged += 1
            continue
        prediction.output, prediction.output_cut = output, output_cut
    if diverged:
        log.warning("fact scores: %d of %d answers took another path when generated on "
                    "(a near-tie); their `contains` reads the cut output", diverged, len(cut))
