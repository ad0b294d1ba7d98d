"""The training loss on answer tokens, with the output head run on a few tokens at a time.

Why: with long answers (GSM8K, EvolCode) the logits take a large share of a step's memory:
with SmolLM2's 49,152-word vocabulary, up to ~0.7 MB per projected token (bf16 logits, their
fp32 copy, log-softmax, gradient: 2 + 4 + 4 + 4 bytes a word), and a batch of 32 EvolCode
answers (9,391 answer tokens in 12 packed rows of 1,152) OOM-killed a 24 GB machine. Here
the head and cross-entropy run on chunks of answer tokens, each chunk recomputed in backward
(torch.utils.checkpoint), so no more than one chunk's logits exist at a time, and only real
answer tokens are projected (column trimming with `logits_to_keep` also projects the other
rows' non-answer tokens).

Written by hand because transformers has no such loss for its models (torchtune's
LinearCrossEntropyLoss needs torchtune's model classes; Liger's fused kernel needs a GPU).
The model runs with its output head swapped for an identity, so its "logits" are the final
hidden states of the columns the collator kept; everything else (autocast, adapters,
gradient accumulation's token count) stays the Trainer's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from factmem.batching import answer_targets
from factmem.data.example import IGNORE_INDEX


@contextmanager
def head_as_identity(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model's output head, replaced by an identity while inside (restored after)."""
    head = model.get_output_embeddings()
    model.set_output_embeddings(torch.nn.Identity())
    try:
        yield head
    finally:
        model.set_output_embeddings(head)


def _chunk_loss(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Summed cross-entropy of one chunk (logits upcast to fp32, as transformers' loss does)."""
    return F.cross_entropy(F.linear(hidden, weight, bias).float(), targets, reduction="sum")


def chunked_answer_loss(
    model: torch.nn.Module,
    inputs: dict,
    chunk_tokens: int,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """The loss the model would return for `inputs` (mean over answer tokens, or the sum over
    `num_items_in_batch` under gradient accumulation), computed chunk by chunk."""
    targets = answer_targets(inputs)
    forward = {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels")}
    base = model.module if hasattr(model, "module") else model  # DDP wraps; the head is inside
    with head_as_identity(base) as head:
        hidden = model(**forward).logits
    mask = targets != IGNORE_INDEX
    hidden, targets = hidden[mask], targets[mask]
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, len(targets), chunk_tokens):
        end = start + chunk_tokens
        total = total + checkpoint(_chunk_loss, hidden[start:end], head.weight, head.bias,
                                   targets[start:end], use_reentrant=False)  # fmt: skip
    count = num_items_in_batch if num_items_in_batch is not None else max(len(targets), 1)
    return total / count
