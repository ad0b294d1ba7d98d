"""The cost estimate: its formulas on known numbers, its tokens against a real mixture."""

import pytest

from factmem.config import load_config
from factmem.estimate import (
    ModelShape,
    cpu_check,
    grid_estimate,
    memory_per_device,
    model_shape,
    stage_costs,
    training_flops,
)
from factmem.models import load_tokenizer
from factmem.stage_data import stage_examples, stage_mixture, tokens_by_kind
from factmem.testing import tiny_config_data


def test_formulas_on_known_numbers():
    shape = ModelShape(parameters=1e9, hidden=1000, layers=10, vocabulary=50000)
    assert training_flops(shape, 1e6) == 6e15
    # 16 B x 1e9 / 8 + 2 B x 1e8 (one layer) + 34 x 100 x 2 x 1000 x 10 + 4 x 100 x 2 x 50000
    assert memory_per_device(shape, 8, 2, 100) == 2e9 + 2e8 + 68e6 + 40e6
    records = [{"stage": "a", "train_tokens": 100, "train_time_s": 10.0},
               {"stage": "b", "train_tokens": 300, "train_time_s": 45.0}]  # fmt: skip
    checked = cpu_check(records, 1e6)
    assert [c["predicted_s"] for c in checked] == [10.0, 30.0]
    assert [c["ratio"] for c in checked] == [1.0, 1.5]


def test_the_paper_model_is_known_offline_and_a_local_model_is_counted(tiny_model_dir):
    assert model_shape("meta-llama/Meta-Llama-3-8B").parameters == 8.03e9
    from factmem.models import load_model

    tiny = load_model(str(tiny_model_dir), load_tokenizer(str(tiny_model_dir)))
    assert model_shape(str(tiny_model_dir)).parameters == sum(p.numel() for p in tiny.parameters())


def test_stage_tokens_match_the_mixture_the_pipeline_trains_on(tiny_model_dir, tmp_path):
    data = tiny_config_data(tiny_model_dir, tmp_path)
    mixing = {"source": "random_words", "words": 6, "ratio": 2.0}
    data["stages"][1] |= {"replay": {"fraction": 0.5}, "mixing": mixing}
    config = load_config(data)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    costs = stage_costs(config, tokenizer, "tiny")
    sets = [stage_examples(config, i) for i in range(2)]
    for cost, index in zip(costs, (0, 1), strict=True):
        train_set, _ = stage_mixture(config, index, sets)
        counted = sum(tokens_by_kind(tokenizer, train_set).values())
        assert cost.examples == len(train_set)
        assert cost.tokens_per_epoch == pytest.approx(counted, rel=0.1)  # mixing: a sample
        assert cost.epochs == config.stages[index].stop.epochs
    assert costs[0].tokens_per_epoch == sum(tokens_by_kind(tokenizer, sets[0]).values())


def test_a_grid_estimate_counts_each_shared_stage_once(tiny_model_dir, tmp_path):
    from test_grid import _grid_file

    from factmem.grid import load_grid

    grid = load_grid(_grid_file(tmp_path, tiny_model_dir))
    text = grid_estimate(grid, "H100", devices=2, mfu=0.5)
    trainings = grid.training_counts()["trainings"]
    assert text.startswith(f"cost of grid g: {trainings} distinct stage trainings (of 8 ")
    assert text.count("\n| ") == trainings + 1  # header + one row per distinct training
    with pytest.raises(Exception, match="known A100"):
        grid_estimate(grid, "TPU")


def test_the_estimate_here_times_what_is_left_at_the_speed_stages_reached_here(
        tiny_model_dir, tmp_path):  # fmt: skip
    """`--dry-run --here`: the stage trainings left (seed 1's three, after seed 0 ran), at the
    median FLOP/s of the stages this machine recorded (seed 0's three), each counted once
    though the archive holds a copy of its record."""
    import json
    import statistics

    from test_grid import _grid_file

    from factmem.estimate import estimate_here, grid_estimate_here
    from factmem.grid import load_grid, run_grid

    path = _grid_file(tmp_path, tiny_model_dir)
    full = load_grid(path)
    runs, archive = tmp_path / "runs", tmp_path / "archive"
    before = estimate_here(full, [runs])
    assert before.seconds is None and len(before.costs) == full.training_counts()["trainings"]
    assert "no stage recorded as trained on cpu" in grid_estimate_here(full, [runs])

    run_grid(load_grid(path, only=["seed=0"]), progress=False, archive=archive)
    after = estimate_here(full, [runs, archive])
    assert sorted((c.run, c.stage) for c in after.costs) == [
        ("no-mixing_seed1", 1), ("no-mixing_seed1", 2), ("replay-0.5_seed1", 2)]
    parameters = model_shape(str(tiny_model_dir)).parameters
    measured = []
    for record in sorted(runs.glob("g/*seed0/stage*/training.json")):
        data = json.loads(record.read_text())
        if "shared_from" not in data:
            assert data["device"] == after.device
            measured.append(6 * parameters * data["train_tokens"] / data["wall_time_s"])
    assert len(measured) == 3 and sorted(after.rates) == pytest.approx(sorted(measured))
    left = 6 * parameters * sum(c.tokens for c in after.costs)
    assert after.seconds == pytest.approx(left / statistics.median(measured))
    assert "the median of 3 stages recorded as trained here" in grid_estimate_here(full, [runs])
