"""End to end on a tiny model: run dir contents, skip-finished, resume after a kill, refusal."""

import json
import logging
import time

import pytest

from factmem.archive import prediction_key
from factmem.cli import main
from factmem.config import load_config
from factmem.errors import ConfigError
from factmem.pipeline import results_table, run_experiment
from factmem.records import RunResults
from factmem.testing import tiny_config_data


def _config(model_dir, tmp_path, **extra):
    return load_config(tiny_config_data(model_dir, tmp_path / "runs") | extra)


def test_run_writes_everything(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, tmp_path)
    results = run_experiment(config, progress=False)
    run = tmp_path / "runs" / "tiny"
    assert results.finished
    assert RunResults.read(run / "results.json") == results
    assert (run / "config.yaml").is_file()
    for k in (1, 2):
        assert (run / f"stage{k}" / "model" / "model.safetensors").is_file()
        assert not (run / f"stage{k}" / "trainer").exists()
        assert len((run / f"stage{k}" / "data.jsonl").read_text().splitlines()) == 8
    preds = (run / "stage2" / "predictions" / "stage1.jsonl").read_text().splitlines()
    assert len(preds) == 8 and {"output", "correct", "gold"} <= set(json.loads(preds[0]))
    matrix = results.accuracy_matrix["values"]
    assert matrix[0][1] is None and all(v is not None for v in matrix[1])
    s2 = results.stages[1]
    assert s2.epochs == 2 and s2.steps == 4 and s2.train_tokens > 0
    assert len(s2.loss_curve) == 4
    table = results_table(results)
    assert "| 2 stage2 | kvr_id (8) |" in table


def test_rerun_skips_finished_stages(tiny_model_dir, tmp_path, monkeypatch):
    config = _config(tiny_model_dir, tmp_path)
    first = run_experiment(config, progress=False)
    import factmem.pipeline as pipeline

    monkeypatch.setattr(pipeline, "train_stage", lambda *a, **k: pytest.fail("retrained"))
    assert run_experiment(config, progress=False) == first


class _Heard(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_resume_after_kill_gives_the_same_results(tiny_model_dir, tmp_path, monkeypatch):
    import factmem.training as training

    reference = run_experiment(_config(tiny_model_dir, tmp_path / "ref"), progress=False)

    class Killed(Exception):
        pass

    def kill_in_stage2(self, args, state, control, **kw):
        if "stage2" in args.output_dir:  # die right after stage 2's first checkpoint
            raise Killed

    monkeypatch.setattr(training.StopRuleCallback, "on_save", kill_in_stage2, raising=False)
    config = _config(tiny_model_dir, tmp_path / "killed")
    with pytest.raises(Killed):
        run_experiment(config, progress=False)
    run = tmp_path / "killed" / "runs" / "tiny"
    assert (run / "stage1" / "stage.json").is_file()
    assert not (run / "stage2" / "stage.json").exists()
    assert any((run / "stage2" / "trainer").glob("checkpoint-*"))
    checkpoint = next((run / "stage2" / "trainer").glob("checkpoint-*"))
    before = json.loads((checkpoint / training.TRAIN_TIME_FILE).read_text())["train_time_s"]
    monkeypatch.undo()
    heard = _Heard()  # transformers' loggers do not propagate to pytest's caplog
    logging.getLogger("transformers").addHandler(heard)
    started = time.perf_counter()
    try:
        resumed = run_experiment(config, progress=False)
    finally:
        logging.getLogger("transformers").removeHandler(heard)
    this_process = time.perf_counter() - started
    # the tiny model's head is tied: the checkpoint holds it as the embedding, and the
    # resume says nothing of "missing keys" (it did on every resume before)
    assert not [m for m in heard.messages if "missing keys" in m]

    def science(results):
        return [(s.accuracy, [h["loss"] for h in s.loss_curve]) for s in results.stages]

    assert science(resumed) == science(reference)
    # the stage's whole training time: the killed process's part counted, not only the last
    assert resumed.stages[1].train_time_s >= round(before, 2) > 0
    assert resumed.stages[1].train_time_s <= before + this_process


def test_a_changed_config_is_refused(tiny_model_dir, tmp_path, monkeypatch):
    run_experiment(_config(tiny_model_dir, tmp_path), progress=False)
    with pytest.raises(ConfigError, match="different config"):
        run_experiment(_config(tiny_model_dir, tmp_path, seed=5), progress=False)
    # also when the earlier run died before finishing its first stage
    import factmem.pipeline as pipeline

    def die(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "train_stage", die)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_config(tiny_model_dir, tmp_path / "b"), progress=False)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="stage 1 of a different config"):
        run_experiment(_config(tiny_model_dir, tmp_path / "b", seed=5), progress=False)


