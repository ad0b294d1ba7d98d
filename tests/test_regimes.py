"""The same cells under two regimes, side by side (report.regimes): hand-made runs whose
paired changes are known, so each movement (holds, flips, vanishes, appears) is known."""

import json
from pathlib import Path

import pytest
import yaml

from factmem.config import config_to_yaml, load_config
from factmem.layout import RunFolder
from factmem.records import RunResults, StageRecord
from factmem.report import (
    collect_runs,
    load_paper_numbers,
    movement,
    regime_contrast,
    regime_forest_rows,
    write_report,
)

FACTS = 20
GENERIC = {"mixing": {"source": "generic", "corpus": "local", "path": "x.zip"}}
RANDOM = {"mixing": {"source": "random_words", "words": 10}}
# strategy -> (stage 1, stage 2) settings
SETTINGS = {"No Mixing": ({}, {}), "Random/-": (RANDOM, {}), "-/Generic": ({}, GENERIC),
            "-/Random": ({}, RANDOM)}  # fmt: skip
# kept facts per regime: (first regime, the paper-ward one); No Mixing keeps 10 in both
KEPT = {
    "No Mixing": (range(10), range(10)),
    "Random/-": (range(20), range(20)),     # higher, higher: holds
    "-/Generic": (range(3), range(20)),     # lower, higher: flips
    "-/Random": (range(20), range(10)),     # higher, no change: vanishes
}


def _write(root: Path, strategy: str, seed: int, size: int, lr: float, kept) -> None:
    """A finished PopQA -> LAMA run (the paper's cell) whose final predictions keep `kept`."""
    stage1, stage2 = SETTINGS[strategy]
    name = f"{strategy.replace('/', '_').replace(' ', '')}-s{seed}"
    config = load_config({
        "name": name, "seed": seed, "training": {"learning_rate": lr},
        "tags": {"strategy": strategy, "seed": str(seed)},
        "stages": [
            {"name": "D_A", "dataset": "popqa", "size": size, "stop": {"epochs": 1}} | stage1,
            {"name": "D_B", "dataset": "lama", "size": size, "stop": {"epochs": 1}} | stage2],
    })  # fmt: skip
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(config_to_yaml(config))
    kept = set(kept)
    stages = [StageRecord(
        index=i + 1, name=n, dataset=d, size=size, fingerprint=f"{name}-{i}-{size}",
        stop_rule="1 epochs", stop_reason="1 epochs", rule_met=True, epochs=1.0, steps=2,
        train_time_s=1.0, eval_time_s=1.0, train_tokens=100, response_tokens=20,
        tokens_per_s=100.0, mixture={"factoids": size}, shared_from=None,
        accuracy={"D_A": 1.0 if i == 0 else len(kept) / FACTS} | ({"D_B": 1.0} if i else {}),
    ) for i, (n, d) in enumerate([("D_A", "popqa"), ("D_B", "lama")])]  # fmt: skip
    for record in stages:
        RunFolder(run).stage(record.index).path.mkdir()
        record.write(RunFolder(run).stage(record.index).record)
    RunResults.of(name, config.model, seed, ["D_A", "D_B"], stages).write(run / "results.json")
    predictions = run / "stage2" / "predictions" / "D_A.jsonl"
    predictions.parent.mkdir(parents=True)
    predictions.write_text("".join(json.dumps(
        {"prompt": f"seed {seed} fact {i}", "gold": "x", "answers": ["x"], "output": "x",
         "correct": i in kept, "method": "generated"}) + "\n" for i in range(FACTS)))  # fmt: skip


@pytest.fixture
def two_regimes(tmp_path) -> tuple[Path, Path]:
    """Today's point (8 facts, lr 3e-4) and a paper-ward one (16 facts, lr 5e-5), 3 seeds each,
    in two folders as two grids would archive them (same run names, same tags)."""
    today, paperward = tmp_path / "cells", tmp_path / "regime"
    for seed in range(3):
        for strategy, (first, last) in KEPT.items():
            _write(today, strategy, seed, 8, 3e-4, first)
            _write(paperward, strategy, seed, 16, 5e-5, last)
    return today, paperward


def _paper(tmp_path: Path) -> Path:
    paper = tmp_path / "paper.yaml"
    paper.write_text(yaml.safe_dump({"tables": [{"id": "table2", "model": "Llama-3-8B", "cells": [
        {"d_a": "popqa", "d_b": "lama", "strategy": s, "value": v}
        for s, v in {"No Mixing": 7.7, "Random/-": 50.0, "-/Generic": 90.8,
                     "-/Random": 5.2}.items()]}]}))  # fmt: skip
    return paper


def test_movement_compares_the_first_regime_with_the_paper_ward_one():
    assert movement("higher", "higher") == "holds"
    assert movement("lower", "higher") == "flips"
    assert movement("higher", "not established") == "vanishes"
    assert movement("not established", "lower") == "appears"
    assert movement("not established", "not established") == "not established at either"


