"""Torn or corrupt files are detected and redone, never used (tiny model, files cut by hand)."""

import json
import logging
import shutil

import pytest
from test_pipeline import _config

from factmem.errors import FactmemError
from factmem.integrity import model_problem, stage_problem
from factmem.layout import StageFolder
from factmem.pipeline import run_experiment
from factmem.records import RunResults


def _science(results: dict) -> list:
    return [(s.accuracy, [h["loss"] for h in s.loss_curve]) for s in results.stages]


def _cut_in_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def finished(tiny_model_dir, tmp_path):
    """A finished two-stage run and its results."""
    config = _config(tiny_model_dir, tmp_path)
    return config, run_experiment(config, progress=False), tmp_path / "runs" / "tiny"


def test_a_truncated_model_is_found_and_its_stage_trained_again(finished, caplog):
    config, reference, run = finished
    weights = run / "stage1" / "model" / "model.safetensors"
    _cut_in_half(weights)
    problem = model_problem(run / "stage1" / "model")
    assert problem and "model.safetensors is damaged" in problem
    shutil.rmtree(run / "stage2")
    with caplog.at_level(logging.WARNING):
        again = run_experiment(config, progress=False)
    assert "stage 1: " in caplog.text and "doing the stage again" in caplog.text
    assert _science(again) == _science(reference)  # retrained from scratch, same seed
    assert model_problem(run / "stage1" / "model") is None


def test_a_half_written_record_is_redone(finished, caplog):
    config, reference, run = finished
    _cut_in_half(run / "stage2" / "stage.json")
    problem = stage_problem(StageFolder(run / "stage2"), trained=True)
    assert "stage.json is not valid JSON" in problem
    with caplog.at_level(logging.WARNING):
        again = run_experiment(config, progress=False)
    assert "stage 2: " in caplog.text and "not valid JSON" in caplog.text
    assert _science(again) == _science(reference)


def _half_the_rows(path):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))  # every row left is valid JSON


@pytest.mark.parametrize("damage", ["predictions cut to half its rows", "data.jsonl torn"])
def test_a_stage_file_cut_short_is_found_and_the_stage_redone(finished, caplog, damage):
    config, reference, run = finished
    stage = StageFolder(run / "stage2")
    record = json.loads(stage.record.read_text())
    assert set(record["files"]) == {"data.jsonl", "predictions/stage1.jsonl",
                                    "predictions/stage2.jsonl"}  # fmt: skip
    if damage.startswith("predictions"):
        _half_the_rows(stage.predictions("stage1"))
        expected = "rows; its stage record says"
    else:  # the last line torn mid-row: as many rows, another content
        data = stage.data.read_bytes()
        stage.data.write_bytes(data[:-20] + b"\n")
        expected = "differs from the file its stage record lists"
    assert expected in stage_problem(stage, trained=True)
    with caplog.at_level(logging.WARNING):
        again = run_experiment(config, progress=False)
    assert "stage 2: " in caplog.text and expected in caplog.text
    assert _science(again) == _science(reference)
    assert stage_problem(stage, trained=True) is None


def test_a_damaged_stage_is_not_shared_with_a_sibling_run(finished, tiny_model_dir, tmp_path,
                                                          caplog):  # fmt: skip
    config, reference, run = finished
    _cut_in_half(run / "stage1" / "model" / "model.safetensors")
    sibling = _config(tiny_model_dir, tmp_path, name="sibling")
    with caplog.at_level(logging.WARNING):
        results = run_experiment(sibling, progress=False)
    assert "not reusing" in caplog.text and "damaged" in caplog.text
    assert "shared_from" not in json.loads((tmp_path / "runs" / "sibling" / "stage1" /
                                            "training.json").read_text())  # fmt: skip
    assert _science(results) == _science(reference)


def test_an_empty_results_file_is_named_by_the_report(finished, tmp_path):
    from factmem.report import collect_runs

    _, _, run = finished
    (run / "results.json").write_text("")
    with pytest.raises(FactmemError, match="results.json: not valid JSON"):
        collect_runs(tmp_path / "runs")


@pytest.mark.parametrize("error", ["ENOSPC", "EACCES"])
def test_a_failed_write_leaves_the_run_resumable(tiny_model_dir, tmp_path, monkeypatch, capsys,
                                                 error):  # fmt: skip
    """The disk fills (or a folder turns read-only) while stage 2's results are written."""
    import errno
    import os

    import yaml

    import factmem.atomic as atomic
    from factmem.cli import main

    config = _config(tiny_model_dir, tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    real = os.replace

    def failing(src, dst):
        if str(dst).endswith("stage2/stage.json"):
            raise OSError(getattr(errno, error), os.strerror(getattr(errno, error)), str(dst))
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run the same command again" in err
    assert os.strerror(getattr(errno, error)) in err and "stage2/stage.json" in err
    run = tmp_path / "runs" / "tiny"
    assert not (run / "stage2" / "stage.json").exists()  # nothing looks finished
    assert not list(run.rglob(".stage.json.*"))  # no temporary file left behind
    assert not RunResults.read(run / "results.json").finished
    monkeypatch.setattr(atomic.os, "replace", real)
    assert main(["run", str(path), "--quiet"]) == 0
    assert RunResults.read(run / "results.json").finished


def test_the_same_config_and_seed_give_identical_results(finished, tiny_model_dir, tmp_path):
    """Within one machine: same predictions and losses, bit for bit (issue 14, item 6)."""
    _, reference, run = finished
    twin = _config(tiny_model_dir, tmp_path, name="twin", share_stages=False)
    again = run_experiment(twin, progress=False)
    assert _science(again) == _science(reference)
    for file in sorted(run.glob("stage*/predictions/*.jsonl")):
        assert (tmp_path / "runs" / "twin" / file.relative_to(run)).read_text() == file.read_text()
