"""Continual-learning baselines: each penalty on a hand-computed case, zero strength is the
plain run, EWC's Fisher is cached and reused, LoRA and weight averaging end to end."""

import json
import math

import pytest
import torch

from factmem.config import load_config
from factmem.methods import (
    WeightAnchor,
    answer_mask,
    average_weights,
    distillation_loss,
)
from factmem.models import load_model, load_tokenizer
from factmem.pipeline import run_experiment
from factmem.testing import tiny_config_data


def _config(model_dir, tmp_path, name="plain", **stage2):
    data = tiny_config_data(model_dir, tmp_path / "runs", name=name, max_new_tokens=6,
                            checkpoint_every_epochs=0)  # fmt: skip
    data["stages"][1] |= stage2
    return load_config(data)


def _science(results):
    return [(s.accuracy, [h["loss"] for h in s.loss_curve]) for s in results.stages]


def test_l2_and_ewc_penalties_by_hand(tiny):
    model, _ = tiny
    name, param = next(iter(model.named_parameters()))
    anchor = WeightAnchor(model, strength=0.5)
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    fisher[name].view(-1)[3] = 3.0
    ewc = WeightAnchor(model, strength=0.5, weights=fisher)
    original = param.detach().clone()
    try:
        with torch.no_grad():
            param.view(-1)[3] += 0.2
            param.view(-1)[5] -= 0.1
        assert anchor.step_penalty(model).item() == pytest.approx(0.5 / 2 * (0.04 + 0.01))
        assert ewc.step_penalty(model).item() == pytest.approx(0.5 / 2 * 3.0 * 0.04)
    finally:
        with torch.no_grad():
            param.copy_(original)
    assert anchor.step_penalty(model).item() == 0.0


def test_distillation_loss_by_hand():
    teacher = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0]]])  # p = (0.75, 0.25); ignored
    student = torch.tensor([[[0.0, 0.0], [5.0, -5.0]]])  # q = (0.5, 0.5)
    mask = torch.tensor([[True, False]])
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert distillation_loss(student, teacher, mask, 1.0).item() == pytest.approx(kl)
    t = 2.0  # p_T = softmax(log 3 / 2, 0) = (sqrt 3, 1) / (sqrt 3 + 1)
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kl_t = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert distillation_loss(student, teacher, mask, t).item() == pytest.approx(t * t * kl_t)
    labels = torch.tensor([[-100, 7, 8, -100]])
    assert answer_mask({"labels": labels}).tolist() == [[True, True, False, False]]
    assert answer_mask({"shift_labels": torch.tensor([[3, -100]])}).tolist() == [[True, False]]


