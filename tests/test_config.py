"""Config validation: every mistake is named with its field and line."""

import pytest
import yaml

from factmem.config import describe_fields, load_config
from factmem.errors import ConfigError
from factmem.models import resolve_model

GOOD = """\
name: t
model: smollm2-135m
stages:
  - dataset: kvr
    size: 8
    stop: {epochs: 2}
  - dataset: kvr_id
    size: 8
    stop: {epochs: 2}
    training: {learning_rate: 0.001}
"""


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_follow_the_paper(tmp_path):
    config = load_config(_write(tmp_path, GOOD))
    t = config.training
    assert (t.adam_beta1, t.adam_beta2, t.adam_epsilon, t.weight_decay) == (0.9, 0.95, 1e-8, 0.0)
    assert (t.lr_scheduler, t.warmup_ratio, t.batch_size, t.max_grad_norm) == (
        "cosine",
        0.05,
        32,
        1.0,
    )
    assert config.evaluation.max_new_tokens == 1000
    assert config.stage_training(1).learning_rate == 0.001
    assert config.stage_training(0).learning_rate == t.learning_rate


def test_overrides(tmp_path):
    config = load_config(
        _write(tmp_path, GOOD), ["stages[1].size=16", "seed=3", "training.learning_rate=2e-4"]
    )
    assert config.stages[1].size == 16 and config.seed == 3
    assert config.training.learning_rate == 2e-4
    with pytest.raises(ConfigError, match="no item 5"):
        load_config(_write(tmp_path, GOOD), ["stages[5].size=1"])


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            "    size: 8\n    stop: {epochs: 2}\n  - dataset: kvr_id",
            "    sise: 8\n    stop: {epochs: 2}\n  - dataset: kvr_id",
            r"c.yaml:5: stages.0.sise: unknown field",
        ),
        (
            "  - dataset: kvr_id",
            "  - dataset: kvrr",
            r"c.yaml:7: stages.1.dataset: unknown dataset 'kvrr'",
        ),
        (
            "    size: 8\n    stop: {epochs: 2}\n  - dataset: kvr_id",
            "    size: 0\n    stop: {epochs: 2}\n  - dataset: kvr_id",
            r"c.yaml:5: stages.0.size: Input should be greater than 0",
        ),
        (
            "    stop: {epochs: 2}\n    training",
            "    training",
            r"c.yaml:7: stages.1: a stage needs a stop rule",
        ),
        (
            "stop: {epochs: 2}\n  - dataset: kvr_id",
            "stop: {loss_below: 0.001}\n  - dataset: kvr_id",
            r"stages.0.stop: loss_below needs max_epochs",
        ),
        (
            "stop: {epochs: 2}\n  - dataset: kvr_id",
            "stop: {epochs: 2, loss_below: 0.1}\n  - dataset: kvr_id",
            r"stages.0.stop: give exactly one of",
        ),
        (  # a zero margin would trust exact ties, which topk and greedy argmax break apart
            "name: t\n",
            "name: t\nevaluation: {tie_margin: 0}\n",
            r"c.yaml:2: evaluation.tie_margin: Input should be greater than 0",
        ),
        (
            "name: t\n",
            "name: t\nevaluation: {fast_path: true, bf16: true}\n",
            r"c.yaml:2: evaluation: fast_path: true needs fp32 evaluation",
        ),
    ],
)
def test_errors_name_field_and_line(tmp_path, old, new, message):
    assert old in GOOD
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, GOOD.replace(old, new, 1)))


def test_bad_stage_training_override_is_named(tmp_path):
    config = load_config(_write(tmp_path, GOOD.replace("learning_rate: 0.001", "lr: 0.001")))
    with pytest.raises(ConfigError, match=r"stages.1.training.lr: unknown field"):
        config.stage_training(1)


