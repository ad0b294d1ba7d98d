"""The run folder's layout: one owner of every path (factmem.layout), and its lookups."""

from __future__ import annotations

import json
import re
from pathlib import Path

from factmem.layout import RunFolder, StageFolder, runs_under

SRC = Path(__file__).resolve().parents[1] / "src" / "factmem"
RUN_FILES = ("config.yaml", "results.json", "run.log", "grid-state.json", "grid.json",
             "fingerprint", "data.jsonl", "model", "adapter", "trainer", "training.json",
             "predictions", "stage.json", "gradients.json", ".locks")  # fmt: skip
# `<path> / "stage.json"`, `<path> / f"stage{k}"`, `glob("*/stage1")`, `f"lens_{set}.json"`:
# a run-folder path built by hand
BUILT_BY_HAND = re.compile(
    r"/\s*f?\"(" + "|".join(re.escape(n) for n in RUN_FILES) + r")\""
    + r"|/\s*f\"stage\{|glob\(f?\"[^\"]*stage|f\"lens_"
)


def test_no_run_folder_path_is_built_outside_the_layout():
    offenders = [
        f"{file.relative_to(SRC)}:{number}: {line.strip()}"
        for file in sorted(SRC.rglob("*.py"))
        if file.name != "layout.py"
        for number, line in enumerate(file.read_text().splitlines(), 1)
        if BUILT_BY_HAND.search(line)
    ]
    assert offenders == []


def test_the_pattern_catches_what_it_is_meant_to():
    assert BUILT_BY_HAND.search('run_dir / "results.json"')
    assert BUILT_BY_HAND.search('stage_dir / f"stage{index + 1}"')
    assert BUILT_BY_HAND.search('folder / "model"')
    assert BUILT_BY_HAND.search('root.glob(f"*/stage{k}")')
    assert not BUILT_BY_HAND.search('raise FactmemError("no results.json here")')
    assert not BUILT_BY_HAND.search('name or f"stage{index + 1}"')  # a set's name, not a path


def test_stage_folders_are_numbered_from_one_and_listed_in_order(tmp_path):
    run = RunFolder.of(tmp_path, "r")
    for number in (10, 2, 1):
        run.stage(number).path.mkdir(parents=True)
    (run.path / "stage-notes").mkdir()  # not a stage folder
    assert [s.number for s in run.stages()] == [1, 2, 10]
    assert run.stage(2).path == tmp_path / "r" / "stage2"
    assert run.stage(2).run == run


def test_finished_by_needs_the_record_and_the_same_fingerprint(tmp_path):
    stage = RunFolder(tmp_path / "r").stage(1)
    stage.path.mkdir(parents=True)
    stage.fingerprint.write_text("abc\n")
    assert stage.recorded_fingerprint() == "abc"
    assert not stage.is_finished_by("abc")  # no stage.json yet
    stage.record.write_text("{}")
    assert stage.is_finished_by("abc")
    assert not stage.is_finished_by("abd")


def test_sharing_looks_at_siblings_then_cousin_grids_never_itself(tmp_path):
    grid = tmp_path / "root" / "grid-a"
    me = RunFolder(grid / "run-b")
    for path in ("grid-a/run-a", "grid-a/run-b", "grid-a/run-c", "grid-z/run-a", "grid-0/x"):
        (tmp_path / "root" / path / "stage1").mkdir(parents=True)
    found = [s.path.relative_to(tmp_path / "root") for s in me.sharing_candidates(1)]
    assert found == [Path("grid-a/run-a/stage1"), Path("grid-a/run-c/stage1"),
                     Path("grid-0/x/stage1"), Path("grid-z/run-a/stage1")]  # fmt: skip
    assert me.lock("f00") == grid / ".locks" / "f00.lock"


def test_origin_follows_a_shared_stage_to_where_it_was_trained(tmp_path):
    trained = StageFolder(tmp_path / "a" / "stage1")
    trained.path.mkdir(parents=True)
    copy = StageFolder(tmp_path / "b" / "stage1")
    copy.path.mkdir(parents=True)
    copy.training.write_text(json.dumps({"shared_from": str(trained.path)}))
    assert copy.origin() == trained
    trained.training.write_text("{}")
    assert trained.origin() == trained


def test_runs_under_finds_results_up_to_the_depth_given(tmp_path):
    for path in ("a", "g/b", "x/g/c", "y/x/g/d"):
        (tmp_path / path).mkdir(parents=True)
        (tmp_path / path / "results.json").write_text("{}")
    assert [r.name for r in runs_under(tmp_path, 3)] == ["a", "b", "c"]
    assert [r.name for r in runs_under(tmp_path, 1)] == ["a"]
