"""Grids on a tiny model: expansion, stage sharing, kill and resume, failures, status, Ray."""

import json
import re
import shutil

import pytest
import yaml

from factmem.cli import main
from factmem.errors import ConfigError
from factmem.grid import GridError, load_grid, run_grid, run_state, status_table
from factmem.records import RunResults
from factmem.testing import tiny_config_data


def _base(model_dir) -> dict:
    return tiny_config_data(model_dir, name="base", epochs=(2, 2))


def _grid_file(tmp_path, model_dir, axes=None, **extra) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(_base(model_dir)))
    grid = {
        "name": "g",
        "base": str(tmp_path / "base.yaml"),
        "output_dir": str(tmp_path / "runs"),
        "axes": axes
        or {
            "strategy": {
                "No Mixing": {},
                "Replay 0.5": {"stages[1].replay": {"fraction": 0.5}},
            },
            "seed": [0, 1],
        },
    } | extra
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return str(path)


def test_axes_expand_to_named_tagged_runs(tiny_model_dir, tmp_path):
    path = _grid_file(tmp_path, tiny_model_dir, set={"stages[0].size": 6})
    grid = load_grid(path, ["stages[1].size=5"])
    assert [r.name for r in grid.runs] == [
        "no-mixing_seed0", "no-mixing_seed1", "replay-0.5_seed0", "replay-0.5_seed1"
    ]  # fmt: skip
    assert grid.runs[3].tags == {"strategy": "Replay 0.5", "seed": "1"}
    config = grid.runs[3].config
    assert config.seed == 1 and config.stages[1].replay.fraction == 0.5
    assert config.stages[0].size == 6 and config.stages[1].size == 5
    assert config.output_dir == str(tmp_path / "runs" / "g") and config.share_stages
    assert grid.runs[0].config.stages[1].replay is None
    # 4 runs x 2 stages; stage 1 is the same for both strategies of a seed
    assert grid.training_counts() == {
        "runs": 4, "stage_slots": 8, "trainings": 6, "saved": 2, "finished": 0
    }  # fmt: skip
    jobs = {(j.run, j.stage): j for j in grid.jobs()}
    assert jobs[2, 0].owner == (0, 0) and jobs[2, 0].needs == [(0, 0)]
    assert jobs[2, 1].owner == (2, 1) and jobs[2, 1].needs == [(2, 0)]


def test_grid_file_errors_name_the_file_and_the_run(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"grid.yaml:\d+: axis: unknown grid field; a grid has"):
        load_grid(_grid_file(tmp_path, tiny_model_dir, axis={}))
    bad = {"size": {"small": {"stages[0].size": -1}}}
    with pytest.raises(ConfigError, match=r"(?s)grid.yaml \(size=small\).*stages.0.size"):
        load_grid(_grid_file(tmp_path, tiny_model_dir, axes=bad))
    with pytest.raises(ConfigError, match="axes.seed: give a non-empty list"):
        load_grid(_grid_file(tmp_path, tiny_model_dir, axes={"seed": []}))
    same = {"x": {"A B": {}, "a-b": {"seed": 1}}}
    with pytest.raises(ConfigError, match="same name"):
        load_grid(_grid_file(tmp_path, tiny_model_dir, axes=same))
    with pytest.raises(ConfigError, match="no grid file or grid preset"):
        load_grid("no-such-grid")


def _count_trainings(monkeypatch):
    import factmem.pipeline as pipeline

    trained: list[str] = []
    real = pipeline.train_stage

    def counting(model, tokenizer, plan, *a, **k):
        outcome = real(model, tokenizer, plan, *a, **k)
        work_dir = plan.work_dir
        trained.append(str(work_dir.parent.relative_to(work_dir.parents[2])))
        return outcome

    monkeypatch.setattr(pipeline, "train_stage", counting)
    return trained


def _science(grid):
    out = {}
    for run in grid.runs:
        results = RunResults.read(run.run_dir / "results.json")
        out[run.name] = [
            (s.accuracy, [round(h["loss"], 5) for h in s.loss_curve])
            for s in results.stages
        ]
    return out


