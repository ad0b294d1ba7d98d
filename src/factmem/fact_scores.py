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
leads with it) or **lost** (neither): `records.fact_status`, which the report reads. Two
extra forward passes per set (teacher forcing, and the prompts with per-layer hooks), no
generation: BENCHMARKS.md measures the cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from factmem.data.example import Example
from factmem.evaluation import Prediction, answer_logits, normalize
from factmem.lens import lens_hits

LENS_TOP_K = 10  # the paper's Logit Lens top-10


def score_facts(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                examples: Sequence[Example], predictions: Sequence[Prediction], *,
                batch_size: int = 64, bf16: bool = False) -> None:  # fmt: skip
    """Fill each prediction's fact scores in place (see the module doc)."""
    if not examples:
        return
    teacher_forced = {}
    for i, logits, gold in answer_logits(model, tokenizer, examples, batch_size, bf16):
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        mean = logprobs.gather(1, gold[:, None]).mean().item()
        first = logits[0]
        rank = int((first > first[gold[0]]).sum().item()) + 1
        teacher_forced[i] = (mean, rank)
    layers = lens_hits(model, tokenizer, examples, top_k=LENS_TOP_K,
                       batch_size=batch_size).first_layers()  # fmt: skip
    for i, prediction in enumerate(predictions):
        output = normalize(prediction.output)
        prediction.contains = any(normalize(a) in output for a in prediction.answers if a.strip())
        prediction.gold_logprob = round(teacher_forced[i][0], 4)
        prediction.first_token_rank = teacher_forced[i][1]
        prediction.lens_first_layer = layers[i]
