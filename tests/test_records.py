"""The typed records read back what the pipeline writes, and say which file is wrong."""

import json
from pathlib import Path

import pytest

from factmem.errors import FactmemError
from factmem.records import RunResults, StageOutcome, StageRecord

ARCHIVE = Path(__file__).parents[1] / "docs" / "results"


def _record(index: int, accuracy: dict) -> StageRecord:
    return StageRecord(
        index=index, name=f"stage{index}", dataset="kvr", size=4, fingerprint="f", stop_rule=None,
        stop_reason="1 epochs", rule_met=True, epochs=1.0, steps=1, train_time_s=0.5,
        eval_time_s=0.1, train_tokens=10, response_tokens=2, tokens_per_s=20.0,
        mixture={"factoids": 4}, shared_from=None, accuracy=accuracy,
    )  # fmt: skip


def test_run_results_round_trip_and_accuracy_matrix(tmp_path):
    stages = [_record(1, {"stage1": 1.0}), _record(2, {"stage1": 0.25, "stage2": 0.75})]
    results = RunResults.of("r", "m", 3, ["stage1", "stage2", "stage3"], stages)
    assert results.accuracy_matrix["values"] == [[1.0, None, None], [0.25, 0.75, None]]
    assert not results.finished  # 2 of 3 stages
    results.write(tmp_path / "results.json")
    assert RunResults.read(tmp_path / "results.json") == results
    assert list(json.loads((tmp_path / "results.json").read_text())) == [
        "name", "model", "seed", "stages", "accuracy_matrix", "finished"]  # fmt: skip


def test_a_shared_stage_names_its_origin_and_an_own_stage_does_not(tmp_path):
    outcome = StageOutcome(epochs=1, steps=1, stop_reason="x", rule_met=True, wall_time_s=1.0,
                           train_tokens=1, response_tokens=1)  # fmt: skip
    outcome.write(tmp_path / "own.json")
    assert "shared_from" not in json.loads((tmp_path / "own.json").read_text())
    outcome.shared_from = "runs/a/stage1"
    outcome.write(tmp_path / "shared.json")
    assert StageOutcome.read(tmp_path / "shared.json").shared_from == "runs/a/stage1"


def test_a_wrong_record_is_named_with_its_file_and_missing_fields(tmp_path):
    path = tmp_path / "stage.json"
    path.write_text(json.dumps({"index": 2, "name": "D_B"}))
    with pytest.raises(FactmemError, match=r"stage\.json: not a StageRecord record; missing .*"
                                           r"'accuracy'"):  # fmt: skip
        StageRecord.read(path)
    path.write_text('{"index": 2, "na')  # torn
    with pytest.raises(FactmemError, match=r"stage\.json: not valid JSON"):
        StageRecord.read(path)
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"name": "r", "model": "m", "seed": 0, "finished": True,
                                   "accuracy_matrix": {}, "stages": [{"index": 1}]}))  # fmt: skip
    with pytest.raises(FactmemError, match=r"results\.json: stages\[0\]: not a StageRecord"):
        RunResults.read(results)


@pytest.mark.skipif(not ARCHIVE.is_dir(), reason="no archive under docs/results")
def test_every_archived_record_reads_back_unchanged():
    """Files written before these classes existed: the same JSON after a read and a write."""
    files = sorted(ARCHIVE.glob("*/*/results.json"))
    assert files
    for file in files:
        assert RunResults.read(file).to_json() == json.loads(file.read_text()), file
        for stage in sorted(file.parent.glob("stage*/stage.json")):
            assert StageRecord.read(stage).to_json() == json.loads(stage.read_text()), stage
        for training in sorted(file.parent.glob("stage*/training.json")):
            assert StageOutcome.read(training).to_json() == json.loads(training.read_text())


def test_prediction_rows_are_read_by_one_reader_that_names_a_bad_line(tmp_path):
    from factmem.records import prediction_key, read_predictions

    file = tmp_path / "D_A.jsonl"
    file.write_text('{"prompt": "Who?", "output": "x", "correct": false}\n'
                    '{"key": "abc", "correct": true}\n\n')  # fmt: skip
    rows = read_predictions(file)
    assert list(rows) == [prediction_key("Who?"), "abc"] and rows["abc"]["correct"] is True
    file.write_text('{"key": "abc", "correct": true}\n{"key": "ab')  # a torn last row
    with pytest.raises(FactmemError, match=r"D_A.jsonl:2: not a JSON row"):
        read_predictions(file)
    file.write_text('{"output": "x", "correct": true}\n')  # no key, no prompt: unpairable
    with pytest.raises(FactmemError, match=r"D_A.jsonl:1: a prediction row needs"):
        read_predictions(file)
