"""Reports from run directories written by hand (known numbers): tables, figures, HTML."""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from factmem.cli import main
from factmem.config import config_to_yaml, load_config
from factmem.errors import FactmemError
from factmem.layout import RunFolder
from factmem.records import RunResults, StageRecord
from factmem.report import (
    collect_runs,
    load_paper_numbers,
    paper_table,
    paper_vs_ours,
    strategy_label,
    write_report,
)

KVR = {"key_length": 3, "value_length": 2}


def _config(name, seed, d_b="kvr_id", stage2=None, stage1=None, stages=2, tags=None):
    stage_list = [{"name": "D_A", "dataset": "kvr", "size": 8, "stop": {"epochs": 1},
                   "options": KVR} | (stage1 or {})]  # fmt: skip
    for k in range(1, stages):
        stage_list.append({"name": f"D_{'BC'[k - 1]}", "dataset": d_b, "size": 8,
                           "stop": {"epochs": 1}} | (stage2 or {}))  # fmt: skip
    return load_config({"name": name, "seed": seed, "stages": stage_list, "tags": tags or {}})


def _write_run(root: Path, config, da: list[float], db: float = 1.0,
               stage1: tuple[str, list[float]] | None = None,
               curve: list[float] | None = None,
               losses: list[tuple[float, float]] | None = None) -> None:  # fmt: skip
    """A finished run as the pipeline leaves it: config.yaml, stage records, results.json;
    `stage1`: its first stage's fingerprint and training losses; `curve`: D_A after each
    epoch of the last stage (from epoch 0); `losses`: its (epoch, training loss) points."""
    run = root / config.name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(config_to_yaml(config))
    names = [config.stage_name(i) for i in range(len(config.stages))]
    stages = []
    for i, value in enumerate(da):  # the pipeline's record type, with made-up training facts
        accuracy = {names[0]: value} | {names[j]: db for j in range(1, i + 1)}
        stages.append(StageRecord(
            index=i + 1, name=names[i], dataset=config.stages[i].dataset, size=8,
            fingerprint=f"{config.name}-{i}", stop_rule="1 epochs", stop_reason="1 epochs",
            rule_met=True, epochs=1.0, steps=2, train_time_s=1.0, eval_time_s=1.0,
            train_tokens=100, response_tokens=20, tokens_per_s=100.0,
            mixture={"factoids": 8}, shared_from=None, accuracy=accuracy,
        ))  # fmt: skip
    if stage1 is not None:
        stages[0].fingerprint = stage1[0]
        stages[0].loss_curve = [{"step": k + 1, "loss": v} for k, v in enumerate(stage1[1])]
    if losses is not None:
        stages[-1].loss_curve = [{"step": k + 1, "epoch": e, "loss": v}
                                 for k, (e, v) in enumerate(losses)]  # fmt: skip
    if curve is not None:
        stages[-1].curve = [{"step": k, "epoch": float(k), names[0]: v}
                            for k, v in enumerate(curve)]  # fmt: skip
    for record in stages:
        RunFolder(run).stage(record.index).path.mkdir()
        record.write(RunFolder(run).stage(record.index).record)
    RunResults.of(config.name, config.model, config.seed, names, stages).write(
        run / "results.json")


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
    RunResults.of("unfinished", "m", 0, ["D_A", "D_B"], []).write(unfinished / "results.json")
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
    assert table.loc[("kvr", "Random/- [length=5]"), "kvr_id"] == "12.5 (n=1)"
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
    for name in ("report.md", "report.html", "da_after_stage2.csv", "da_after_stage2.tex",
                 "cells.csv", "runs.csv"):
        assert (out / name).is_file(), name
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["forgetting.png", "mixing_length.png", "replay.png", "stages.png"]
    assert all((out / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert r"50.0 $\pm$ 25.0" in (out / "da_after_stage2.tex").read_text()
    summary = (out / "summary.csv").read_text()
    assert "kvr,No Mixing,kvr_id -> kvr_id,1,75.0 (n=1),-37.5 (n=1),37.5 (n=1)" in summary
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<table data-table" in page
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no finished runs" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "missing: no such folder" in capsys.readouterr().err


def _write_paired_run(root: Path, name: str, seed: int, kept: list[int], strategy: str,
                     stage2=None, facts: int = 20, reverse: bool = False,
                     stage1: tuple[str, list[float]] | None = None,
                     d_b: str = "kvr_id", losses: list | None = None) -> None:  # fmt: skip
    """A finished KVR run whose final predictions keep exactly the facts `kept` (written in
    reverse order with `reverse`: facts are paired by identity, never by position)."""
    config = _config(name, seed, d_b, stage2=stage2,
                     tags={"strategy": strategy, "seed": str(seed)})  # fmt: skip
    _write_run(root, config, [1.0, len(kept) / facts], stage1=stage1, losses=losses)
    rows = [{"prompt": f"seed {seed} fact {i}", "gold": "x", "answers": ["x"], "output": "x",
             "correct": i in kept, "method": "generated"} for i in range(facts)]  # fmt: skip
    rows = rows[::-1] if reverse else rows
    predictions = root / name / "stage2" / "predictions" / "D_A.jsonl"
    predictions.parent.mkdir(parents=True)
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def paired_dir(tmp_path) -> Path:
    """3 seeds x 20 facts: Random/- keeps all (vs 10), Replay swaps one fact per seed (no
    change), -/Generic (state_union) keeps 5 (vs 10)."""
    root = tmp_path / "paired"
    generic = {"mixing": {"source": "generic", "corpus": "local", "path": "x.zip"}}
    for seed in range(3):
        _write_paired_run(root, f"none-s{seed}", seed, list(range(10)), "No Mixing")
        _write_paired_run(root, f"random-s{seed}", seed, list(range(20)), "Random/-")
        _write_paired_run(root, f"replay-s{seed}", seed, [*range(9), 10], "Replay 0.1",
                          stage2={"replay": {"fraction": 0.1}})  # fmt: skip
        _write_paired_run(root, f"generic-s{seed}", seed, list(range(5)),
                          "-/Generic (state_union)", stage2=generic, reverse=True)  # fmt: skip
    return root


def test_paired_differences_against_no_mixing(paired_dir):
    from factmem.report import paired_rows

    rows = paired_rows(collect_runs(paired_dir)).set_index("strategy")
    random = rows.loc["Random/-"]
    assert (random["seeds"], random["facts"], random["difference"]) == (3, 60, 50.0)
    assert 0 < random["low"] < 50 < random["high"] and random["verdict"] == "higher"
    replay = rows.loc["Replay 0.1"]
    assert replay["difference"] == 0.0 and replay["verdict"] == "not established"
    assert (replay["kept only with it"], replay["kept only without"]) == (3, 3)
    assert rows.loc["-/Generic (state_union)", "verdict"] == "lower"


def test_two_runs_of_one_cell_and_seed_are_refused_not_pooled(paired_dir, capsys):
    _write_paired_run(paired_dir, "random-s0-rerun", 0, list(range(15)), "Random/-")
    with pytest.raises(FactmemError, match=r"random-s0 and .*random-s0-rerun are the same cell"):
        collect_runs(paired_dir)
    assert main(["report", str(paired_dir)]) == 2
    assert "tell them apart with a grid axis" in capsys.readouterr().err


def test_a_run_found_twice_with_other_results_is_named_not_silently_dropped(paired_dir,
                                                                           tmp_path):  # fmt: skip
    """Two folders holding the same run (name and fingerprints): one copy is read. A plain
    copy (runs/ and its archive) is not worth a word; the same config trained twice with
    another outcome (e.g. on another machine) is named on the page, with the one used."""
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(paired_dir / "none-s1", elsewhere / "none-s1")  # a plain copy
    _write_paired_run(elsewhere, "none-s0", 0, list(range(12)), "No Mixing")  # trained again
    runs = collect_runs([paired_dir, elsewhere])
    assert len(runs) == len(collect_runs(paired_dir))
    assert runs.attrs["found_twice"] == [
        f"none-s0 in {elsewhere} (D_A 60.0% after stage 2) set aside for {paired_dir}'s "
        "(D_A 50.0% after stage 2)"]
    page = write_report([paired_dir, elsewhere], tmp_path / "report")
    text = page.with_name("report.md").read_text()
    assert "- **runs found twice, with other results**: none-s0 in " in text
    assert "runs found twice" not in write_report(paired_dir).with_name("report.md").read_text()


def test_a_run_without_a_no_mixing_twin_is_counted_in_the_paired_table(paired_dir):
    from factmem.report import paired_table

    assert "left out" not in " ".join(paired_table(collect_runs(paired_dir)).columns)
    _write_paired_run(paired_dir, "random-s7", 7, list(range(20)), "Random/-")
    table = paired_table(collect_runs(paired_dir))
    left_out = table["left out (no No Mixing twin with the same facts)"]
    assert left_out.loc[("kvr", "kvr_id", "Random/-")] == 1
    assert table.loc[("kvr", "kvr_id", "Random/-"), "seeds"] == 3


def test_pairs_whose_shared_stage_1_was_trained_apart_are_counted(tmp_path):
    """-/Generic shares stage 1 with No Mixing by fingerprint: trained once (the same losses)
    the pair starts from one model; trained again elsewhere (other losses) it does not."""
    from factmem.report import paired_table

    root = tmp_path / "apart"
    generic = {"mixing": {"source": "generic", "corpus": "local", "path": "x.zip"}}
    for seed in range(3):
        one = (f"stage1-s{seed}", [2.0, 1.0, 0.5])
        other = (one[0], [2.0, 1.0, 0.5 + 0.01 * (seed < 2)])  # seeds 0 and 1: trained apart
        _write_paired_run(root, f"none-s{seed}", seed, list(range(10)), "No Mixing", stage1=one)
        _write_paired_run(root, f"generic-s{seed}", seed, list(range(15)), "-/Generic",
                          stage2=generic, stage1=other)  # fmt: skip
        _write_paired_run(root, f"random-s{seed}", seed, list(range(20)), "Random/-",
                          stage1=(f"mixed-s{seed}", [3.0, 2.0]))  # fmt: skip
    table = paired_table(collect_runs(root))
    apart = table["seeds whose shared stage 1 was trained apart"]
    assert apart.loc[("kvr", "kvr_id", "-/Generic")] == 2
    assert apart.loc[("kvr", "kvr_id", "Random/-")] == 0  # its own stage 1: nothing shared
    assert table.loc[("kvr", "kvr_id", "-/Generic"), "seeds"] == 3  # counted, not dropped
    shutil.rmtree(root / "generic-s0"), shutil.rmtree(root / "generic-s1")
    assert "trained apart" not in " ".join(paired_table(collect_runs(root)).columns)


def test_forgetting_curves_are_tabled_per_variant(tmp_path):
    """Two learning rates of No Mixing are two rows (not pooled), each the mean over its
    seeds, with the first epoch at which D_A is 0."""
    from factmem.report import curve_table

    root = tmp_path / "curves"
    fast = [[1.0, 0.5, 0.0, 0.0], [1.0, 0.25, 0.25, 0.0]]  # first mean 0 at epoch 3
    for seed, values in enumerate(fast):
        _write_run(root, _config(f"fast-s{seed}", seed, tags={"lr": "3e-4"}), [1.0, 0.0],
                   curve=values)  # fmt: skip
    _write_run(root, _config("slow-s0", 0, tags={"lr": "1e-4"}), [1.0, 0.5],
               curve=[1.0, 0.75, 0.5, 0.5])  # fmt: skip
    table = curve_table(collect_runs(root)).reset_index().set_index("strategy")
    assert table.loc["No Mixing [lr=3e-4]", ["seeds", "epoch 1", "epoch 2", "epoch 3"]].tolist() \
        == [2, "37.5", "12.5", "0.0"]
    assert table.loc["No Mixing [lr=3e-4]", "first epoch at 0%"] == "3"
    assert table.loc["No Mixing [lr=1e-4]", ["epoch 3", "first epoch at 0%"]].tolist() == \
        ["50.0", "never"]
    page = write_report(root, tmp_path / "report")
    assert "D_A during the last stage" in (page.parent / "report.md").read_text()
    assert (page.parent / "curves.png").is_file()


def test_a_non_factoid_d_b_gets_its_last_epoch_training_loss(tmp_path):
    """GSM8K has no exact match: the table shows the mean loss of the last epoch's steps
    (a mixed stage takes several steps an epoch), mean ± std over seeds."""
    from factmem.report import LOSS_TITLE, loss_table

    root = tmp_path / "loss"
    random = {"mixing": {"source": "random_words", "words": 10}}
    for seed, last in enumerate((0.01, 0.03)):
        _write_run(root, _config(f"none-s{seed}", seed, d_b="gsm8k"), [1.0, 0.0],
                   losses=[(1.0, 2.0), (2.0, last)])  # fmt: skip
    _write_run(root, _config("random-s0", 0, d_b="gsm8k", stage1=random), [1.0, 0.0],
               losses=[(0.5, 3.0), (1.0, 2.0), (1.5, 0.2), (2.0, 0.4)])  # fmt: skip
    table = loss_table(collect_runs(root))
    assert table.index.get_level_values("strategy").tolist() == ["No Mixing", "Random/-"]
    assert table["training loss, last epoch"].tolist() == ["0.02 ± 0.014", "0.3"]
    write_report(root, tmp_path / "report")
    assert LOSS_TITLE in (tmp_path / "report" / "report.md").read_text()
    kvr_only = tmp_path / "kvr"
    _write_run(kvr_only, _config("none-s0", 0), [1.0, 0.5], losses=[(1.0, 0.1)])
    write_report(kvr_only, tmp_path / "report2")
    assert LOSS_TITLE not in (tmp_path / "report2" / "report.md").read_text()


def test_each_seed_is_shown_beside_its_no_mixing_twin(paired_dir):
    from factmem.report import per_seed_table

    table = per_seed_table(collect_runs(paired_dir)).reset_index()
    replay = table[table["strategy"] == "Replay 0.1"]
    assert replay["seed"].tolist() == [0, 1, 2]
    assert replay["No Mixing"].tolist() == ["50.0"] * 3  # 10 of 20 facts
    assert replay["Δ (points)"].tolist() == ["+0.0"] * 3
    assert replay["kept only with / without"].tolist() == ["1 / 1"] * 3  # fact 10 for fact 9
    generic = table[table["strategy"] == "-/Generic (state_union)"]
    assert generic["strategy (%)"].tolist() == ["25.0"] * 3
    assert generic["kept only with / without"].tolist() == ["0 / 5"] * 3


def test_paper_vs_ours_gives_a_verdict_per_cell(paired_dir, tmp_path):
    paper = tmp_path / "paper.yaml"
    paper.write_text(yaml.safe_dump({"tables": [{"id": "T", "model": "Llama-3-8B", "cells": [
        {"d_a": "kvr", "d_b": "kvr_id", "strategy": "No Mixing", "value": 20.0},
        {"d_a": "kvr", "d_b": "kvr_id", "strategy": "Random/-", "value": 60.0},
        {"d_a": "kvr", "d_b": "kvr_id", "strategy": "Replay 0.1", "value": 10.0},
        {"d_a": "kvr", "d_b": "kvr_id", "strategy": "-/Generic", "value": 30.0},
    ]}]}))  # fmt: skip
    from factmem.report import load_paper_numbers

    both = paper_vs_ours(collect_runs(paired_dir), load_paper_numbers(paper)).set_index("strategy")
    assert both.loc["No Mixing", "ours"] == "50.0 ± 0.0"
    assert both.loc["No Mixing", "paper"] == "20.0"
    assert both.loc["Random/-", "paper Δ"] == "+40.0"
    assert both.loc["Random/-", "ours Δ [95% interval]"].startswith("+50.0 [+")
    assert both.loc["Random/-", "verdict"] == "agrees"
    assert both.loc["Replay 0.1", "verdict"] == "not established"
    assert both.loc["-/Generic (state_union)", "verdict"] == "disagrees"  # variant -> -/Generic
    assert set(both["paper model"]) == {"Llama-3-8B"}
    page = write_report(paired_dir, tmp_path / "with-paper", paper)
    text = (tmp_path / "with-paper" / "report.md").read_text()
    assert "Paper vs ours" in page.read_text() and "fact by fact" in text
    assert re.search(r"\| disagrees +\|", text) and re.search(r"\| agrees +\|", text)


def test_the_shipped_paper_numbers_load_by_name():
    from factmem.report import load_paper_numbers, paper_numbers_path

    cells = load_paper_numbers(paper_numbers_path("remix"))
    assert len(cells) > 400 and {"table2", "table4"} <= set(cells["table"])
    entq = cells[(cells["table"] == "table2") & (cells["d_a"] == "popqa")
                 & (cells["d_b"] == "entityquestions") & (cells["strategy"] == "No Mixing")]
    assert entq["value"].tolist() == [57.8]
    with pytest.raises(FactmemError, match="no such file"):
        paper_numbers_path("nonexistent.yaml")


def test_an_archive_gives_the_same_report_as_the_runs(paired_dir, tmp_path):
    from factmem.archive import archive_runs

    made = archive_runs([paired_dir], tmp_path / "archive")
    assert len(made) == 12
    run = tmp_path / "archive" / "paired" / "random-s0"
    assert sorted(p.name for p in run.iterdir()) == [
        "archive.json", "config.yaml", "results.json", "stage1", "stage2"]  # fmt: skip
    row = json.loads((run / "stage2" / "predictions" / "D_A.jsonl").read_text().splitlines()[0])
    assert set(row) == {"key", "correct", "method"}  # no dataset text by default
    assert main(["report", str(paired_dir), "--out", str(tmp_path / "a"), "--paper", "remix"]) == 0
    assert main(["report", str(tmp_path / "archive"), "--out", str(tmp_path / "b"),
                 "--paper", "remix"]) == 0  # fmt: skip
    for name in ("da_after_stage2.csv", "summary.csv", "cells.csv"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text(), name
    # a run found both in runs/ and in the archive counts once
    assert len(collect_runs([paired_dir, tmp_path / "archive"])) == 12


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
    assert attrs == {"figures": "4", "figures-loaded": "4", "tables": "5", "folded": "2"}


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium not installed")
def test_the_page_opens_with_what_was_run_and_the_answer_on_its_first_screen(paired_dir,
                                                                             tmp_path):
    paper = tmp_path / "paper.yaml"
    paper.write_text(yaml.safe_dump({"tables": [{"id": "T", "model": "Llama-3-8B", "cells": [
        {"d_a": "kvr", "d_b": "kvr_id", "strategy": s, "value": v}
        for s, v in {"No Mixing": 20.0, "Random/-": 60.0}.items()]}]}))  # fmt: skip
    page = write_report(paired_dir, tmp_path / "out", paper)
    text = page.read_text()
    assert "<title>factmem report: paired</title>" in text  # the folder's name, not its path
    assert text.index("<dt>model</dt>") < text.index("data-lead") < text.index("data-table")
    assert "<dt>verdict</dt>" in text and "<dt>kept only with / without</dt>" in text
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,800",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    attrs = dict(re.findall(r'data-([\w-]+)="(\d+)"', re.search(r"<body([^>]*)>", dom).group(1)))
    assert attrs["lead-on-first-screen"] == "1"
    assert int(attrs["folded"]) >= 1  # D_B after stage 2 and D_A after stage 1: all 100


def test_tables_keep_their_names_and_stale_ones_are_removed(runs_dir, tmp_path):
    from factmem.report import TABLES

    out = tmp_path / "out"
    out.mkdir()
    (out / "table7.csv").write_text("an old numbered table")
    (out / "replay.csv").write_text("a table this report does not hold")
    (out / "notes.csv").write_text("the user's own file")
    write_report(runs_dir, out)
    stems = {p.stem for p in out.glob("*.csv")} - {"cells", "runs", "notes"}
    assert stems and stems <= set(TABLES.values())  # every table under its registered name
    assert "da_after_stage2" in stems and not (out / "table7.csv").exists()
    assert not (out / "replay.csv").exists() and (out / "notes.csv").is_file()


def test_tables_of_only_100s_are_folded_and_others_are_not():
    from factmem.report import all_hundred

    assert all_hundred(pd.DataFrame({"kvr_id": ["100.0 ± 0.0", "100.0"], "avg": ["100.0", "-"]}))
    assert not all_hundred(pd.DataFrame({"kvr_id": ["100.0 ± 0.0", "96.9 ± 1.2"]}))
    assert not all_hundred(pd.DataFrame({"kvr_id": ["-"]}))


def _versus_paper(runs: Path, tmp_path: Path, tables: dict) -> pd.DataFrame:
    """paper_vs_ours of `runs` against a paper file of KVR -> unseen KVR cells,
    `{table id: (model, {strategy: value})}`, indexed by strategy."""
    from factmem.report import load_paper_numbers

    paper = tmp_path / "paper.yaml"
    paper.write_text(yaml.safe_dump({"tables": [
        {"id": table, "model": model, "cells": [
            {"d_a": "kvr", "d_b": "kvr_id", "strategy": s, "value": v} for s, v in cells.items()]}
        for table, (model, cells) in tables.items()]}))  # fmt: skip
    return paper_vs_ours(collect_runs(runs), load_paper_numbers(paper)).set_index("strategy")


def test_a_replay_row_is_compared_with_the_replay_tables_own_baseline(paired_dir, tmp_path):
    """The paper's Table 4 has no "No Mixing" row: its baseline is "Replay 0.0". A strategy
    whose table has no baseline cell gets no paper change, and says so, not "no change"."""
    both = _versus_paper(paired_dir, tmp_path, {
        "table2": ("Llama-3-8B", {"No Mixing": 20.0}),
        "table4": ("Llama-3-8B", {"Replay 0.0": 26.0, "Replay 0.1": 80.0}),
        "table9": ("Llama-3-8B", {"Random/-": 60.0}),
    })  # fmt: skip
    assert both.loc["Replay 0.1", "paper table"] == "table4"
    assert both.loc["Replay 0.1", "paper Δ"] == "+54.0"  # 80 - 26, Table 4's own baseline
    assert both.loc["Random/-", "paper Δ"] == ""
    assert both.loc["Random/-", "verdict"] == "ours higher; paper Δ unknown"


def test_the_paper_change_is_taken_within_one_table(paired_dir, tmp_path):
    """A cell missing from the main table is taken from another model's table, and its change
    from No Mixing from that same table, never across models."""
    both = _versus_paper(paired_dir, tmp_path, {
        "main": ("Llama-3-8B", {"No Mixing": 20.0}),
        "other": ("Mistral-7B", {"No Mixing": 70.0, "Random/-": 60.0}),
    })  # fmt: skip
    assert both.loc["No Mixing", "paper model"] == "Llama-3-8B"
    assert both.loc["Random/-", "paper model"] == "Mistral-7B"
    assert both.loc["Random/-", "paper Δ"] == "-10.0"  # 60 - 70 (Mistral), not 60 - 20
    assert both.loc["Random/-", "verdict"] == "disagrees"


def _replay_data(paired_dir: Path, replayed: list[int]) -> None:
    """Each seed's Replay 0.1 run replayed the facts `replayed` in stage 2, as the pipeline
    writes it: the stage's data.jsonl, and a record that (made before records named the
    replayed facts) only counts them."""
    for seed in range(3):
        run = RunFolder(paired_dir / f"replay-s{seed}")
        rows = [{"prompt": f"seed {seed} fact {i}", "response": "x", "answers": ["x"],
                 "meta": {"kind": "replay", "replayed_from": "D_A"}} for i in replayed]  # fmt: skip
        run.stage(2).data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        results, record = RunResults.read(run.results), StageRecord.read(run.stage(2).record)
        for stage in (results.stages[1], record):
            stage.mixture["replay"] = {"D_A": len(replayed)}
        results.write(run.results)
        record.write(run.stage(2).record)


def test_replayed_facts_are_shown_apart_from_the_rest(paired_dir, tmp_path):
    """Replay keeps facts 0-8 and 10 of 20 (No Mixing: 0-9) and replayed facts 10 and 11."""
    from factmem.archive import archive_runs
    from factmem.report import replay_table

    _replay_data(paired_dir, [10, 11])
    archive_runs([paired_dir], tmp_path / "archive")
    record = StageRecord.read(
        RunFolder(tmp_path / "archive" / "paired" / "replay-s1").stage(2).record
    )
    assert len(record.mixture["replayed_facts"]["D_A"]) == 2  # named in the archive, as keys
    for source in (paired_dir, tmp_path / "archive"):  # the archive has no data.jsonl
        table = replay_table(collect_runs(source))
        row = table.loc[("kvr", "kvr_id", "Replay 0.1")]
        assert row["seeds"] == 3
        assert row["replayed facts kept"] == "3 / 6 (50.0%)"  # fact 10 of 10 and 11
        assert row["other facts kept"] == "27 / 54 (50.0%)"  # facts 0-8 of the other 18
        assert row["No Mixing, the same other facts"] == "30 / 54 (55.6%)"  # facts 0-9
    assert replay_table(collect_runs(paired_dir)).index.tolist() == [
        ("kvr", "kvr_id", "Replay 0.1")
    ]


def test_no_replay_table_without_named_replayed_facts(paired_dir):
    from factmem.report import replay_table

    assert replay_table(collect_runs(paired_dir)).empty


def test_the_report_opens_with_ours_beside_the_papers_change(paired_dir, tmp_path):
    """The forest plot's rows are the paper-vs-ours cells with both changes: ours with the
    fact-level and seed-level intervals of the paired table, the paper's from its table;
    the page shows it (and our setting) before any table."""
    from factmem.report import FOREST_TITLE, forest_rows, paired_rows, setting_text

    paper = tmp_path / "paper.yaml"
    paper.write_text(yaml.safe_dump({"tables": [{"id": "table2", "model": "Llama-3-8B", "cells": [
        {"d_a": "kvr", "d_b": "kvr_id", "strategy": s, "value": v}
        for s, v in {"No Mixing": 20.0, "Random/-": 60.0, "Replay 0.1": 25.0}.items()]}]}))
    runs = collect_runs(paired_dir)
    versus = paper_vs_ours(runs, load_paper_numbers(paper))
    rows = forest_rows(versus, paired_rows(runs[runs["variant"] == ""])).set_index("cell")
    assert sorted(rows.index) == ["kvr -> kvr_id: Random/-", "kvr -> kvr_id: Replay 0.1"]
    paired = paired_rows(runs).set_index("strategy")
    for cell, strategy, paper_delta in (("kvr -> kvr_id: Random/-", "Random/-", 40.0),
                                        ("kvr -> kvr_id: Replay 0.1", "Replay 0.1", 5.0)):
        assert rows.loc[cell, "paper"] == paper_delta
        for column in ("difference", "low", "high", "seed low", "seed high"):
            assert rows.loc[cell, column] == paired.loc[strategy, column]
    page = write_report(paired_dir, tmp_path / "out", paper=paper).read_text()
    assert (tmp_path / "out" / "paper_vs_ours.png").stat().st_size > 0
    assert page.index(html.escape(FOREST_TITLE)) < page.index("<table")
    assert setting_text(runs) in page and "3 seed(s)" in setting_text(runs)
    assert "ours Δ [95% interval]" in page and "seeds resampled" in page


def test_each_strategy_is_paired_against_a_control_named_by_versus(paired_dir, tmp_path,
                                                                   capsys):  # fmt: skip
    """`--versus 'Replay 0.1'`: Random/- keeps all 20 facts against the control's 10 (facts 0-8
    and 10) in every seed; -/Generic keeps 5, all of which the control keeps too."""
    from factmem.report import CONTROLS_TITLE, TABLES, controls_table

    table = controls_table(collect_runs(paired_dir), ["Replay 0.1"])
    assert set(table.index.get_level_values("strategy")) == {"Random/-", "-/Generic (state_union)"}
    random = table.loc[("kvr", "kvr_id", "Random/-", "Replay 0.1")]
    assert random["Δ vs control (points)"] == "+50.0" and random["verdict"] == "higher"
    assert random["kept only with / without"] == "30 / 0"
    generic = table.loc[("kvr", "kvr_id", "-/Generic (state_union)", "Replay 0.1")]
    assert generic["Δ vs control (points)"] == "-25.0"
    assert generic["kept only with / without"] == "0 / 15"

    out = tmp_path / "report"
    assert main(["report", str(paired_dir), "--out", str(out), "--versus", "Replay 0.1"]) == 0
    page = (out / "report.md").read_text()
    assert f"## {CONTROLS_TITLE}" in page and (out / f"{TABLES[CONTROLS_TITLE]}.csv").is_file()
    from factmem.report import made_by

    assert made_by(out)[-2:] == ["--versus", "Replay 0.1"]  # rebuilds with the same control
    assert main(["report", str(paired_dir), "--out", str(out)]) == 0  # without it: gone
    assert not (out / f"{TABLES[CONTROLS_TITLE]}.csv").is_file()
    assert main(["report", str(paired_dir), "--versus", "Plain 3x steps"]) == 2
    assert "--versus 'Plain 3x steps': no run of that strategy here" in capsys.readouterr().err


def test_a_non_factoid_d_b_is_paired_against_a_factoid_one_as_the_papers_table_1(tmp_path):
    """Same D_A, strategy and seed, two D_B: D_A after GSM8K minus after LAMA, fact by fact,
    beside the paper's difference of the same two cells in one table; a seed that ran only
    one of the two is counted, not paired."""
    from factmem.report import d_b_forest_rows, d_b_table, load_paper_numbers

    root = tmp_path / "runs"
    for seed in range(3):
        _write_paired_run(root, f"lama-s{seed}", seed, list(range(5)), "No Mixing", d_b="lama")
        _write_paired_run(root, f"gsm-s{seed}", seed, list(range(15)), "No Mixing",
                          d_b="gsm8k", losses=[(1.0, 0.5 + seed), (2.0, 0.1 * seed)])  # fmt: skip
        _write_paired_run(root, f"lama-replay-s{seed}", seed, list(range(10)), "Replay 0.1",
                          d_b="lama", stage2={"replay": {"fraction": 0.1}})  # fmt: skip
        _write_paired_run(root, f"gsm-replay-s{seed}", seed, [*range(9), 10], "Replay 0.1",
                          d_b="gsm8k", stage2={"replay": {"fraction": 0.1}},
                          losses=[(2.0, 0.01)])  # fmt: skip
    _write_paired_run(root, "gsm-s7", 7, list(range(20)), "No Mixing", d_b="gsm8k")
    paper = tmp_path / "paper.yaml"
    paper.write_text(yaml.safe_dump({"tables": [
        {"id": "table2", "model": "Llama-3-8B", "cells": [
            {"d_a": "kvr", "d_b": "lama", "strategy": "No Mixing", "value": 10.0},
            {"d_a": "kvr", "d_b": "gsm8k", "strategy": "No Mixing", "value": 4.0}]},
        {"id": "table4", "model": "Llama-3-8B", "cells": [
            {"d_a": "kvr", "d_b": "gsm8k", "strategy": "Replay 0.1", "value": 90.0}]}]}))
    table = d_b_table(collect_runs(root), load_paper_numbers(paper)).reset_index()
    table = table.set_index("strategy")
    plain = table.loc["No Mixing"]
    assert plain["non-factoid - factoid D_B"] == "gsm8k - lama"
    assert (plain["seeds"], plain["facts"], plain["Δ (points)"]) == (3, 60, "+50.0")
    assert plain["kept only after non-factoid / factoid"] == "30 / 0"
    assert plain["ours"] == "higher" and plain["paper Δ"] == "-6.0"  # 4 - 10, table2
    assert plain["verdict"] == "disagrees, but D_B not learned"
    assert plain["left out (a seed without both runs)"] == 1  # seed 7: GSM8K only
    # (0 + 0.1 + 0.2) / 3, not seed 7; learned means < 0.05 (the regime map's rule)
    assert plain["non-factoid D_B's last-epoch loss"] == "0.1 (not learned)"
    replay = table.loc["Replay 0.1"]
    assert replay["Δ (points)"] == "+0.0" and replay["ours"] == "not established"
    assert replay["paper Δ"] == ""  # table4 prints GSM8K's cell, not LAMA's
    assert replay["non-factoid D_B's last-epoch loss"] == "0.01"  # learned
    assert d_b_table(collect_runs(root)).columns.tolist()[-3:] == [
        "ours", "non-factoid D_B's last-epoch loss",
        "left out (a seed without both runs)"]  # without --paper: ours only, no verdict
    forest = d_b_forest_rows(collect_runs(root), load_paper_numbers(paper))
    assert forest["cell"].tolist() == ["kvr: gsm8k - lama D_B, No Mixing"]  # Replay: no paper Δ
    assert (forest["difference"].iloc[0], forest["paper"].iloc[0]) == (50.0, -6.0)
    write_report(root, tmp_path / "out", paper)  # no strategy cell of the paper: the forest
    assert (tmp_path / "out" / "d_b_contrast.csv").is_file()  # is this row alone
    assert (tmp_path / "out" / "paper_vs_ours.png").is_file()
    only_factoid = tmp_path / "factoid"
    _write_paired_run(only_factoid, "lama-s0", 0, [1], "No Mixing", d_b="lama")
    assert d_b_table(collect_runs(only_factoid)).empty
