"""Logit Lens: at which layer does a fact's answer appear? (the paper's Figure 4)

For each example, every decoder layer's output (the residual stream after that layer) at
the position that predicts the answer's first token is decoded through the model's *final
norm* and then its output head, and we record whether the gold first token is among the
top-k. The norm is applied to each layer's own residual: reusing the last layer's
statistics, or decoding transformers' `hidden_states[-1]` (already normed) through the norm
again, are known mistakes.

Written by hand because tuned-lens / nnsight / TransformerLens either fetch from the hub,
do not know this model family offline, or pull in large dependencies for a few lines of
forward hooks; the test checks it against `output_hidden_states` computed independently.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from factmem.batching import pad_rows
from factmem.data.example import Example, encode_prompt, encode_response
from factmem.evaluation import eval_mode


@dataclass
class LensResult:
    """hits[i][l]: gold first token in the top-k at layer l+1 for example i."""

    hits: list[list[bool]]
    top_k: int

    @property
    def layers(self) -> int:
        return len(self.hits[0]) if self.hits else 0

    def frequency(self) -> list[float]:
        """Per layer, the fraction of examples whose answer is in the top-k there."""
        n = len(self.hits)
        return [sum(row[layer] for row in self.hits) / n for layer in range(self.layers)]

    def first_layers(self) -> list[int | None]:
        """Per example, the first layer (1-based) with a hit, or None."""
        return [next((i + 1 for i, hit in enumerate(row) if hit), None) for row in self.hits]

    def summary(self) -> dict[str, float]:
        """Layer of first occurrence: mean and std over examples that have one; how many."""
        found = [f for f in self.first_layers() if f is not None]
        mean = sum(found) / len(found) if found else math.nan
        var = sum((f - mean) ** 2 for f in found) / (len(found) - 1) if len(found) > 1 else 0.0
        return {"first_layer_mean": mean, "first_layer_std": math.sqrt(var),
                "found": len(found) / len(self.hits), "examples": len(self.hits)}  # fmt: skip


class LogitLens:
    """Decodes residual streams through a model's own final norm and output head."""

    def __init__(self, model: PreTrainedModel):
        decoder = model.get_decoder()
        if not hasattr(decoder, "layers") or not hasattr(decoder, "norm"):
            raise TypeError(f"{type(model).__name__}: expected a decoder with .layers and .norm "
                            "(Llama, Mistral, Qwen, ...)")  # fmt: skip
        self.model, self.layers, self.norm = model, decoder.layers, decoder.norm
        self.head = model.get_output_embeddings()

    @classmethod
    def from_model(cls, model: PreTrainedModel) -> LogitLens:
        return cls(model)

    @contextlib.contextmanager
    def capture(self, positions: torch.Tensor) -> Iterator[list[torch.Tensor]]:
        """While open, every forward pass of the model appends each layer's output at
        `positions` (one per row, fp32) to the yielded list: the lens can ride on a pass
        made for another purpose (fact scores' teacher forcing) instead of its own."""
        captured: list[torch.Tensor] = []
        rows = torch.arange(positions.shape[0], device=positions.device)

        def keep(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            captured.append(hidden[rows, positions].float())

        handles = [layer.register_forward_hook(keep) for layer in self.layers]
        try:
            yield captured
        finally:
            for handle in handles:
                handle.remove()

    def residuals(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  positions: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """[layers, batch, hidden]: each layer's output at `positions` (one per row)."""
        with self.capture(positions) as captured:
            self.model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1)
        return torch.stack(captured)

    def logits(self, residuals: torch.Tensor) -> torch.Tensor:
        """Final norm, then the output head, applied to every layer's residual separately
        (at the head's own precision, also inside a bf16 autocast)."""
        weight = self.head.weight
        with torch.autocast(weight.device.type, enabled=False):
            return self.head(self.norm(residuals.to(weight.dtype))).float()

    def hits(self, residuals: torch.Tensor, gold: torch.Tensor, top_k: int) -> torch.Tensor:
        """[layers, batch] bool: the gold first token among each layer's top-k."""
        top = self.logits(residuals).topk(top_k, dim=-1).indices  # [layers, batch, k]
        return (top == gold.to(top.device)[None, :, None]).any(-1)


def prompt_batch(tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example]):
    """Right-padded prompt ids, mask, the last prompt position and the gold first token."""
    prompts = [encode_prompt(tokenizer, e.prompt, e.history) for e in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, mask = pad_rows(prompts, pad)
    positions = torch.tensor([len(p) - 1 for p in prompts])
    gold = torch.tensor([encode_response(tokenizer, e.response)[0] for e in examples])
    return ids, mask, positions, gold


def lens_hits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    top_k: int = 10,
    batch_size: int = 32,
) -> LensResult:
    """Whether each example's gold first token is in each layer's top-k."""
    lens = LogitLens.from_model(model)
    hits: list[list[bool]] = []
    with eval_mode(model):
        for start in range(0, len(examples), batch_size):
            ids, mask, positions, gold = prompt_batch(
                tokenizer, examples[start : start + batch_size]
            )
            device = model.device
            residuals = lens.residuals(ids.to(device), mask.to(device), positions.to(device))
            hits += lens.hits(residuals, gold, top_k).T.tolist()
    return LensResult(hits, top_k)