def test_missing_file_and_model(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="neither an existing folder nor a hub ID"):
        resolve_model(str(tmp_path / "no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_every_field_is_documented():
    text = describe_fields()
    for field in (
        "learning_rate",
        "loss_below",
        "exact_match_at_least",
        "max_new_tokens",
        "stages",
    ):
        assert f"`{field}`" in text
    assert "|  |" not in text  # no field without a description


def test_docs_config_md_is_up_to_date():
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert docs.read_text() == describe_fields() + "\n", "run: factmem fields > docs/config.md"


def test_training_settings_rejected_by_transformers_are_named(tmp_path):
    from pathlib import Path

    from factmem.config import StopRule, TrainingConfig
    from factmem.training import training_arguments

    with pytest.raises(ConfigError, match="lr_scheduler: unknown scheduler 'cosin'"):
        load_config(_write(tmp_path, GOOD), ["training.lr_scheduler=cosin"])
    rule = StopRule(epochs=1)
    bad_args = TrainingConfig(trainer_args={"no_such_arg": 1})
    with pytest.raises(ConfigError, match=r"trainer_args: not TrainingArguments fields"):
        training_arguments(bad_args, rule, Path(tmp_path), 0)
    bad_micro = TrainingConfig(batch_size=32, micro_batch_size=5)
    with pytest.raises(ConfigError, match="not a multiple of training.micro_batch_size=5"):
        training_arguments(bad_micro, rule, Path(tmp_path), 0)


def test_an_unreachable_hub_model_is_a_clear_error():
    from factmem.models import load_tokenizer

    # tests run with HF_HUB_OFFLINE=1: the hub cannot be reached, as on a machine without internet
    with pytest.raises(ConfigError, match="cannot load a tokenizer from 'no-such-owner/no-model'"):
        load_tokenizer(resolve_model("no-such-owner/no-model"))


def test_every_preset_loads_and_extends_resolves():
    from factmem.config import PRESET_DIRS

    presets = sorted(p for p in PRESET_DIRS[1].glob("*.yaml"))
    assert len(presets) >= 10
    for preset in presets:
        config = load_config(preset)
        assert config.name == preset.stem
        assert len(config.stages) == (3 if preset.stem == "three-stage" else 2)
    mixed = load_config(PRESET_DIRS[1] / "random-generic.yaml")
    assert mixed.stages[0].mixing.source == "random_words"
    assert mixed.stages[1].mixing.source == "generic" and mixed.stages[1].size == 64
    assert load_config(PRESET_DIRS[1] / "replay-0.1.yaml").stages[1].replay.fraction == 0.1
    known = load_config(PRESET_DIRS[1] / "familiar-popqa.yaml").stages[0]
    assert (known.dataset, known.familiar, known.train, known.stop) == ("popqa", True, False, None)


def test_extends_merges_stage_by_stage(tmp_path):
    base = _write(tmp_path, GOOD)
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {base}\nname: child\nstages:\n  - {{}}\n  - {{size: 3}}\n")
    config = load_config(child)
    assert config.name == "child" and config.stages[1].size == 3
    assert config.stages[1].training == {"learning_rate": 0.001}
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"extends: {loop}\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(loop)


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".", "/abs", "x y"])
def test_a_run_name_cannot_leave_the_output_folder(name, tmp_path, capsys):
    from factmem.cli import main

    data = {"name": name, "model": "unused", "stages": [{"dataset": "kvr", "size": 2,
                                                          "stop": {"epochs": 1}}]}  # fmt: skip
    with pytest.raises(ConfigError, match="name: .*not a plain folder name"):
        load_config(data)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data | {"name": "fine"}))
    assert main(["run", str(config), "--name", name, "--output-dir", str(tmp_path / "out")]) == 2
    assert "not a plain folder name" in capsys.readouterr().err
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out").exists()


def test_an_adapter_penalty_under_fsdp_is_refused_before_training(tmp_path):
    """l2 on a LoRA stage needs whole adapter matrices, which FSDP shards; without LoRA the
    penalty works under FSDP (tests/test_distributed.py)."""
    from factmem.testing import tiny_config_data

    data = tiny_config_data(tmp_path, tmp_path)
    data["training"]["trainer_args"] = {"fsdp": "full_shard auto_wrap"}
    data["stages"][1]["regularizer"] = {"method": "l2", "strength": 1.0}
    data["stages"][1]["lora"] = {"r": 4}
    with pytest.raises(ConfigError, match=r"stages.1.regularizer \(l2\) on a LoRA stage does not "
                                          r"work with trainer_args.fsdp"):  # fmt: skip
        load_config(data)
    del data["stages"][1]["lora"]
    assert load_config(data).stages[1].regularizer.method == "l2"  # without LoRA: fine
