"""The attention kernel by measurement (src/factmem/kernels.py).

What must hold: every kernel gives today's loss and gradients within the precision's
tolerance, `auto` picks by the timings (and only for a clear gain), the stage records which
kernel trained its batches, and scoring always runs on the model's own kernel."""

import json

import pytest
import torch
from transformers import DataCollatorForSeq2Seq

from factmem import kernels
from factmem.batching import BatchCollator
from factmem.config import StopRule, TrainingConfig, load_config
from factmem.data.example import IGNORE_INDEX, Example, encode_example
from factmem.data.factoid import key_value_recall
from factmem.errors import ConfigError
from factmem.models import load_model, load_tokenizer
from factmem.training import StagePlan, train_stage

FAST = dict(learning_rate=1e-2, batch_size=4, bf16=False, checkpoint_every_epochs=0,
            warmup_ratio=0.0)  # fmt: skip


def _batches(tokenizer):
    long = [Example("Complete the following partial passage: the of and to", "in a is " * 12)]
    features = [encode_example(tokenizer, e)
                for e in key_value_recall(5, 0) + long * 2]  # fmt: skip
    padded = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    packed = BatchCollator(tokenizer, "packed", row_tokens=160)
    return {"padded": dict(padded([dict(f) for f in features])),
            "packed": packed([dict(f) for f in features])}  # fmt: skip


def _loss_and_grads(model, batch, bf16):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(**batch).loss
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad()
    return loss.item(), grads


@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("bf16", [False, True])
def test_every_attention_kernel_gives_the_same_loss_and_gradients(tiny, layout, bf16):
    model, tokenizer = tiny
    model.train()
    batch = _batches(tokenizer)[layout]
    try:
        kernels.set_attention(model, "sdpa")
        reference = _loss_and_grads(model, batch, bf16)
        kernels.set_attention(model, "eager")
        loss, grads = _loss_and_grads(model, batch, bf16)
    finally:
        kernels.set_attention(model, "sdpa")
    # fp32: the same up to summation order; bf16: within bf16's 8 bits of mantissa
    rel = 2e-2 if bf16 else 1e-5
    assert loss == pytest.approx(reference[0], rel=rel)
    assert (grads - reference[1]).norm() <= rel * reference[1].norm()
    if not bf16:  # and not trivially: a kernel that ignored the mask would differ far more
        assert not torch.equal(grads, torch.zeros_like(grads))


def test_timing_attention_runs_a_models_worth_forward_and_backward(tiny, monkeypatch):
    model, _ = tiny
    module = kernels.attention_module(model)
    assert module is model.model.layers[0].self_attn
    for name in ("sdpa", "eager"):
        seconds = kernels.time_attention(module, name, 2, 32, torch.float32, torch.device("cpu"))
        assert 0 < seconds < 10
    unknown = kernels.time_attention(module, "no_such_kernel", 2, 32, torch.float32,
                                     torch.device("cpu"))  # fmt: skip
    assert unknown == float("inf")
    calls = []
    eager = kernels._attention_function(module, "eager")
    monkeypatch.setattr(kernels, "_attention_function",
                        lambda m, n: lambda *a, **k: calls.append(n) or eager(*a, **k))
    kernels.time_attention(module, "eager", 2, 32, torch.float32, torch.device("cpu"))
    assert len(calls) == 1 + model.config.num_hidden_layers  # a warm-up call, then one a layer


def test_auto_takes_the_faster_kernel_only_for_a_clear_gain(tiny, monkeypatch, tmp_path):
    model, _ = tiny
    timed = []

    def fake_timings(module, name, rows, width, dtype, device, warm_up=True):
        timed.append((name, rows, width))
        gain = {8: 0.5, 16: 0.95}[rows]  # eager at half the time; eager 5% faster
        return {"sdpa": 1.0, "eager": gain}[name]

    monkeypatch.setattr(kernels, "time_attention", fake_timings)
    monkeypatch.setattr(kernels, "_chosen", {})
    monkeypatch.setattr(kernels, "_loaded", False)
    monkeypatch.setenv("FACTMEM_CACHE", str(tmp_path))
    assert kernels.choose_attention(model, "sdpa", 8, 36, torch.bfloat16) == "eager"
    assert kernels.choose_attention(model, "sdpa", 16, 36, torch.bfloat16) == "sdpa"
    # each shape bucket is timed once, at the bucket's width; a clear gap (2x) in one round,
    # a close one (5%) in two
    assert kernels.choose_attention(model, "sdpa", 8, 60, torch.bfloat16) == "eager"
    assert timed == [("sdpa", 8, 64), ("eager", 8, 64)] + [("sdpa", 16, 64),
                                                           ("eager", 16, 64)] * 2  # fmt: skip
    # a kernel the user chose by name is not second-guessed
    assert kernels.choose_attention(model, "flash_attention_2", 8, 36, torch.bfloat16) == (
        "flash_attention_2")


