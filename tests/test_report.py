"""Reports from run directories written by hand (known numbers): tables, figures, HTML."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from factmem.cli import main
from factmem.config import config_to_yaml, load_config
from factmem.report import collect_runs, paper_table, paper_vs_ours, strategy_label, write_report

KVR = {"key_length": 3, "value_length": 2}


def _config(name, seed, d_b="kvr_id", stage2=None, stage1=None, stages=2, tags=None):
    stage_list = [{"name": "D_A", "dataset": "kvr", "size": 8, "stop": {"epochs": 1},
                   "options": KVR} | (stage1 or {})]  # fmt: skip
    for k in range(1, stages):
        stage_list.append({"name": f"D_{'BC'[k - 1]}", "dataset": d_b, "size": 8,
                           "stop": {"epochs": 1}} | (stage2 or {}))  # fmt: skip
    return load_config({"name": name, "seed": seed, "stages": stage_list, "tags": tags or {}})


def _write_run(root: Path, config, da: list[float], db: float = 1.0) -> None:
    """A finished run as the pipeline leaves it: config.yaml and results.json."""
    run = root / config.name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(config_to_yaml(config))
    names = [config.stage_name(i) for i in range(len(config.stages))]
    stages = []
    for i, value in enumerate(da):
        accuracy = {names[0]: value} | ({names[i]: db} if i else {})
        stages.append({"index": i + 1, "name": names[i], "accuracy": accuracy})
    matrix = [[da[i]] + [db if 0 < j <= i else None for j in range(1, len(da))]
              for i in range(len(da))]  # fmt: skip
    (run / "results.json").write_text(json.dumps({
        "stages": stages, "finished": True, "accuracy_matrix": {"values": matrix}}))  # fmt: skip


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    root = tmp_path / "runs"
    random = {"mixing": {"source": "random_words", "words": 10}}
    for seed, (plain, mixed, replay) in enumerate([(0.5, 0.75, 0.5), (0.25, 1.0, 0.75),
                                                   (0.75, 0.5, 1.0)]):  # fmt: skip
        _write_run(root, _config(f"none-s{seed}", seed), [1.0, plain])
        _write_run(root, _config(f"random-s{seed}", seed, stage1=random), [1.0, mixed])
        _write_run(root, _config(f"replay-s{seed}", seed, stage2={"replay": {"fraction": 0.1}}),
                   [1.0, replay])  # fmt: skip
        _write_run(root, _config(f"gsm-s{seed}", seed, d_b="gsm8k"), [1.0, 0.875])
    for words in (5, 20):  # a length ablation, one seed each
        mixing = {"mixing": {"source": "random_words", "words": words}}
        _write_run(root, _config(f"len{words}", 0, stage1=mixing, tags={"length": str(words)}),
                   [1.0, words / 40])  # fmt: skip
    _write_run(root, _config("three", 0, stages=3), [1.0, 0.5, 0.25])
    unfinished = root / "unfinished"
    unfinished.mkdir()
    (unfinished / "results.json").write_text(json.dumps({"stages": [], "finished": False}))
    return root


def test_strategy_labels_follow_the_paper():
    random = {"mixing": {"source": "random_words"}}
    generic = {"mixing": {"source": "generic"}}
    assert strategy_label(_config("a", 0)) == "No Mixing"
    assert strategy_label(_config("a", 0, stage1=random)) == "Random/-"
    assert strategy_label(_config("a", 0, stage2=generic)) == "-/Generic"
    assert strategy_label(_config("a", 0, stage1=random, stage2=generic)) == "Random/Generic"
    assert strategy_label(_config("a", 0, stage2={"replay": {"fraction": 0.05}})) == "Replay 0.05"
    assert strategy_label(_config("a", 0, tags={"strategy": "Mine"})) == "No Mixing"  # derived
    ewc = {"regularizer": {"method": "ewc", "strength": 1e4}, "weight_average": 0.5}
    assert strategy_label(_config("a", 0, stage2=ewc)) == "EWC 10000 + WiSE 0.5"
    lora = {"lora": {"r": 8}, "mixing": {"source": "generic"}}
    assert strategy_label(_config("a", 0, stage2=lora)) == "LoRA r8 + -/Generic"


def test_seeds_aggregate_into_the_paper_layout(runs_dir):
    runs = collect_runs(runs_dir)
    assert len(runs) == 15  # the unfinished run is left out
    table = paper_table(runs[runs["stages"] == 2])
    row = table.loc[("kvr", "No Mixing")]
    assert row["kvr_id"] == "50.0 ± 25.0" and row["gsm8k"] == "87.5 ± 0.0"
    assert table.loc[("kvr", "Random/-"), "kvr_id"] == "75.0 ± 25.0"
    assert table.loc[("kvr", "Replay 0.1"), "kvr_id"] == "75.0 ± 25.0"
    assert table.loc[("kvr", "Random/- [length=5]"), "kvr_id"] == "12.5 ± 0.0 (n=1)"
    # rows: No Mixing first, then replay, then the rest; columns: factoid D_B first
    assert list(table.index.get_level_values(1))[:2] == ["No Mixing", "Replay 0.1"]
    assert list(table.columns) == ["kvr_id", "gsm8k", "avg factoid", "avg non-factoid"]
    assert row["avg factoid"] == "50.0" and row["avg non-factoid"] == "87.5"


def test_continual_metrics_of_a_hand_built_matrix():
    from factmem.report import continual_metrics

    matrix = [[1.0, None, None], [0.5, 1.0, None], [0.25, 0.75, 1.0]]
    metrics = continual_metrics(matrix)
    assert metrics["avg_final"] == pytest.approx((0.25 + 0.75 + 1.0) / 3)
    assert metrics["bwt"] == pytest.approx(((0.25 - 1.0) + (0.75 - 1.0)) / 2)
    assert metrics["forgetting"] == pytest.approx(((1.0 - 0.25) + (1.0 - 0.75)) / 2)
    rebound = [[0.5, None], [0.75, 1.0]]  # D_A improved in stage 2: negative forgetting
    assert continual_metrics(rebound) == {"avg_final": 0.875, "bwt": 0.25, "forgetting": -0.25}
    unscored = [[1.0, None], [0.5, None]]  # a non-factoid D_B is not scored
    assert continual_metrics(unscored) == {"avg_final": 0.5, "bwt": -0.5, "forgetting": 0.5}


def test_report_writes_tables_figures_and_one_html_page(runs_dir, tmp_path, capsys):
    assert main(["report", str(runs_dir), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    for name in ("report.md", "report.html", "table1.csv", "table1.tex", "cells.csv", "runs.csv"):
        assert (out / name).is_file(), name
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["forgetting.png", "mixing_length.png", "replay.png", "stages.png"]
    assert all((out / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert r"50.0 $\pm$ 25.0" in (out / "table1.tex").read_text()
    summary = (out / "table5.csv").read_text()
    assert "kvr,No Mixing,kvr_id -> kvr_id,1,75.0 ± 0.0,-37.5 ± 0.0,37.5 ± 0.0" in summary
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<table data-table" in page
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_paper_vs_ours_puts_published_cells_beside_ours(runs_dir, tmp_path):
    paper = tmp_path / "paper.yaml"
    paper.write_text(yaml.safe_dump({"tables": [{"id": "T", "model": "m", "cells": [
        {"d_a": "kvr", "d_b": "kvr_id", "strategy": "No Mixing", "value": 20.0},
        {"d_a": "kvr", "d_b": "kvr_id", "strategy": "Random/-", "value": 60.0},
        {"d_a": "kvr", "d_b": "kvr_id", "strategy": "Replay 0.1", "value": 10.0},
    ]}]}))  # fmt: skip
    from factmem.report import load_paper_numbers

    both = paper_vs_ours(collect_runs(runs_dir), load_paper_numbers(paper)).set_index("strategy")
    assert both.loc["Random/-", "ours"] == 75.0 and both.loc["Random/-", "paper"] == 60.0
    assert both.loc["Random/-", "direction vs No Mixing"] == "same"
    assert both.loc["Replay 0.1", "direction vs No Mixing"] == "opposite"
    page = write_report(runs_dir, tmp_path / "with-paper", paper)
    assert "Paper vs ours" in page.read_text()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium not installed")
def test_html_page_renders_every_figure_and_table_in_chromium(runs_dir, tmp_path):
    page = write_report(runs_dir, tmp_path / "out")
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    body = re.search(r"<body([^>]*)>", dom).group(1)
    attrs = dict(re.findall(r'data-([\w-]+)="(\d+)"', body))
    assert attrs == {"figures": "4", "figures-loaded": "4", "tables": "5"}