def test_each_stage_trains_once_and_a_rerun_trains_nothing(tiny_model_dir, tmp_path, monkeypatch):
    grid = load_grid(_grid_file(tmp_path, tiny_model_dir))
    trained = _count_trainings(monkeypatch)
    run_grid(grid, progress=False)
    assert len(trained) == 6 and len(set(trained)) == 6
    assert all(run_state(r)["state"] == "finished" for r in grid.runs)
    assert grid.training_counts()["finished"] == 6
    shared = json.loads((grid.runs[2].run_dir / "stage1" / "stage.json").read_text())
    assert shared["shared_from"].endswith("no-mixing_seed0/stage1")
    trained.clear()
    run_grid(grid, progress=False)
    assert trained == []
    assert "4 finished" in status_table(grid)


def test_killed_grid_resumes_to_the_uninterrupted_results(tiny_model_dir, tmp_path, monkeypatch):
    import factmem.training as training

    reference = load_grid(_grid_file(tmp_path / "ref", tiny_model_dir))
    run_grid(reference, progress=False)

    class Killed(BaseException):  # like SIGINT: not an error the grid would catch
        pass

    calls = {"n": 0}

    def kill_at_the_seventh_checkpoint(self, args, state, control, **kw):
        calls["n"] += 1
        if calls["n"] == 7:  # run 1 finished, run 2's stage 1 done, its stage 2 after epoch 1
            raise Killed

    monkeypatch.setattr(training.StopRuleCallback, "on_save", kill_at_the_seventh_checkpoint,
                        raising=False)  # fmt: skip
    grid = load_grid(_grid_file(tmp_path / "killed", tiny_model_dir))
    with pytest.raises(Killed):
        run_grid(grid, progress=False)
    states = [run_state(r) for r in grid.runs]
    assert [s["state"] for s in states] == ["finished", "running", "pending", "pending"]
    assert states[1]["stages_done"] == 1
    # how far the running stage has come, from the file its process rewrites as it trains
    running = r"stage 2: step 2 of at most \d+, loss [\d.e-]+, [\d.]+ s a step, at most ~\d+ min "
    assert re.fullmatch(running + "left", states[1]["detail"]), states[1]["detail"]
    assert states[1]["detail"] in status_table(grid)
    state_file = grid.runs[1].run_dir / "grid-state.json"
    record = json.loads(state_file.read_text())
    state_file.write_text(json.dumps(record | {"pid": 2**22 + 7}))  # the killed process is gone
    state = run_state(grid.runs[1])
    assert state["state"] == "interrupted"
    assert re.fullmatch(r"stage 2: last heard at step 2 of at most \d+, loss [\d.e-]+; a rerun "
                        r"resumes from step 2", state["detail"]), state["detail"]  # fmt: skip
    monkeypatch.undo()
    trained = _count_trainings(monkeypatch)
    run_grid(grid, progress=False)
    assert _science(grid) == _science(reference)
    # nothing finished before the kill was trained again
    assert sorted(trained) == sorted({"no-mixing_seed1/stage2", "replay-0.5_seed0/stage2",
                                      "replay-0.5_seed1/stage2"})  # fmt: skip


def test_a_failed_run_is_reported_and_the_others_finish(tiny_model_dir, tmp_path):
    broken = {"stages[1].dataset": "local", "stages[1].options": {},
              "stages[1].path": str(tmp_path / "missing.jsonl")}  # fmt: skip
    axes = {"d_b": {"ok": {}, "broken": broken}}
    grid = load_grid(_grid_file(tmp_path, tiny_model_dir, axes=axes))
    with pytest.raises(GridError, match="1 of 2 runs failed: broken"):
        run_grid(grid, progress=False)
    assert run_state(grid.runs[0])["state"] == "finished"
    state = run_state(grid.runs[1])
    assert state["state"] == "failed" and "missing.jsonl" in state["detail"]
    assert "broken" in status_table(grid) and "1 failed" in status_table(grid)