def test_width_buckets_are_powers_of_two_from_32():
    assert [kernels.width_bucket(w) for w in (1, 32, 33, 100, 512, 513)] == [
        32, 32, 64, 128, 512, 1024]  # fmt: skip
    assert [kernels.width_bucket(r, smallest=1) for r in (1, 7, 8, 9, 32)] == [1, 8, 8, 16, 32]


@pytest.mark.parametrize("setting", ["auto", "eager"])
def test_a_stage_records_its_kernels_and_scores_with_the_models_own(
    tiny_model_dir, tmp_path, monkeypatch, setting
):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir), tokenizer)
    assert kernels.current_attention(model) == "sdpa"
    # auto: make eager the measured winner, whatever this machine's timings say
    monkeypatch.setattr(kernels, "time_attention",
                        lambda module, name, *a: {"sdpa": 1.0, "eager": 0.1}[name])  # fmt: skip
    monkeypatch.setattr(kernels, "_chosen", {})
    monkeypatch.setattr(kernels, "_loaded", False)
    monkeypatch.setenv("FACTMEM_CACHE", str(tmp_path))
    seen_in_training, seen_when_scoring = [], []
    forward = type(model).forward

    def spy(self, *args, **kwargs):
        (seen_when_scoring if not self.training else seen_in_training).append(
            kernels.current_attention(self))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", spy)
    probe = lambda m: {"loss": m(**_batches(tokenizer)["padded"]).loss.item()}  # noqa: E731

    def probe_in_eval(m):
        m.eval()
        try:
            return probe(m)
        finally:
            m.train()

    plan = StagePlan(key_value_recall(10, 0), TrainingConfig(**FAST, attention=setting),
                     StopRule(epochs=2), tmp_path / "w", seed=0, probe=probe_in_eval,
                     probe_every_steps=1)  # fmt: skip
    out = train_stage(model, tokenizer, plan)
    assert out.attention == {"eager": out.steps}  # one micro-batch a step here
    assert set(seen_in_training) == {"eager"} and seen_when_scoring
    assert set(seen_when_scoring) == {"sdpa"}  # probes between batches: the model's own
    assert kernels.current_attention(model) == "sdpa"  # and given back after the stage


def test_the_kernel_is_checked_and_only_a_named_one_is_part_of_a_fingerprint():
    """auto keeps every archived run's fingerprint; a named kernel (whose rounding moves
    results) makes a run of its own (issue 43)."""

    def config(attention):
        stage = {"dataset": "kvr", "size": 4, "stop": {"epochs": 1}}
        return load_config({"training": {"attention": attention}, "stages": [stage]})

    assert config("auto").fingerprint(0) == (
        load_config({"stages": [{"dataset": "kvr", "size": 4, "stop": {"epochs": 1}}]})
        .fingerprint(0))  # fmt: skip
    assert config("eager").fingerprint(0) != config("auto").fingerprint(0)
    with pytest.raises(ConfigError, match="attention"):
        config("fast_please")


def test_auto_keeps_the_models_own_kernel_across_processes(tiny, monkeypatch):
    """Ranks would time different shapes apart and could choose differently."""
    model, _ = tiny
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(kernels, "time_attention",
                        lambda module, name, *a: {"sdpa": 1.0, "eager": 0.1}[name])  # fmt: skip
    switch = kernels.AttentionSwitch(model, "auto", torch.float32)
    switch.before_batch({"input_ids": torch.zeros(4, 30, dtype=torch.long)})
    assert switch.counts == {"sdpa": 1}


def test_a_choice_is_kept_on_disk_and_reused_by_later_processes(tiny, monkeypatch, tmp_path):
    """Runs of one config on one machine train with one kernel, whatever later timings say."""
    model, _ = tiny
    monkeypatch.setenv("FACTMEM_CACHE", str(tmp_path))
    for winner in ("eager", "sdpa"):  # a second process whose timings would say otherwise
        monkeypatch.setattr(kernels, "_chosen", {})
        monkeypatch.setattr(kernels, "_loaded", False)
        monkeypatch.setattr(kernels, "time_attention", lambda module, name, *a, w=winner, **k:
                            0.1 if name == w else 1.0)  # fmt: skip
        assert kernels.choose_attention(model, "sdpa", 8, 36, torch.bfloat16) == "eager"
    assert list(json.loads((tmp_path / "attention_kernels.json").read_text()).values()) == [
        "eager"]