def test_cli_run_and_errors(tiny_model_dir, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(
        f"name: cli\nmodel: {tiny_model_dir}\noutput_dir: {tmp_path / 'runs'}\n"
        "training: {learning_rate: 0.01, batch_size: 4, bf16: false}\n"
        "evaluation: {max_new_tokens: 6}\n"
        "stages:\n  - {dataset: kvr, size: 4, stop: {epochs: 1}}\n"
        "  - {dataset: kvr_id, size: 4, stop: {epochs: 1}}\n"
    )
    assert main(["run", str(config), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| 1 stage1 | kvr (4) |" in out and "| 2 stage2 | kvr_id (4) |" in out
    assert main(["run", str(config), "--set", "stages[0].stop.epochs=0", "--quiet"]) == 2
    assert "stages.0.stop.epochs: Input should be greater than 0" in capsys.readouterr().err
    assert main(["run", "no-such-preset"]) == 2
    assert "no config file or preset" in capsys.readouterr().err


def test_run_with_mixing_and_replay_records_the_mixture(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, tmp_path)
    data = config.model_dump()
    data["stages"][0]["mixing"] = {"source": "random_words", "words": 4, "ratio": 1.0}
    data["stages"][1]["replay"] = {"fraction": 0.25}
    data["stages"][1]["mixing"] = {"source": "random_words", "words": 4, "ratio": 2.0}
    results = run_experiment(load_config(data), progress=False)
    s1, s2 = results.stages
    assert s1.mixture["mixing"]["examples"] == 8 and "replay" not in s1.mixture
    assert s2.mixture["replay"] == {"stage1": 2} and s2.mixture["mixing"]["examples"] == 16
    assert set(s2.mixture["tokens"]) == {"factoid", "replay", "mixing"}
    rows = (tmp_path / "runs" / "tiny" / "stage2" / "data.jsonl").read_text().splitlines()
    kinds = [json.loads(r)["meta"]["kind"] for r in rows]
    assert (kinds.count("factoid"), kinds.count("replay"), kinds.count("mixing")) == (8, 2, 16)
    # scoring covers the factoid sets only
    preds = (tmp_path / "runs" / "tiny" / "stage2" / "predictions" / "stage1.jsonl").read_text()
    assert len(preds.splitlines()) == 8
    # the record names the replayed facts, by the key their predictions are matched by
    replayed = [json.loads(r)["prompt"] for r in rows if json.loads(r)["meta"]["kind"] == "replay"]
    assert s2.mixture["replayed_facts"] == {"stage1": sorted(map(prediction_key, replayed))}
    scored = {json.loads(line)["prompt"] for line in preds.splitlines()}
    assert set(replayed) <= scored


def test_runs_share_a_stage_with_the_same_fingerprint(tiny_model_dir, tmp_path, monkeypatch):
    import factmem.pipeline as pipeline

    first = run_experiment(_config(tiny_model_dir, tmp_path), progress=False)
    trained = []
    real_train = pipeline.train_stage
    monkeypatch.setattr(
        pipeline,
        "train_stage",
        lambda m, t, plan, *a, **k: trained.append(len(plan.examples))
        or real_train(m, t, plan, *a, **k),
    )
    replay = _config(tiny_model_dir, tmp_path, name="replay").model_dump()
    replay["stages"][1]["replay"] = {"fraction": 0.5}
    replay = load_config(replay)
    second = run_experiment(replay, progress=False)
    assert trained == [8 + 4]  # only stage 2 (8 facts + 4 replayed) was trained
    s1, s1_first = second.stages[0], first.stages[0]
    assert s1.shared_from.endswith("tiny/stage1") and s1_first.shared_from is None
    assert s1.accuracy == s1_first.accuracy
    assert s1.fingerprint == s1_first.fingerprint
    assert second.stages[1].fingerprint != first.stages[1].fingerprint
    run = tmp_path / "runs" / "replay" / "stage1"
    same = tmp_path / "runs" / "tiny" / "stage1"
    assert (run / "data.jsonl").read_text() == (same / "data.jsonl").read_text()
    assert (run / "model" / "model.safetensors").read_bytes() == (
        same / "model" / "model.safetensors"
    ).read_bytes()

    trained.clear()
    alone = _config(tiny_model_dir, tmp_path, name="alone", share_stages=False)
    run_experiment(alone, progress=False)
    assert trained == [8, 8]


def test_dropping_overlaps_ties_a_stage_to_the_later_sets():
    def config(drop: bool, size2: int):
        mixing = {"source": "random_words", "overlap": "drop" if drop else "report"}
        return load_config({"stages": [
            {"dataset": "kvr", "size": 4, "stop": {"epochs": 1}, "mixing": mixing},
            {"dataset": "kvr_id", "size": size2, "stop": {"epochs": 1}},
        ]})  # fmt: skip

    assert config(False, 4).fingerprint(0) == config(False, 8).fingerprint(0)
    assert config(True, 4).fingerprint(0) != config(True, 8).fingerprint(0)


def test_familiarity_filter_score_only_stage_and_unscored_nonfactoid_set(
    tiny_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("FACTMEM_CACHE", str(tmp_path / "cache"))  # familiarity verdicts
    popqa = tmp_path / "popqa.jsonl"
    popqa.write_text("".join(
        json.dumps({"question": f"Who made widget {i}?", "possible_answers": f'["Maker {i}"]'})
        + "\n" for i in range(12)))  # fmt: skip
    gsm8k = tmp_path / "gsm8k.jsonl"
    gsm8k.write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    stages = [
        {"dataset": "popqa_id", "path": str(popqa), "size": 3, "few_shot": 2, "train": False,
         "familiar": "any"},
        {"dataset": "popqa", "path": str(popqa), "size": 4, "stop": {"epochs": 2}},
        {"dataset": "gsm8k", "path": str(gsm8k), "stop": {"epochs": 1}},
    ]  # fmt: skip
    config = _config(tiny_model_dir, tmp_path, stages=stages)
    results = run_experiment(config, progress=False)
    first, second, third = results.stages
    assert first.epochs == 0 and first.train_tokens == 0
    assert set(first.accuracy) == {"stage1"}
    assert second.epochs == 2 and set(second.accuracy) == {"stage1", "stage2"}
    assert set(third.accuracy) == {"stage1", "stage2"}  # gsm8k is trained on, not scored
    run = tmp_path / "runs" / "tiny"
    trained = [
        json.loads(line) for line in (run / "stage2" / "data.jsonl").read_text().splitlines()
    ]
    assert all(r["meta"]["familiar"] is False for r in trained)  # popqa: unfamiliar by default
    assert not (run / "stage1" / "model").exists()  # nothing trained, nothing saved
    asked = [
        json.loads(line)
        for line in (run / "stage1" / "predictions" / "stage1.jsonl").read_text().splitlines()
    ]
    assert len(asked) == 3
    with pytest.raises(Exception, match="`familiar` applies to factoid QA sets"):
        _config(tiny_model_dir, tmp_path, stages=[{"dataset": "kvr", "size": 2, "familiar": True,
                                                   "stop": {"epochs": 1}}])  # fmt: skip


def test_atomic_writes_leave_a_normal_file_mode(tmp_path):
    import os

    from factmem.atomic import write_json_atomic

    write_json_atomic(tmp_path / "r.json", {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}


def test_forgetting_curves_score_earlier_sets_without_changing_training(tiny_model_dir, tmp_path):
    plain = run_experiment(_config(tiny_model_dir, tmp_path / "plain"), progress=False)
    config = _config(tiny_model_dir, tmp_path / "curves",
                     evaluation={"max_new_tokens": 8, "curve_every_steps": 1})  # fmt: skip
    curved = run_experiment(config, progress=False)
    for a, b in zip(plain.stages, curved.stages, strict=True):
        assert [h["loss"] for h in a.loss_curve] == [h["loss"] for h in b.loss_curve]
        assert a.accuracy == b.accuracy
    curve = curved.stages[1].curve
    assert [p["step"] for p in curve] == [0, 1, 2, 3, 4]
    # step 0 is stage 1's final model; the last step is the stage's final model
    assert curve[0]["stage1"] == curved.stages[0].accuracy["stage1"]
    assert curve[-1] == {"step": 4, "epoch": 2.0, **curved.stages[1].accuracy}
    assert set(curved.stages[0].curve[0]) == {"step", "epoch", "stage1"}


def test_a_named_attention_kernel_is_part_of_the_fingerprint_auto_is_not():
    """A kernel's rounding moved a seed's retention by ~10 points (issue 43): a stage trained
    under one named kernel is never shared into a run that names another, while `auto` (the
    default, left out like every default) keeps every archived run's fingerprint."""

    def config(**training):
        return load_config({"training": training, "stages": [
            {"dataset": "kvr", "size": 4, "stop": {"epochs": 1}}]})  # fmt: skip

    plain = config().fingerprint(0)
    assert config(attention="auto").fingerprint(0) == plain
    assert config(attention="eager").fingerprint(0) != plain
    assert config(attention="eager").fingerprint(0) != config(attention="sdpa").fingerprint(0)
    assert config(trim_memory=False).fingerprint(0) == plain  # how it runs, not what


def test_an_exact_match_stop_rule_stops_where_scoring_every_fact_would(tiny_model_dir, tmp_path,
                                                                       monkeypatch):  # fmt: skip
    """The epoch check answers `exact match >= threshold` as soon as it is known; the stage
    stops at the same epoch, with the same losses and verdicts, as with every fact scored
    after every epoch (the check before), and says where its value is only a bound."""
    import factmem.pipeline as pipeline
    from factmem.evaluation import accuracy, exact_match

    def stage1(name, **settings):
        data = tiny_config_data(tiny_model_dir, tmp_path / name, size=6, **settings)
        data["stages"] = data["stages"][:1]
        data["stages"][0]["stop"] = {"exact_match_at_least": 0.5, "max_epochs": 100}
        data["stages"][0]["options"] = {"key_length": 2, "value_length": 2}
        data["evaluation"]["batch_size"] = 2
        data["share_stages"] = False  # the second run must train, not link the first's stage
        run_experiment(load_config(data), progress=False)
        stage = tmp_path / name / "tiny" / "stage1"
        return (json.loads((stage / "training.json").read_text()),
                (stage / "predictions" / "stage1.jsonl").read_text())  # fmt: skip

    fast, fast_predictions = stage1("fast", learning_rate=1e-2)

    def every_fact(model, tokenizer, examples, threshold, **kw):
        kw.pop("mode")
        return accuracy(exact_match(model, tokenizer, examples, mode="equal", progress=False,
                                    **kw)), "exact"  # fmt: skip

    monkeypatch.setattr(pipeline, "exact_match_reaches", every_fact)
    full, full_predictions = stage1("full", learning_rate=1e-2)
    assert "shared_from" not in full and full["epoch_checks"] != fast["epoch_checks"]
    assert fast["epochs"] == full["epochs"] > 1 and fast["rule_met"] and full["rule_met"]
    assert [p["loss"] for p in fast["loss_curve"]] == [p["loss"] for p in full["loss_curve"]]
    assert fast_predictions == full_predictions
    kinds = [next(k for k in c if k.startswith("check_exact_match")) for c in fast["epoch_checks"]]
    assert "check_exact_match_at_most" in kinds[:-1]  # an epoch settled before the end
    for check, exact in zip(fast["epoch_checks"], full["epoch_checks"], strict=True):
        value = next(v for k, v in check.items() if k.startswith("check_exact_match"))
        assert (value >= 0.5) == (exact["check_exact_match"] >= 0.5), (check, exact)
