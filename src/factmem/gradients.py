"""Gradient alignment: the cosine between the loss gradients of two sets at one checkpoint.

The paper argues (its Figures 2-3) that forgetting comes from stage-2 gradients that undo
stage-1 memorisation, and that mixing changes that. This measures it: at a checkpoint, the
gradient of the mean response loss on a fixed sample of D_A, of D_B and of D_B mixed with
D_M, and their cosines, overall and per parameter group (each decoder layer, embeddings,
final norm and head). Gradients are summed in fp32 over the whole sample, so the result
does not depend on the batch size.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from factmem.batching import pad_rows
from factmem.data.example import IGNORE_INDEX, Example, encode_example


def loss_gradient(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    batch_size: int = 16,
) -> dict[str, torch.Tensor]:
    """{parameter name: gradient} of the token-mean response loss over all `examples`."""
    encoded = [encode_example(tokenizer, e) for e in examples]
    total_tokens = sum(sum(t != IGNORE_INDEX for t in e["labels"]) for e in encoded)
    was_training = model.training
    model.eval()  # no dropout; gradients still flow
    model.zero_grad(set_to_none=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    try:
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start : start + batch_size]
            ids, mask = (t.to(model.device) for t in pad_rows([e["input_ids"] for e in batch], pad))
            labels = pad_rows([e["labels"] for e in batch], IGNORE_INDEX)[0].to(model.device)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                                   ignore_index=IGNORE_INDEX, reduction="sum")  # fmt: skip
            (loss / total_tokens).backward()
        grads = {name: p.grad.detach().float().clone() for name, p in model.named_parameters()
                 if p.grad is not None}  # fmt: skip
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return grads


def parameter_group(name: str) -> str:
    """layer.<i> for decoder layer i's parameters; embed, norm or head for the rest."""
    match = re.search(r"\.layers\.(\d+)\.", name)
    if match:
        return f"layer.{int(match.group(1)) + 1}"
    if "embed" in name:
        return "embed"
    return "head" if "lm_head" in name else "norm"


def gradient_cosines(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict:
    """Cosine overall and per parameter group, from per-group dot products and norms."""
    sums: dict[str, list[float]] = {}
    for name in a.keys() & b.keys():
        group = sums.setdefault(parameter_group(name), [0.0, 0.0, 0.0])
        x, y = a[name].flatten().double(), b[name].flatten().double()
        group[0] += float(x @ y)
        group[1] += float(x @ x)
        group[2] += float(y @ y)

    def cosine(dot: float, xx: float, yy: float) -> float:
        return dot / (xx**0.5 * yy**0.5) if xx > 0 and yy > 0 else float("nan")

    total = [sum(v[i] for v in sums.values()) for i in range(3)]

    def position(group: str) -> tuple[int, int]:  # embed, layer.1 .. layer.N, norm, head
        if group.startswith("layer."):
            return (1, int(group.split(".")[1]))
        return ({"embed": 0, "norm": 2, "head": 3}[group], 0)

    order = sorted(sums, key=position)
    return {"overall": cosine(*total), "groups": {g: cosine(*sums[g]) for g in order}}
