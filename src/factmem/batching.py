"""How a batch of examples is laid out for the model, so no compute goes to padding or prompts.

Three layouts, all giving the same loss and gradients (tests/test_batching.py):
  padded       right-padded rows, one example each (transformers' DataCollatorForSeq2Seq);
  packed rows  examples packed first-fit into rows of <= `row_tokens` tokens, each with its
               own position ids, so attention stays within an example; rows stay short, which
               keeps dense-mask attention on CPU cheap (one long row made it slower);
  one row      transformers' DataCollatorWithFlattening, for varlen kernels (flash-attention).
`auto` takes, per batch, whichever of padded / packed rows has fewer token slots: KVR batches
(equal lengths) stay padded, batches mixing short facts with long REMIX passages get packed.

And in every layout the output head runs only on the columns that predict an answer token
(`logits_to_keep` with an index tensor, labels given already shifted), not on prompts.

Written here because transformers has the pieces (position-id packing, logits_to_keep,
shift_labels) but no collator that combines them into short packed rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from transformers import (
    DataCollatorForSeq2Seq,
    DataCollatorWithFlattening,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from factmem.data.example import IGNORE_INDEX
from factmem.models import accepts_logits_to_keep

Layout = Literal["auto", "padded", "packed", "one_row"]


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit-decreasing: indices of examples grouped into rows of <= capacity tokens."""
    rows: list[list[int]] = []
    used: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, fill in enumerate(used):
            if fill + lengths[i] <= capacity:
                rows[r].append(i)
                used[r] += lengths[i]
                break
        else:
            rows.append([i])
            used.append(lengths[i])
    return rows


def pad_rows(rows: Sequence[Sequence[int]], value: int, left: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Rows of token ids (or labels) of different lengths as one long tensor, padded with
    `value` on the right (left=True: on the left, as generation wants), and the 0/1 mask of
    the real entries. The one padder of evaluation, generation, lens and gradients."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[r, span] = torch.tensor(row, dtype=torch.long)
        mask[r, span] = 1
    return ids, mask


def packed_batch(features: list[dict], rows: list[list[int]], pad_id: int) -> dict:
    """Rows of concatenated examples with per-example position ids; no attention mask.

    transformers derives a block-diagonal causal mask from the position ids when no mask and
    no KV cache are given (hence use_cache=False). A row's tail padding is one more
    pseudo-example with label -100.
    """
    width = max(sum(len(features[i]["input_ids"]) for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            ids, labs = features[i]["input_ids"], features[i]["labels"]
            end = start + len(ids)
            input_ids[r, start:end] = torch.tensor(ids)
            labels[r, start:end] = torch.tensor(labs)
            labels[r, start] = IGNORE_INDEX  # nothing predicts an example's first token
            position_ids[r, start:end] = torch.arange(len(ids))
            start = end
        position_ids[r, start:] = torch.arange(width - start)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids,
            "use_cache": False}  # fmt: skip


def answer_targets(batch: dict) -> torch.Tensor:
    """Next-token targets aligned with the model's output columns, as the batch lays them
    out: labels already shifted and cut to answer columns (`answer_columns_only`), or the
    labels shifted here."""
    if batch.get("shift_labels") is not None:
        return batch["shift_labels"]
    return F.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)


def answer_columns_only(batch: dict) -> dict:
    """Ask the model for logits only at columns whose next token is an answer token.

    Labels are handed over already shifted (`shift_labels`) and cut to those columns; the
    loss is the same mean over the same targets.
    """
    targets = answer_targets(batch)  # no shift_labels yet: the labels shifted
    keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
    if len(keep) == 0:
        return batch
    batch["logits_to_keep"] = keep
    batch["labels"] = batch["shift_labels"] = targets[:, keep].contiguous()
    return batch


class BatchCollator:
    """Lays out each batch (see module doc) and trims the output head to answer columns."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, layout: Layout = "auto",
                 row_tokens: int = 512, answer_columns: bool = True):  # fmt: skip
        self.pad_id = tokenizer.pad_token_id
        self.layout, self.row_tokens, self.answer_columns = layout, row_tokens, answer_columns
        self.padded = DataCollatorForSeq2Seq(
            tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX
        )
        self.one_row = DataCollatorWithFlattening(return_position_ids=True,
                                                  separator_id=IGNORE_INDEX)  # fmt: skip
        self.last_layout = ""

    def __call__(self, features: list[dict]) -> dict:
        features = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]
        if self.layout == "one_row":
            batch = dict(self.one_row(features))
            batch["use_cache"] = False  # see packed_batch: a KV cache disables the block mask
            self.last_layout = "one_row"
        else:
            lengths = [len(f["input_ids"]) for f in features]
            rows = pack_rows(lengths, max(self.row_tokens, max(lengths)))
            packed_slots = len(rows) * max(sum(lengths[i] for i in row) for row in rows)
            padded_slots = len(lengths) * max(lengths)
            pack = self.layout == "packed" or (
                self.layout == "auto" and packed_slots < padded_slots
            )
            batch = (
                packed_batch(features, rows, self.pad_id) if pack else dict(self.padded(features))
            )
            self.last_layout = "packed" if pack else "padded"
        return answer_columns_only(batch) if self.answer_columns else batch


def make_collator(
    tokenizer: PreTrainedTokenizerBase,
    packing: str | bool,
    model: PreTrainedModel | None = None,
    row_tokens: int = 512,
) -> BatchCollator:
    """The collator for a training setting: packing auto / True / False."""
    if packing is True:
        layout: Layout = "packed"
    elif packing is False:
        layout = "padded"
    elif model is not None and getattr(model.config, "_attn_implementation", "") in (
        "flash_attention_2", "flash_attention_3"
    ):  # fmt: skip
        layout = "one_row"
    else:
        layout = "auto"
    answer_columns = model is not None and accepts_logits_to_keep(model)
    return BatchCollator(tokenizer, layout, row_tokens, answer_columns)