def test_weight_averaging_interpolates(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    old, new = (
        load_model(str(tiny_model_dir), tokenizer),
        load_model(str(tiny_model_dir), tokenizer),
    )
    with torch.no_grad():
        for p in new.parameters():
            p.add_(1.0)
    expected = {n: p.detach().clone() - 0.75 for n, p in new.named_parameters()}
    average_weights(new, old, 0.25)
    assert all(torch.allclose(p, expected[n], atol=1e-6) for n, p in new.named_parameters())


def test_zero_strength_gives_exactly_the_plain_run(tiny_model_dir, tmp_path):
    plain = _science(run_experiment(_config(tiny_model_dir, tmp_path), progress=False))
    for method in ("l2", "ewc", "lwf"):
        config = _config(tiny_model_dir, tmp_path, f"zero-{method}",
                         regularizer={"method": method, "strength": 0.0})  # fmt: skip
        assert _science(run_experiment(config, progress=False)) == plain, method
    config = _config(tiny_model_dir, tmp_path, "wise-1", weight_average=1.0)
    assert _science(run_experiment(config, progress=False)) == plain


def test_penalties_change_training_and_ewc_fisher_is_cached(tiny_model_dir, tmp_path, monkeypatch):
    plain = run_experiment(_config(tiny_model_dir, tmp_path), progress=False)
    ewc = {"method": "ewc", "strength": 1e3, "fisher_examples": 4}
    first = run_experiment(_config(tiny_model_dir, tmp_path, "ewc", regularizer=ewc),
                           progress=False)  # fmt: skip
    curve = first.stages[1].loss_curve
    assert curve[0]["penalty"] == 0.0 and curve[-1]["penalty"] > 0
    assert _science(first) != _science(plain)
    fisher_files = list((tmp_path / "runs" / "plain" / "stage1").glob("fisher-*.safetensors"))
    assert len(fisher_files) == 1  # beside the checkpoint this run shared its stage 1 from
    import factmem.methods as methods

    monkeypatch.setattr(methods, "fisher_diagonal", lambda *a, **k: pytest.fail("recomputed"))
    ewc_again = _config(tiny_model_dir, tmp_path, "ewc-again", regularizer=ewc | {"strength": 10})
    run_experiment(ewc_again, progress=False)
    for method, strength in (("l2", 10.0), ("lwf", 5.0)):
        config = _config(tiny_model_dir, tmp_path, method,
                         regularizer={"method": method, "strength": strength})  # fmt: skip
        results = run_experiment(config, progress=False)
        assert results.stages[1].loss_curve[-1]["penalty"] > 0, method
        assert _science(results) != _science(plain), method


def test_lora_stage_saves_its_adapter_and_a_merged_model(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, tmp_path, "lora", lora={"r": 4, "alpha": 8.0},
                     weight_average=0.5)  # fmt: skip
    results = run_experiment(config, progress=False)
    run = tmp_path / "runs" / "lora"
    adapter = json.loads((run / "stage2" / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4
    tokenizer = load_tokenizer(str(run / "stage2" / "model"))
    merged = load_model(str(run / "stage2" / "model"), tokenizer)
    before = load_model(str(run / "stage1" / "model"), tokenizer)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    changed = [n for (n, a), (_, b) in zip(merged.named_parameters(), before.named_parameters(),
                                           strict=True) if not torch.equal(a, b)]  # fmt: skip
    assert changed and all("proj" in n for n in changed)  # only adapted linear layers moved
    losses = [h["loss"] for h in results.stages[1].loss_curve]
    assert losses[-1] < losses[0]


def test_l2_and_ewc_with_lora_penalise_the_effective_weight_change(tiny_model_dir, tmp_path):
    from factmem.config import LoraSettings
    from factmem.methods import AdapterAnchor, with_lora

    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = with_lora(load_model(str(tiny_model_dir), tokenizer), LoraSettings(r=2, alpha=4.0))
    name = "model.layers.0.self_attn.q_proj.weight"
    fisher = {n.removeprefix("base_model.model.").replace(".base_layer", ""): torch.ones_like(p)
              for n, p in model.named_parameters() if "base_layer" in n}  # fmt: skip
    fisher[name] = torch.full_like(fisher[name], 3.0)
    l2, ewc = AdapterAnchor(model, 0.5), AdapterAnchor(model, 0.5, fisher)
    assert l2.step_penalty(model).item() == 0.0  # B starts at zero: no change yet
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        q.lora_A["default"].weight.zero_()
        q.lora_A["default"].weight[0, 0] = 1.0
        q.lora_B["default"].weight[0, 0] = 0.1  # delta W[0, 0] = scaling 2 * 0.1 = 0.2
    assert l2.step_penalty(model).item() == pytest.approx(0.5 / 2 * 0.04)
    assert ewc.step_penalty(model).item() == pytest.approx(0.5 / 2 * 3.0 * 0.04)
    ewc_settings = {"method": "ewc", "strength": 1e3, "fisher_examples": 4}
    config = _config(tiny_model_dir, tmp_path, "ewc-lora", lora={"r": 4}, regularizer=ewc_settings)
    results = run_experiment(config, progress=False)
    assert results.stages[1].loss_curve[-1]["penalty"] > 0


def test_every_method_a_config_can_name_is_registered_in_the_order_it_acts(tiny_model_dir,
                                                                             tmp_path):  # fmt: skip
    from typing import get_args

    from factmem.config import RegularizerConfig
    from factmem.methods import METHODS, method_labels

    named = set(get_args(RegularizerConfig.model_fields["method"].annotation))
    assert named | {"lora", "wise"} == set(METHODS)
    config = _config(tiny_model_dir, tmp_path, lora={"r": 4}, weight_average=0.5,
                     regularizer={"method": "ewc", "strength": 0.1})  # fmt: skip
    assert method_labels(config.stages[1]) == ["LoRA r4", "EWC 0.1", "WiSE 0.5"]
    assert method_labels(config.stages[0]) == []
    # each method alone is seen through StageConfig.METHOD_FIELDS (the report's torch-free
    # check before it asks for labels)
    for fields in ({"lora": {"r": 4}}, {"weight_average": 0.5},
                   *({"regularizer": {"method": m, "strength": 0.1}} for m in named)):
        stage = _config(tiny_model_dir, tmp_path, **fields).stages[1]
        assert method_labels(stage) and any(getattr(stage, name) is not None
                                            for name in stage.METHOD_FIELDS)  # fmt: skip
