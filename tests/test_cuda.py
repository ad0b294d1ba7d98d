"""The CUDA path (run by scripts/gpu_check.sh on a GPU machine; skipped without CUDA): models
are placed on the GPU, a stage trains there in bf16 and says so, and exact match, the Logit
Lens and the fact scores give there what they give on the CPU."""

import copy
import json

import pytest
import torch

from factmem.config import StopRule, TrainingConfig, load_config
from factmem.data.factoid import key_value_recall
from factmem.evaluation import exact_match
from factmem.fact_scores import score_facts
from factmem.layout import RunFolder
from factmem.lens import lens_hits
from factmem.models import load_model, load_tokenizer
from factmem.pipeline import run_experiment
from factmem.testing import tiny_config_data
from factmem.training import StagePlan, train_stage

pytestmark = pytest.mark.cuda


def test_a_loaded_model_is_on_the_gpu(tiny_model_dir):
    model = load_model(str(tiny_model_dir), load_tokenizer(str(tiny_model_dir)))
    assert {p.device.type for p in model.parameters()} == {"cuda"}


def test_a_stage_trains_on_the_gpu_in_bf16_and_records_it(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir), tokenizer)
    cfg = TrainingConfig(learning_rate=1e-2, batch_size=8, checkpoint_every_epochs=0)
    facts = key_value_recall(16, seed=1, key_length=4, value_length=3)
    out = train_stage(model, tokenizer, StagePlan(facts, cfg, StopRule(epochs=10), tmp_path / "w",
                                                  seed=0))  # fmt: skip
    assert out.device.startswith("cuda") and out.device.endswith("bf16"), out.device
    assert out.loss_curve[-1]["loss"] < out.loss_curve[0]["loss"]
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert next(model.parameters()).dtype == torch.float32  # autocast, fp32 master weights


def _on_cpu(model):
    return copy.deepcopy(model).to("cpu")


def test_scoring_on_the_gpu_agrees_with_the_cpu(partly_trained):
    model, tokenizer, examples = partly_trained
    assert model.device.type == "cuda"
    on_gpu = exact_match(model, tokenizer, examples, max_new_tokens=8, progress=False)
    on_cpu = exact_match(_on_cpu(model), tokenizer, examples, max_new_tokens=8, progress=False)
    assert [p.output for p in on_gpu] == [p.output for p in on_cpu]
    assert 0 < sum(p.correct for p in on_gpu) < len(examples)
    score_facts(model, tokenizer, examples, on_gpu)
    score_facts(_on_cpu(model), tokenizer, examples, on_cpu)
    for gpu, cpu in zip(on_gpu, on_cpu, strict=True):
        assert gpu.gold_logprob == pytest.approx(cpu.gold_logprob, abs=1e-3)
        assert gpu.first_token_rank == cpu.first_token_rank
    assert lens_hits(model, tokenizer, examples).hits == lens_hits(
        _on_cpu(model), tokenizer, examples).hits


def test_a_run_trains_and_scores_every_stage_on_the_gpu(tiny_model_dir, tmp_path):
    config = load_config(tiny_config_data(tiny_model_dir, tmp_path / "runs"))
    run_experiment(config, progress=False)
    run = RunFolder.of(config.output_dir, config.name)
    for index in range(1, len(config.stages) + 1):
        training = json.loads(run.stage(index).training.read_text())
        assert training["device"].startswith("cuda"), training["device"]