def test_two_regimes_are_kept_apart_not_pooled_as_seeds(two_regimes):
    runs = collect_runs(list(two_regimes))
    assert len(runs) == 24  # no clash: each run's variant names its regime
    assert set(runs["variant"]) == {"regime=8 facts, lr 0.0003", "regime=16 facts, lr 5e-05"}
    one = collect_runs(two_regimes[0])  # one regime alone: no variant added
    assert set(one["variant"]) == {""}


def test_each_cell_says_how_its_change_moves_with_the_regime(two_regimes, tmp_path):
    runs = collect_runs(list(two_regimes))
    table = regime_contrast(runs, load_paper_numbers(_paper(tmp_path))).reset_index()
    table = table.set_index("strategy")
    first, last = "8 facts, lr 0.0003", "16 facts, lr 5e-05"
    assert table.index[0] == "No Mixing" and set(table.index) == set(KEPT)
    assert table.loc["Random/-", "as the regime moves"] == "holds"
    assert table.loc["-/Generic", "as the regime moves"] == "flips"
    assert table.loc["-/Random", "as the regime moves"] == "vanishes"
    assert table.loc["Random/-", f"Δ [seeds resampled] @ {first}"].startswith("+50.0 [+")
    assert table.loc["-/Generic", f"Δ [seeds resampled] @ {first}"].startswith("-35.0 [")
    assert table.loc["-/Random", f"Δ [seeds resampled] @ {last}"] == "+0.0 [+0.0, +0.0]"
    # against the paper's Δ: -/Generic (+83.1) disagrees at 8 facts and agrees at 16
    assert table.loc["-/Generic", f"vs paper @ {first}"] == "disagrees"
    assert table.loc["-/Generic", f"vs paper @ {last}"] == "agrees"
    assert table.loc["-/Generic", "paper Δ"] == "+83.1"
    assert table.loc["No Mixing", f"Δ [seeds resampled] @ {last}"] == "kept 50.0 ± 0.0"
    assert table.loc["No Mixing", "as the regime moves"] == ""
    one_seed = regime_contrast(runs[runs["seed"] == 0]).reset_index().set_index("strategy")
    assert one_seed.loc["No Mixing", f"Δ [seeds resampled] @ {last}"] == "kept 50.0 (n=1)"
    assert one_seed.loc["Random/-", f"Δ [seeds resampled] @ {last}"].endswith("] (n=1)")
    without_paper = regime_contrast(runs).reset_index().set_index("strategy")
    assert "paper Δ" not in without_paper and f"vs paper @ {first}" not in without_paper
    assert without_paper.loc["-/Generic", "as the regime moves"] == "flips"


def test_a_cell_with_only_one_regime_is_not_contrasted(two_regimes):
    _, paperward = two_regimes
    for seed in range(3):
        (paperward / f"-_Random-s{seed}" / "results.json").unlink()  # not run there
    table = regime_contrast(collect_runs(list(two_regimes))).reset_index()
    assert "-/Random" not in set(table["strategy"]) and "Random/-" in set(table["strategy"])


def test_the_report_of_two_regimes_leads_with_both_beside_the_paper(two_regimes, tmp_path):
    runs = collect_runs(list(two_regimes))
    forest = regime_forest_rows(runs, load_paper_numbers(_paper(tmp_path)))
    from factmem.report import regimes_setting_text

    assert regimes_setting_text(runs[(runs["seed"] == 0) | (runs["facts"] == 8)]).endswith(
        "; 8 facts, lr 0.0003: 3 seed(s); 16 facts, lr 5e-05: 1 seed(s)")
    cells = forest["cell"].tolist()
    assert len(cells) == 6  # three strategies, each at both regimes, next to each other
    for first, last in zip(cells[::2], cells[1::2], strict=True):
        assert first.endswith(" @ 8 facts, lr 0.0003") and last.endswith(" @ 16 facts, lr 5e-05")
        assert first.split(" @ ")[0] == last.split(" @ ")[0]
    for seed in range(3):  # -/Random at one regime only: in the tables, not in the figure
        (two_regimes[0] / f"-_Random-s{seed}").rename(tmp_path / f"elsewhere{seed}")
    one_regime = collect_runs(list(two_regimes))
    forest = regime_forest_rows(one_regime, load_paper_numbers(_paper(tmp_path)))
    assert len(forest) == 4 and not forest["cell"].str.contains("-/Random").any()
    out = tmp_path / "report"
    write_report(list(two_regimes), out, _paper(tmp_path))
    text = (out / "report.md").read_text()
    assert (out / "regime_contrast.csv").is_file() and (out / "paper_vs_ours.png").is_file()
    assert text.index("paper_vs_ours.png") < text.index("## As the regime moves")
    assert "| flips" in text and "| holds" in text and "| vanishes" not in text


def test_a_report_says_the_command_that_rebuilds_it(two_regimes, tmp_path):
    from factmem.errors import FactmemError
    from factmem.report import made_by

    out = tmp_path / "report"
    write_report(list(two_regimes), out, "remix")
    assert made_by(out) == [*map(str, two_regimes), "--out", str(out), "--paper", "remix"]
    with pytest.raises(FactmemError, match=r"nowhere/report.md: no 'Made by"):
        made_by(tmp_path / "nowhere")
