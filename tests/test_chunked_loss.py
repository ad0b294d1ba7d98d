"""The chunked answer loss gives the model's own loss and gradients, without whole logits."""

import pytest
import torch

from factmem.batching import make_collator
from factmem.chunked_loss import chunked_answer_loss
from factmem.config import StopRule, TrainingConfig
from factmem.data.example import Example, encode_example
from factmem.data.factoid import key_value_recall
from factmem.errors import ConfigError
from factmem.methods import Plugin
from factmem.models import load_model, load_tokenizer
from factmem.training import StagePlan, train_stage


def _model_and_batch(tiny_model_dir, packing):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir), tokenizer)
    facts = key_value_recall(6, 0)
    long = [Example(f"Continue {i}:", " ".join(["word"] * (5 + 7 * i)), []) for i in range(3)]
    features = [encode_example(tokenizer, e) for e in facts + long]
    batch = make_collator(tokenizer, packing, model, row_tokens=64)(features)
    return model, batch


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("packing", [True, False])
def test_same_loss_and_gradients_as_the_models_own(tiny_model_dir, packing):
    model, batch = _model_and_batch(tiny_model_dir, packing)
    answers = int((batch["labels"] != -100).sum())
    model(**batch).loss.backward()
    expected, expected_grads = None, _grads(model)
    with torch.no_grad():
        expected = model(**batch).loss
    model.zero_grad()
    loss = chunked_answer_loss(model, dict(batch), chunk_tokens=3)  # many chunks
    loss.backward()
    assert answers > 3 and torch.allclose(loss, expected, atol=1e-6)
    grads = _grads(model)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, expected_grads[name], atol=1e-6), name
    # the head is back in place, and gradient accumulation's token count is honoured
    assert not isinstance(model.get_output_embeddings(), torch.nn.Identity)
    summed = chunked_answer_loss(model, dict(batch), 5, num_items_in_batch=2 * answers)
    assert torch.allclose(summed, expected / 2, atol=1e-6)


def test_a_stage_trains_the_same_with_chunks(tiny_model_dir, tmp_path):
    curves = {}
    for chunk in (None, 4):
        tokenizer = load_tokenizer(str(tiny_model_dir))
        model = load_model(str(tiny_model_dir), tokenizer)
        cfg = TrainingConfig(learning_rate=1e-2, batch_size=4, micro_batch_size=2, bf16=False,
                             checkpoint_every_epochs=0, warmup_ratio=0.0,
                             loss_chunk_tokens=chunk)  # fmt: skip
        plan = StagePlan(key_value_recall(10, 0), cfg, StopRule(epochs=2), tmp_path / f"w{chunk}",
                         seed=1)  # fmt: skip
        out = train_stage(model, tokenizer, plan)
        curves[chunk] = torch.tensor([h["loss"] for h in out.loss_curve])
    assert len(curves[4]) == 6 and torch.allclose(curves[4], curves[None], rtol=1e-4)


def test_refused_with_a_regularizer(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir), tokenizer)
    cfg = TrainingConfig(batch_size=4, bf16=False, loss_chunk_tokens=8)
    with pytest.raises(ConfigError, match="loss_chunk_tokens does not combine"):
        train_stage(model, tokenizer, StagePlan(key_value_recall(4, 0), cfg, StopRule(epochs=1),
                                                tmp_path / "w", seed=0, plugins=[Plugin()]))