def test_cli_grid_dry_run_and_status(tiny_model_dir, tmp_path, capsys):
    path = _grid_file(tmp_path, tiny_model_dir)
    assert main(["grid", path, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 runs, 8 trained stages, 6 distinct stage trainings needed (sharing saves 2)" in out
    assert "replay-0.5_seed1: strategy=Replay 0.5, seed=1" in out
    assert main(["grid", path, "--status"]) == 0
    assert "4 pending" in capsys.readouterr().out
    assert main(["grid", str(tmp_path / "nope.yaml")]) == 2


def test_ray_backend_gives_the_local_results(tiny_model_dir, tmp_path):
    ray = pytest.importorskip("ray")
    local = load_grid(_grid_file(tmp_path / "local", tiny_model_dir))
    run_grid(local, progress=False)
    remote = load_grid(_grid_file(tmp_path / "ray", tiny_model_dir))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_grid(remote, backend="ray", cpus=1.0)
    finally:
        ray.shutdown()
    assert _science(remote) == _science(local)
    shared = json.loads((remote.runs[2].run_dir / "stage1" / "stage.json").read_text())
    assert shared["shared_from"].endswith("no-mixing_seed0/stage1")
    for run in remote.runs:
        assert (run.run_dir / "run.log").is_file()
    shutil.rmtree(tmp_path / "ray")


def test_profiles_and_the_data_dir_placeholder(tiny_model_dir, tmp_path, monkeypatch):
    axes = {"d_b": {"local": {"stages[1].dataset": "local", "stages[1].options": {},
                              "stages[1].path": "{data_dir}/facts.jsonl"}}}  # fmt: skip
    variables = {"n": 6, "lr": 0.1}
    profiles = {"big": {"n": 7, "lr": 0.5}}
    path = _grid_file(tmp_path, tiny_model_dir, axes=axes, vars=variables, profiles=profiles,
                      set={"stages[0].size": "{n}", "training.learning_rate": "{lr}"})  # fmt: skip
    monkeypatch.delenv("FACTMEM_DATA_DIR", raising=False)
    plain = load_grid(path).runs[0].config
    assert plain.stages[1].path is None  # no data dir: the hub
    assert plain.stages[0].size == 6 and plain.training.learning_rate == 0.1
    grid = load_grid(path, profile="big", data_dir="/data")
    config = grid.runs[0].config
    assert config.stages[1].path == "/data/facts.jsonl"
    assert config.stages[0].size == 7 and config.training.learning_rate == 0.5
    monkeypatch.setenv("FACTMEM_DATA_DIR", "/env")
    assert load_grid(path).runs[0].config.stages[1].path == "/env/facts.jsonl"
    with pytest.raises(ConfigError, match="no profile 'paper'; profiles: big"):
        load_grid(path, profile="paper")
    unknown = _grid_file(tmp_path, tiny_model_dir, set={"seed": "{nope}"})
    with pytest.raises(ConfigError, match="uses {nope}, which is not in the grid's `vars`"):
        load_grid(unknown)
    # a var only profiles set (a point chosen later, as regime-kvr's): no default run
    chosen = _grid_file(tmp_path / "chosen", tiny_model_dir, vars={"n": 6},
                        profiles={"a": {"lr": 0.1}, "b": {"lr": 0.2}},
                        set={"training.learning_rate": "{lr}"})  # fmt: skip
    with pytest.raises(ConfigError, match=r"lr set only by its profiles: choose one with "
                       r"--profile NAME \(a, b\)"):  # fmt: skip
        load_grid(chosen)
    assert load_grid(chosen, profile="b").runs[0].config.training.learning_rate == 0.2


def test_axis_values_set_vars_and_vars_use_vars(tiny_model_dir, tmp_path, monkeypatch):
    """`{d_a}_id` follows the D_A axis; a var built from vars follows --data-dir."""
    monkeypatch.delenv("FACTMEM_DATA_DIR", raising=False)
    axes = {
        "D_A": {"kvr": {"vars": {"d_a": "kvr"}},
                "popqa": {"vars": {"d_a": "popqa", "d_a_path": "{data_dir}/popqa.json"},
                          "stages[0].dataset": "popqa", "stages[0].path": "{d_a_path}"}},
        "D_B": {"ID": {"stages[1].dataset": "{d_a}_id", "stages[1].path": "{d_a_path}"},
                "mixed": {"stages[1].mixing": "{generic}"}},
    }  # fmt: skip
    variables = {"d_a_path": None, "words": 7, "corpus_path": "{data_dir}/c.zip",
                 "generic": {"source": "generic", "corpus": "local", "path": "{corpus_path}",
                             "prefix_words": "{words}"}}  # fmt: skip
    path = _grid_file(tmp_path, tiny_model_dir, axes=axes, vars=variables)
    runs = {r.name: r.config for r in load_grid(path, data_dir="/d").runs}
    assert runs["kvr_id"].stages[1].dataset == "kvr_id" and runs["kvr_id"].stages[1].path is None
    assert runs["popqa_id"].stages[1].dataset == "popqa_id"
    assert runs["popqa_id"].stages[1].path == "/d/popqa.json"
    mixing = runs["popqa_mixed"].stages[1].mixing
    assert (mixing.path, mixing.prefix_words) == ("/d/c.zip", 7)
    assert load_grid(path).runs[3].config.stages[1].mixing.path is None  # no data dir


def test_a_var_built_from_a_var_follows_the_axis_that_sets_it(tiny_model_dir, tmp_path):
    """`random: {words: "{words}"}` under a words axis: each point's mixing has its own word
    count (the grid's default `words` was once filled in before the axes, silently)."""
    axes = {"words": {"10": {"vars": {"words": 10}}, "50": {"vars": {"words": 50}}},
            "strategy": {"mixed": {"stages[1].mixing": "{random}"}}}  # fmt: skip
    variables = {"words": 10, "random": {"source": "random_words", "words": "{words}"}}
    path = _grid_file(tmp_path, tiny_model_dir, axes=axes, vars=variables)
    runs = {r.name: r.config for r in load_grid(path).runs}
    assert runs["words10_mixed"].stages[1].mixing.words == 10
    assert runs["words50_mixed"].stages[1].mixing.words == 50
    assert runs["words10_mixed"].fingerprint(1) != runs["words50_mixed"].fingerprint(1)


def test_every_grid_preset_expands(monkeypatch):
    from pathlib import Path

    monkeypatch.delenv("FACTMEM_DATA_DIR", raising=False)
    # sized otherwise on purpose: the map's axis is the fact count; the GPU check's cell is
    # the paper's count on the embedded model; the strategies run at the map's chosen point
    # (128 facts; GSM8K held at 32 as in the map, or at 128 for LAMA's step count in
    # regime-gsm8k). None of these has a paper profile: the
    # GPU cell is one, and the paper's own cells are cells-*'s --profile paper.
    large = {"regime-map": {32, 128, 512}, "gpu-paper": {2000}, "regime-strategies": {128},
             "regime-extras": {128, 32}, "regime-steps": {128}, "regime-gsm8k": {128},
             "regime-kvr": {128}, "knobs-attribution": {128}, "paper-point": {128}}  # fmt: skip
    no_paper_profile = {"gpu-paper", "regime-strategies", "regime-extras", "regime-steps",
                        "regime-gsm8k", "knobs-attribution", "paper-point"}  # fmt: skip
    # a point the regime map chooses: one profile per candidate, none by default
    candidates = {"regime-kvr": ("lr1e-4", "lr5e-5")}
    presets = sorted((Path(__file__).parents[1] / "configs" / "grids").glob("*.yaml"))
    assert len(presets) >= 7
    for preset in presets:
        for profile in candidates.get(preset.stem, (None, "paper")):
            if profile and preset.stem in no_paper_profile:
                continue
            grid = load_grid(preset.stem, profile=profile, data_dir="/data")
            counts = grid.training_counts()
            assert counts["runs"] >= 2 and counts["trainings"] <= counts["stage_slots"]
            sizes = {s.size for r in grid.runs for s in r.config.stages}
            if preset.stem in large:
                assert sizes == large[preset.stem], preset.name
            elif profile:
                assert sizes == {2000}, preset.name
            else:  # sized for this machine
                assert max(sizes) <= 64, preset.name


def test_grids_under_one_root_share_stages(tiny_model_dir, tmp_path, monkeypatch):
    axes = {"strategy": {"No Mixing": {}}, "seed": [0]}
    first = load_grid(_grid_file(tmp_path, tiny_model_dir, axes=axes))
    run_grid(first, progress=False)
    wider = {"strategy": {"No Mixing": {}, "Replay 0.5": {"stages[1].replay": {"fraction": 0.5}}},
             "seed": [0]}  # fmt: skip
    second = load_grid(_grid_file(tmp_path, tiny_model_dir, axes=wider, name="other"))
    trained = _count_trainings(monkeypatch)
    run_grid(second, progress=False)
    assert trained == ["replay-0.5_seed0/stage2"]  # the rest came from the first grid
    assert _science(second)["no-mixing_seed0"] == _science(first)["no-mixing_seed0"]


def test_a_grid_completes_from_its_archive_on_a_new_machine(tiny_model_dir, tmp_path, monkeypatch,
                                                            capsys):  # fmt: skip
    """Runs archived in one sitting are skipped in the next, even with runs/ gone (a new
    machine); only the runs the archive lacks train, and the report reads the archive."""
    archive = tmp_path / "archive"
    axes = {"strategy": {"No Mixing": {}}, "seed": [0, 1]}
    first = load_grid(_grid_file(tmp_path / "a", tiny_model_dir, axes=axes))
    run_grid(first, progress=False, archive=archive)
    assert sorted(p.name for p in (archive / "g").iterdir()) == ["no-mixing_seed0",
                                                                 "no-mixing_seed1"]
    assert not list(archive.rglob("*.safetensors"))
    expected = _science(first)
    shutil.rmtree(tmp_path / "a" / "runs")  # the machine is gone; the archive is kept
    wider = {"strategy": {"No Mixing": {}, "Replay 0.5": {"stages[1].replay": {"fraction": 0.5}}},
             "seed": [0, 1]}  # fmt: skip
    second_file = _grid_file(tmp_path / "b", tiny_model_dir, axes=wider)
    second = load_grid(second_file)
    assert "2 archived, 2 pending" in status_table(second, archive)
    # a dry run budgets what is left: the archived runs are marked skipped
    capsys.readouterr()
    assert main(["grid", second_file, "--dry-run", "--archive", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "2 of 4 runs already there (skipped), 2 to run" in out
    assert "no-mixing_seed1: strategy=No Mixing, seed=1  [archived: skipped]" in out
    assert "replay-0.5_seed1: strategy=Replay 0.5, seed=1\n" in out
    trained = _count_trainings(monkeypatch)
    run_grid(second, progress=False, archive=archive)
    # the replay runs need stage 1, whose weights were not archived: trained again, once each
    assert sorted(trained) == ["replay-0.5_seed0/stage1", "replay-0.5_seed0/stage2",
                               "replay-0.5_seed1/stage1", "replay-0.5_seed1/stage2"]
    assert "4 archived" in status_table(second, archive)
    capsys.readouterr()
    assert main(["grid", second_file, "--dry-run", "--archive", str(archive), "--gpu", "H100"]) == 0
    assert "nothing left to run: every run is archived" in capsys.readouterr().out
    assert not (second.runs[0].run_dir / "results.json").exists()  # skipped, not rerun
    for name, stages in expected.items():
        archived = RunResults.read(archive / "g" / name / "results.json")
        assert [(s.accuracy, [round(h["loss"], 5) for h in s.loss_curve])
                for s in archived.stages] == stages  # fmt: skip
    assert main(["report", str(archive), "--out", str(tmp_path / "report")]) == 0
    runs_csv = (tmp_path / "report" / "runs.csv").read_text()
    assert runs_csv.count("no-mixing_seed") == 2 and runs_csv.count("replay-0.5_seed") == 2
    # a changed setting is a different run: the archive does not stand in for it
    changed = load_grid(_grid_file(tmp_path / "c", tiny_model_dir, axes=axes),
                        overrides=["training.learning_rate=0.02"])  # fmt: skip
    assert "2 pending" in status_table(changed, archive)


def test_a_grid_name_cannot_leave_the_output_folder(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="name: .*not a plain folder name"):
        load_grid(_grid_file(tmp_path, tiny_model_dir, name="../outside"))
    labels = {"strategy": {"../../up": {}, "a/b": {}}}  # labels become safe run names
    grid = load_grid(_grid_file(tmp_path, tiny_model_dir, axes=labels))
    assert [r.name for r in grid.runs] == [".._.._up", "a_b"]  # one folder each, no '/'
    for run in grid.runs:
        assert run.run_dir.resolve().parent == grid.directory.resolve()


def test_only_runs_a_slice_with_the_full_grid_names(tiny_model_dir, tmp_path):
    path = _grid_file(tmp_path, tiny_model_dir)
    full = [r.name for r in load_grid(path).runs]
    part = load_grid(path, only=["strategy=Replay 0.5", "seed=1"]).runs
    assert [r.name for r in part] == ["replay-0.5_seed1"] and part[0].name in full
    both = load_grid(path, only=["seed=0", "seed=1", "strategy=No Mixing"]).runs
    assert [r.name for r in both] == ["no-mixing_seed0", "no-mixing_seed1"]
    with pytest.raises(ConfigError, match="no axis 'D_B'; axes: strategy, seed"):
        load_grid(path, only=["D_B=lama"])
    with pytest.raises(ConfigError, match="axis 'seed' has no value '7'; values: 0, 1"):
        load_grid(path, only=["seed=7"])


def test_runs_archived_under_another_data_dir_are_recognised_by_their_files_digests(
        tiny_model_dir, tmp_path, monkeypatch):  # fmt: skip
    """Stage fingerprints name the data path: the same files under another --data-dir
    spelling (here a symlink) make other fingerprints. The archive records each data file's
    sha256, so the same bytes count as the same run (skipped, not trained again); other
    bytes, or an archive that records no digests, are refused by name (going on would train
    every run again and replace its archive) until `factmem archive --record-data-from`
    records them."""
    import json

    from factmem.cli import main as factmem

    data = tmp_path / "data"
    data.mkdir()
    (data / "words.txt").write_text("\n".join(f"word{i}" for i in range(50)))
    (tmp_path / "elsewhere").symlink_to(data)
    other = tmp_path / "other"
    other.mkdir()
    (other / "words.txt").write_text("\n".join(f"word{i}" for i in range(51)))
    mixing = {"source": "random_words", "words": 4, "word_list": "{data_dir}/words.txt"}
    axes = {"strategy": {"-/Random": {"stages[1].mixing": mixing}}, "seed": [0]}
    archive = tmp_path / "archive"
    first = load_grid(_grid_file(tmp_path / "a", tiny_model_dir, axes=axes), data_dir=str(data))
    run_grid(first, progress=False, archive=archive)
    marker = archive / first.runs[0].run_dir.parent.name / first.runs[0].name / "archive.json"
    recorded = json.loads(marker.read_text())["data"]
    assert list(recorded) == ["stages[1].mixing.word_list"]
    same = load_grid(_grid_file(tmp_path / "b", tiny_model_dir, axes=axes), data_dir=str(data))
    assert "1 archived" in status_table(same, archive)

    trained = _count_trainings(monkeypatch)
    moved = load_grid(_grid_file(tmp_path / "c", tiny_model_dir, axes=axes),
                      data_dir=str(tmp_path / "elsewhere"))  # fmt: skip
    assert "1 archived" in status_table(moved, archive)
    assert "same files (sha256) under another --data-dir" in status_table(moved, archive)
    run_grid(moved, progress=False, archive=archive)
    assert trained == []

    changed = load_grid(_grid_file(tmp_path / "d", tiny_model_dir, axes=axes),
                        data_dir=str(other))  # fmt: skip
    assert "another --data-dir" in status_table(changed, archive)
    with pytest.raises(ConfigError, match=r"1 run\(s\) are archived .* stages\[1\]\.mixing\."
                       r"word_list = .*/data/words.txt there, .*/other/words.txt here, and the "
                       r"files there and here differ.*'.*/other' -> '.*/data'"):  # fmt: skip
        run_grid(changed, progress=False, archive=archive)
    assert trained == []

    # an archive made before digests were recorded: refused until they are
    marker.write_text(json.dumps({k: v for k, v in json.loads(marker.read_text()).items()
                                  if k != "data"}))  # fmt: skip
    with pytest.raises(ConfigError,
                       match=r"records no digest .*`factmem archive .* --record-data-from DIR`"):
        run_grid(moved, progress=False, archive=archive)
    assert factmem(["archive", str(archive), "--record-data-from", "/"]) == 0
    assert json.loads(marker.read_text())["data"] == recorded
    assert "afterwards" in json.loads(marker.read_text())["data_digested"]
    run_grid(moved, progress=False, archive=archive)
    assert trained == []

    # another setting as well as another path: a different run, not a spelling
    other_run = load_grid(_grid_file(tmp_path / "e", tiny_model_dir, axes=axes),
                          overrides=["training.learning_rate=0.02"],
                          data_dir=str(tmp_path / "elsewhere"))  # fmt: skip
    assert "another --data-dir" not in status_table(other_run, archive)


def test_training_progress_reads_the_stage_progress_file(tmp_path):
    from factmem.grid.status import training_progress
    from factmem.layout import RunFolder

    stage = RunFolder(tmp_path / "run").stage(2)
    assert training_progress(stage, running=True) == ""  # not started: nothing said
    stage.trainer.mkdir(parents=True)
    (stage.trainer / "checkpoint-60").mkdir()
    stage.progress.write_text(json.dumps({"step": 90, "max_steps": 240, "epoch": 7.5,
                                          "loss": 0.4515, "train_time_s": 720.0,
                                          "updated": 1000.0}))  # fmt: skip
    assert training_progress(stage, running=True, now=1010.0) == (
        "stage 2: step 90 of at most 240, loss 0.452, 8.0 s a step, at most ~20 min left")
    assert training_progress(stage, running=True, now=1000.0 + 1800).endswith(
        "min left, last heard 30 min ago")  # a process alive but silent: say so
    assert training_progress(stage, running=False) == (
        "stage 2: last heard at step 90 of at most 240, loss 0.452; a rerun resumes from step 60")
    stage.progress.write_text("{")  # cut short: says nothing rather than fail the table
    assert training_progress(stage, running=True) == ""


def test_regime_kvr_seed0_no_mixing_is_the_maps_point(monkeypatch):
    """The strategies at KVR's chosen point pair with the map's run there: the same stage
    fingerprints, so a runs folder holding the map trains neither stage again."""
    monkeypatch.delenv("FACTMEM_DATA_DIR", raising=False)
    for profile, lr in (("lr1e-4", "0.0001"), ("lr5e-5", "5e-05")):
        run = load_grid("regime-kvr", profile=profile, data_dir="/d",
                        only=["seed=0", "strategy=No Mixing"]).runs[0]  # fmt: skip
        point = load_grid("regime-map", data_dir="/d", only=[
            "facts=128", "pair=kvr-gsm8k128", f"training.learning_rate={lr}"]).runs[0]  # fmt: skip
        assert [run.config.fingerprint(k) for k in (0, 1)] == \
            [point.config.fingerprint(k) for k in (0, 1)], profile  # fmt: skip


def test_jobs_train_stages_side_by_side_with_the_serial_grids_results(tiny_model_dir, tmp_path,
                                                                      monkeypatch, capsys):
    """--jobs 2: stages in two processes at 1 thread each, shared stages waited for, give the
    serial grid's losses bit for bit when it trains at 1 thread too; each run is archived."""
    import torch

    from factmem.grid import parallel

    serial = load_grid(_grid_file(tmp_path / "serial", tiny_model_dir))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_grid(serial, progress=False)
    finally:
        torch.set_num_threads(threads)
    side = load_grid(_grid_file(tmp_path / "side", tiny_model_dir))
    archive = tmp_path / "archive"
    monkeypatch.setattr(parallel, "available_cores", lambda: 2)  # 1 thread a job anywhere
    run_grid(side, progress=False, archive=archive, jobs=2)

    def exact(grid):
        return {run.name: [(s.accuracy, [h["loss"] for h in s.loss_curve])
                           for s in RunResults.read(run.run_dir / "results.json").stages]
                for run in grid.runs}  # fmt: skip

    assert exact(side) == exact(serial)
    shared = json.loads((side.runs[2].run_dir / "stage1" / "stage.json").read_text())
    assert shared["shared_from"].endswith("no-mixing_seed0/stage1")  # waited for, not retrained
    for run in side.runs:
        assert json.loads((run.run_dir / "stage2" / "training.json").read_text())["threads"] == 1
        assert (archive / "g" / run.name / "results.json").is_file()
        assert run_state(run)["state"] == "finished"
    # a run whose stage job ended well while its next stage waits is pending, not interrupted
    waiting = side.runs[0]
    shutil.rmtree(waiting.run_dir / "stage2")
    (waiting.run_dir / "results.json").unlink()
    assert run_state(waiting)["state"] == "pending" and run_state(waiting)["stages_done"] == 1
    assert main(["grid", _grid_file(tmp_path / "side", tiny_model_dir), "--jobs", "0"]) == 2
    assert "--jobs 0: give 1 or more" in capsys.readouterr().err
