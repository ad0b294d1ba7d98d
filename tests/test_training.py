"""One stage: packed batches, stop rules, determinism."""

import math
import platform

import pytest
import torch

from factmem.config import StopRule, TrainingConfig
from factmem.data.factoid import key_value_recall
from factmem.errors import ConfigError
from factmem.models import compute_device, device_name, load_model, load_tokenizer
from factmem.training import StagePlan, device_text, train_stage

FAST = dict(
    learning_rate=1e-2, batch_size=4, bf16=False, checkpoint_every_epochs=0, warmup_ratio=0.0
)


def _fresh(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    return load_model(str(tiny_model_dir), tokenizer), tokenizer


def test_fixed_epochs(tiny_model_dir, tmp_path):
    model, tokenizer = _fresh(tiny_model_dir)
    out = train_stage(
        model,
        tokenizer,
        StagePlan(
            key_value_recall(10, 0),
            TrainingConfig(**FAST),
            StopRule(epochs=3),
            tmp_path / "w",
            seed=0,
        ),
    )
    assert out.epochs == 3 and out.steps == 3 * math.ceil(10 / 4)
    assert out.rule_met and len(out.loss_curve) == out.steps
    assert out.response_tokens < out.train_tokens
    # exact, unrounded step losses (Trainer rounds its logged loss to 4 decimals)
    assert any(h["loss"] != round(h["loss"], 4) for h in out.loss_curve)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert out.device.startswith(expected) and out.device.endswith(", fp32")  # the record
    if expected == "cpu":  # the CPU that trained it, as its kernels differ
        assert out.device == f"cpu ({device_name(torch.device('cpu'))}), fp32"
    assert out.threads == torch.get_num_threads() >= 1  # a CPU stage's losses depend on it
    assert out.to_json()["threads"] == out.threads


def test_device_name_reads_the_cpu_model_name_and_falls_back(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                    "model name\t: Intel(R) Xeon(R) Processor\nflags\t: fpu avx512_bf16\n")
    cpu = torch.device("cpu")
    assert device_name(cpu, info) == "Intel(R) Xeon(R) Processor"
    assert device_name(cpu, tmp_path / "absent") == (platform.processor() or platform.machine())
    assert device_text(cpu, True).endswith(", bf16")


def test_the_compute_device_follows_cuda_and_can_be_forced(monkeypatch):
    monkeypatch.delenv("FACTMEM_DEVICE", raising=False)
    assert compute_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("FACTMEM_DEVICE", "cpu")
    assert compute_device() == torch.device("cpu")
    monkeypatch.setenv("FACTMEM_DEVICE", "gpu0")
    with pytest.raises(ConfigError, match="FACTMEM_DEVICE='gpu0'"):
        compute_device()
    if not torch.cuda.is_available():  # asked for a GPU that is not there: said, not ignored
        monkeypatch.setenv("FACTMEM_DEVICE", "cuda:0")
        with pytest.raises(ConfigError, match="no CUDA device"):
            compute_device()


def test_loss_below_stops_after_patience_steps(tiny_model_dir, tmp_path):
    model, tokenizer = _fresh(tiny_model_dir)
    rule = StopRule(loss_below=0.5, loss_patience=3, max_epochs=200)
    out = train_stage(
        model,
        tokenizer,
        StagePlan(
            key_value_recall(4, 0, key_length=2, value_length=2),
            TrainingConfig(**FAST),
            rule,
            tmp_path / "w",
            seed=0,
        ),
    )
    assert out.rule_met and out.epochs < 200
    below = [h for h in out.loss_curve if h["loss"] < 0.5]
    assert len(below) == 3 and out.loss_curve[-1]["loss"] < 0.5


@pytest.mark.parametrize("measure", ["epoch_mean", "full_pass"])
def test_loss_below_per_epoch(tiny_model_dir, tmp_path, measure):
    from factmem.evaluation import mean_response_loss

    model, tokenizer = _fresh(tiny_model_dir)
    examples = key_value_recall(4, 0, key_length=2, value_length=2)
    rule = StopRule(loss_below=0.5, loss_measure=measure, max_epochs=200)
    out = train_stage(
        model,
        tokenizer,
        StagePlan(
            examples,
            TrainingConfig(**FAST),
            rule,
            tmp_path / "w",
            seed=0,
            epoch_check=lambda m: mean_response_loss(m, tokenizer, examples),
        ),
    )
    key = f"check_{measure}_loss"
    checks = [c[key] for c in out.epoch_checks]
    assert out.rule_met and checks[-1] < 0.5 and all(c >= 0.5 for c in checks[:-1])
    assert out.epochs == len(checks)


def test_exact_match_rule_and_cap(tiny_model_dir, tmp_path):
    from factmem.evaluation import accuracy, exact_match

    model, tokenizer = _fresh(tiny_model_dir)
    examples = key_value_recall(4, 0, key_length=2, value_length=2)

    def em(m):
        return accuracy(exact_match(m, tokenizer, examples, max_new_tokens=8, progress=False))

    out = train_stage(
        model,
        tokenizer,
        StagePlan(
            examples,
            TrainingConfig(**FAST),
            StopRule(exact_match_at_least=1.0, max_epochs=100),
            tmp_path / "w",
            0,
            em,
        ),
    )
    assert out.rule_met and out.epoch_checks[-1]["check_exact_match"] == 1.0
    assert em(model) == 1.0
    model, tokenizer = _fresh(tiny_model_dir)
    capped = train_stage(
        model,
        tokenizer,
        StagePlan(
            examples,
            TrainingConfig(**FAST),
            StopRule(loss_below=1e-12, max_epochs=2),
            tmp_path / "w2",
            0,
        ),
    )
    assert not capped.rule_met and capped.epochs == 2 and "reached without" in capped.stop_reason


def test_same_seed_same_training(tiny_model_dir, tmp_path):
    curves, weights = [], []
    for run in range(2):
        model, tokenizer = _fresh(tiny_model_dir)
        out = train_stage(
            model,
            tokenizer,
            StagePlan(
                key_value_recall(12, 0),
                TrainingConfig(**FAST),
                StopRule(epochs=2),
                tmp_path / f"w{run}",
                seed=7,
            ),
        )
        curves.append([h["loss"] for h in out.loss_curve])
        weights.append(model.model.layers[0].mlp.up_proj.weight.detach().clone())
    assert curves[0] == curves[1]
    assert torch.equal(weights[0], weights[1])


def test_a_model_trained_in_bf16_is_scored_at_the_precision_asked_for(tiny_model_dir, tmp_path):
    """accelerate wraps forward in bf16 autocast for mixed-precision training; after the stage
    (and inside scoring during it) the model must compute exactly as a fresh fp32 copy."""
    from factmem.evaluation import eval_mode

    model, tokenizer = _fresh(tiny_model_dir)
    cfg = TrainingConfig(**{**FAST, "bf16": True})
    train_stage(model, tokenizer, StagePlan(key_value_recall(8, 0), cfg, StopRule(epochs=1),
                                            tmp_path / "w", seed=0))  # fmt: skip
    assert "_original_forward" not in model.__dict__
    fresh = load_model(str(tiny_model_dir), tokenizer)
    fresh.load_state_dict(model.state_dict())
    ids = torch.tensor([tokenizer("the key is abc")["input_ids"]])
    with eval_mode(model):
        trained = model(ids).logits
    with eval_mode(fresh):
        reference = fresh(ids).logits
    with eval_mode(fresh, bf16=True):
        in_bf16 = fresh(ids).logits
    assert torch.equal(trained, reference)
    assert not torch.allclose(in_bf16.float(), reference, atol=1e-4)  # bf16 would be seen


def test_scoring_during_bf16_training_is_fp32(tiny_model_dir):
    """A forward still wrapped by accelerate (as during training) scores without autocast."""
    from accelerate import Accelerator

    from factmem.evaluation import eval_mode

    model, tokenizer = _fresh(tiny_model_dir)
    wrapped = Accelerator(cpu=True, mixed_precision="bf16").prepare_model(model)
    ids = torch.tensor([tokenizer("the key is abc")["input_ids"]])
    with eval_mode(wrapped):
        scored = wrapped(ids).logits
    with torch.no_grad():
        raw_bf16 = wrapped(ids).logits  # the wrapper itself: autocast
    fresh = load_model(str(tiny_model_dir), tokenizer)
    with eval_mode(fresh):
        reference = fresh(ids).logits
    assert torch.equal(scored, reference)
    assert not torch.allclose(raw_bf16.float(), reference, atol=1e-4)


def test_memory_trim_after_every_step_changes_nothing_trained(
    tiny_model_dir, tmp_path, monkeypatch
):
    import factmem.stage_callbacks as stage_callbacks

    calls = []
    monkeypatch.setattr(stage_callbacks, "release_freed_memory",
                        lambda: calls.append(1) or True)  # fmt: skip
    curves = {}
    for trim in (True, False):
        calls.clear()
        model, tokenizer = _fresh(tiny_model_dir)
        out = train_stage(
            model,
            tokenizer,
            StagePlan(
                key_value_recall(10, 0),
                TrainingConfig(**FAST, trim_memory=trim, micro_batch_size=2),
                StopRule(epochs=2),
                tmp_path / f"w{trim}",
                seed=3,
            ),
        )
        # after every micro-batch: 2 epochs of batches of 4, 4 and 2 examples, in twos
        assert len(calls) == (2 * (2 + 2 + 1) if trim else 0)
        curves[trim] = [h["loss"] for h in out.loss_curve]
    assert out.steps == 6 and curves[True] == curves[False]


def test_memory_trim_is_not_part_of_a_run_fingerprint():
    from factmem.config import load_config

    def config(trim):
        stage = {"dataset": "kvr", "size": 4, "stop": {"epochs": 1}}
        return load_config({"training": {"trim_memory": trim}, "stages": [stage]})

    assert (
        config(True).fingerprint(0) == config(False).fingerprint(0) == config("auto").fingerprint(0)
    )


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_malloc_trim_resolves_on_glibc():
    from factmem.training import release_freed_memory, trims_memory

    assert trims_memory(False) is False and trims_memory(True) is True
    # auto trims when training on the CPU, and the call really reaches libc
    assert trims_memory("auto") is True
    assert isinstance(release_freed_memory(), bool)


def _tiny_llama(tied: bool) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1,
                         tie_word_embeddings=tied)  # fmt: skip
    return LlamaForCausalLM(config)


def test_a_tied_head_missing_from_a_checkpoint_is_no_loss_an_untied_one_is():
    from factmem.training import untied_missing_keys

    head, embedding = "lm_head.weight", "model.embed_tokens.weight"
    # checkpoints store a tied head once, under the embedding's name: restored through it
    assert untied_missing_keys(_tiny_llama(tied=True), [head]) == []
    # both names gone: nothing restored the shared tensor
    assert untied_missing_keys(_tiny_llama(tied=True), [head, embedding]) == [head, embedding]
    # a head of its own that the checkpoint lacks would stay at the stage's starting weights
    assert untied_missing_keys(_tiny_llama(tied=False), [head]) == [head]
    assert untied_missing_keys(_tiny_llama(tied=False), []) == []
