"""Run an experiment: stages in order, each trained once, every earlier set scored after each.

The run folder's files are listed (and their paths built) in layout.py: stage<k>/model,
stage<k>/predictions, stage<k>/stage.json written last, results.json, ...

A rerun of the same config skips finished stages and resumes an interrupted one from its
last trainer checkpoint. A run directory made by a different config is refused, never mixed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

from filelock import FileLock, Timeout

from factmem.atomic import (
    write_dir_atomic,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)
from factmem.config import ExperimentConfig, config_to_yaml
from factmem.data.example import Example, encode_example
from factmem.data.registry import REGISTRY, Judge, load_examples
from factmem.distributed import barrier, is_main
from factmem.errors import ConfigError
from factmem.evaluation import accuracy, exact_match, mean_response_loss
from factmem.familiarity import FamiliarityJudge, few_shot_example, model_key
from factmem.integrity import json_problem, model_problem, stage_problem
from factmem.layout import RunFolder, StageFolder
from factmem.markdown import markdown_table
from factmem.methods import StageContext, stage_methods
from factmem.mixing import build_mixing, replay_examples
from factmem.models import load_model, load_tokenizer, resolve_model, save_model
from factmem.training import StageOutcome, train_stage

log = logging.getLogger(__name__)


def stage_examples(config: ExperimentConfig, index: int, judge: Judge | None = None
                   ) -> list[Example]:  # fmt: skip
    """Stage `index`'s own set (its familiarity filter judged by the base model)."""
    stage = config.stages[index]
    familiar = stage_familiar(config, index)
    return load_examples(stage.dataset, stage.size, config.seed, stage.path, stage.options,
                         familiar=familiar, judge=judge)  # fmt: skip


def stage_familiar(config: ExperimentConfig, index: int) -> bool | None:
    """The stage's familiarity filter: its setting, else the dataset's default."""
    stage = config.stages[index]
    if stage.familiar == "any":
        return None
    if stage.familiar is None:
        return False if REGISTRY[stage.dataset].unfamiliar_by_default else None
    return stage.familiar


class BaseModelJudge:
    """The familiarity judge of the experiment's base model, loaded on first use."""

    def __init__(self, base_path: str, tokenizer, config: ExperimentConfig):
        self.base_path, self.tokenizer, self.config = base_path, tokenizer, config
        self.judges: dict[str, FamiliarityJudge] = {}
        self.model = None

    def for_dataset(self, dataset: str) -> Judge:
        def judge(examples):
            if self.model is None:
                log.info("judging familiarity with the base model %s", self.base_path)
                self.model = load_model(self.base_path, self.tokenizer)
            mode = REGISTRY[dataset].match
            if mode not in self.judges:
                self.judges[mode] = FamiliarityJudge(
                    self.model, self.tokenizer, model_key(self.base_path), mode=mode,
                    batch_size=self.config.evaluation.batch_size,
                )  # fmt: skip
            return self.judges[mode](examples)

        return judge


def stage_mixture(
    config: ExperimentConfig, index: int, stage_sets: list[list[Example]]
) -> tuple[list[Example], dict]:
    """Stage `index`'s training set: its factoids, replay of earlier sets, REMIX data."""
    stage = config.stages[index]
    factoids = [replace(e, meta={**e.meta, "kind": "factoid"}) for e in stage_sets[index]]
    examples, report = list(factoids), {"factoids": len(factoids)}
    stage_seed = f"{config.seed}-stage{index + 1}"  # stages draw different mixing data
    if stage.replay is not None:
        names = [config.stage_name(j) for j in range(index)]
        replayed, report["replay"] = replay_examples(
            stage_sets[:index], stage.replay.fraction, config.seed, names
        )
        examples += replayed
    if stage.mixing is not None:
        every_factoid = [e for s in stage_sets for e in s]
        mixed, report["mixing"] = build_mixing(
            stage.mixing, len(factoids), stage_seed, config.model, every_factoid
        )
        examples += mixed
    return examples, report


def _check_run_dir(run: RunFolder, config: ExperimentConfig) -> None:
    """Refuse to resume into a directory whose stages (finished or not) came from another config."""
    for index in range(len(config.stages)):
        recorded = run.stage(index + 1).recorded_fingerprint()
        if recorded is not None and recorded != config.fingerprint(index):
            raise ConfigError(
                f"{run.path} holds stage {index + 1} of a different config (fingerprint "
                f"{recorded} != {config.fingerprint(index)}); use another `name` / "
                "--name, or delete the directory"
            )


def run_experiment(
    config: ExperimentConfig,
    run_dir: Path | None = None,
    progress: bool = True,
    upto: int | None = None,
) -> dict:
    """Train and score every stage of `config` (or stages 0..`upto`, for a grid's scheduler);
    returns (and writes) results.json's content."""
    run = RunFolder(Path(run_dir)) if run_dir else RunFolder.of(config.output_dir, config.name)
    _check_run_dir(run, config)
    run.path.mkdir(parents=True, exist_ok=True)
    if is_main():
        write_text_atomic(run.config, config_to_yaml(config))
    base_path = resolve_model(config.model)
    tokenizer = load_tokenizer(base_path)
    judge = BaseModelJudge(base_path, tokenizer, config)
    stage_sets = [
        stage_examples(config, i, judge.for_dataset(config.stages[i].dataset))
        for i in range(len(config.stages))
    ]
    judge.model = None  # free it before training
    records: list[dict] = []
    last = len(config.stages) - 1 if upto is None else upto
    for index in range(last + 1):
        stage_dir = run.stage(index + 1)
        with _stage_lock(run, config.fingerprint(index)):
            barrier()  # ranks > 0 read what rank 0 wrote for the previous stage
            record = _finished_record(config, index, stage_dir)
            if record is not None:
                records.append(record)
                continue
            trained_before = [j for j in range(index) if config.stages[j].train]
            previous = (
                str(run.stage(trained_before[-1] + 1).model) if trained_before
                else base_path
            )  # fmt: skip
            records.append(
                _run_stage(config, index, stage_sets, previous, tokenizer, stage_dir, progress)
            )
            if is_main():
                _write_results(run, config, records)
    barrier()
    if not is_main():
        return {}  # rank 0 scores and writes results.json
    return _write_results(run, config, records)


@contextmanager
def _stage_lock(run: RunFolder, fingerprint: str) -> Iterator[None]:
    """One process at a time works on a stage (by fingerprint, so sibling runs that would
    share it wait too): a second `factmem run` or grid on the same folder waits, then finds
    the stage finished or shareable. An OS file lock, so a killed holder never keeps it.
    Only rank 0 of a multi-process launch locks; the other ranks follow it at barriers."""
    if not is_main():
        yield
        return
    lock = FileLock(run.lock(fingerprint))
    try:
        lock.acquire(timeout=0.5)
    except Timeout:
        log.info("another process is working on this stage (%s); waiting for it", lock.lock_file)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _finished_record(config: ExperimentConfig, index: int, stage_dir: StageFolder
                     ) -> dict | None:  # fmt: skip
    """The stage's record if it finished earlier and its files are whole; a damaged stage
    is cleared so that it is done again."""
    record_file = stage_dir.record
    if not record_file.is_file():
        return None
    problem = stage_problem(stage_dir, config.stages[index].train)
    if problem is None:
        log.info("stage %d (%s): finished earlier, skipping", index + 1, config.stage_name(index))
        return json.loads(record_file.read_text())
    log.warning("stage %d: %s; doing the stage again", index + 1, problem)
    if is_main():
        _forget_stage(stage_dir)
    barrier()
    return None


def _score(model, tokenizer, examples, mode, evaluation, progress: bool):
    """Exact-match predictions with the experiment's evaluation settings."""
    return exact_match(
        model, tokenizer, examples, mode=mode, batch_size=evaluation.batch_size,
        max_new_tokens=evaluation.max_new_tokens, fast_path=evaluation.fast_path,
        tie_margin=evaluation.tie_margin, bf16=evaluation.bf16, progress=progress,
    )  # fmt: skip


def _train(config, index, stage_sets, previous, tokenizer, stage_dir: StageFolder, progress):
    """Train stage `index` (or reuse its saved model if only its evaluation was cut short)."""
    stage, evaluation = config.stages[index], config.evaluation
    examples = stage_sets[index]  # the stage's own factoids: stop rules look at these
    trained_file = stage_dir.training
    if trained_file.is_file() and stage_dir.model.is_dir():
        problem = json_problem(trained_file) or (
            model_problem(stage_dir.model) if stage.train else None
        )
        if problem is None:
            log.info("stage %d: already trained, scoring the saved model", index + 1)
            return load_model(str(stage_dir.model), tokenizer), json.loads(trained_file.read_text())
        log.warning("stage %d: %s; training the stage again", index + 1, problem)
        if is_main():
            _forget_stage(stage_dir)
        barrier()
    shared = _shared_stage(stage_dir, config.fingerprint(index)) if config.share_stages else None
    if shared is not None:
        log.info("stage %d: same fingerprint as %s, reusing its model", index + 1, shared.path)
        if is_main():
            _copy_stage(shared, stage_dir)
        barrier()
        return load_model(str(stage_dir.model), tokenizer), json.loads(trained_file.read_text())
    if is_main():
        write_text_atomic(stage_dir.fingerprint, config.fingerprint(index) + "\n")
    if not stage.train:
        return _score_only(previous, tokenizer, examples, stage_dir)
    train_set, mixture = stage_mixture(config, index, stage_sets)
    mixture["tokens"] = _tokens_by_kind(tokenizer, train_set)
    if is_main():
        write_jsonl_atomic(stage_dir.data, (asdict(e) for e in train_set))
    model = load_model(previous, tokenizer)
    methods = stage_methods(StageContext(
        stage=stage, tokenizer=tokenizer, previous_set=stage_sets[index - 1] if index else [],
        previous_dir=stage_dir.run.stage(index).origin().path, previous_model=previous,
        adapter_dir=stage_dir.adapter, load_model=lambda path: load_model(path, tokenizer),
        save=is_main(),
    ))  # fmt: skip
    for method in methods:
        method.before_training(model)
    for method in methods:
        model = method.wrap(model)
    plugins = [p for p in (method.penalty(model) for method in methods) if p is not None]
    match = REGISTRY[stage.dataset].match

    def epoch_check(m) -> float:
        if stage.stop.exact_match_at_least is not None:
            return accuracy(_score(m, tokenizer, examples, match, evaluation, progress=False))
        return mean_response_loss(m, tokenizer, examples, batch_size=evaluation.batch_size,
                                  bf16=evaluation.bf16)  # fmt: skip

    log.info("stage %d: training on %d examples (%s)", index + 1, len(train_set),
             ", ".join(f"{k} {v}" for k, v in mixture["tokens"].items()) + " tokens")  # fmt: skip
    outcome = train_stage(model, tokenizer, train_set, config.stage_training(index), stage.stop,
                          stage_dir.trainer, config.seed, epoch_check, progress,
                          _curve_probe(config, index, stage_sets, tokenizer),
                          evaluation.curve_every_steps, plugins)  # fmt: skip
    for method in methods:  # e.g. LoRA merges (keeping its adapter), WiSE-FT averages
        model = method.after_training(model)
    outcome_record = asdict(outcome) | {"mixture": mixture}
    if is_main():
        write_dir_atomic(stage_dir.model, lambda tmp: save_model(model, tokenizer, tmp))
        write_json_atomic(trained_file, outcome_record)
        shutil.rmtree(stage_dir.trainer, ignore_errors=True)  # only served resumption
    return model, outcome_record


def _curve_probe(config: ExperimentConfig, index: int, stage_sets: list[list[Example]],
                 tokenizer):  # fmt: skip
    """Exact match on the first `curve_size` facts of every factoid set so far, or None."""
    evaluation = config.evaluation
    if not evaluation.curve_every_steps:
        return None
    sets = {}
    for j in range(index + 1):
        stage, spec = config.stages[j], REGISTRY[config.stages[j].dataset]
        if spec.kind == "factoid":
            examples = stage_sets[j][: evaluation.curve_size]
            if stage.few_shot:
                examples = [few_shot_example(e, stage.few_shot) for e in examples]
            sets[config.stage_name(j)] = (examples, spec.match)

    def probe(model) -> dict[str, float]:
        return {name: accuracy(_score(model, tokenizer, examples, mode, evaluation, False))
                for name, (examples, mode) in sets.items()}  # fmt: skip

    return probe if sets else None


def _score_only(previous: str, tokenizer, examples: list[Example], stage_dir: StageFolder):
    """A stage with `train: false`: the previous model, nothing trained."""
    if not is_main():
        return load_model(previous, tokenizer), {}
    write_jsonl_atomic(stage_dir.data, (asdict(e) for e in examples))
    outcome = StageOutcome(epochs=0, steps=0, stop_reason="train: false", rule_met=True,
                           wall_time_s=0.0, train_tokens=0, response_tokens=0)  # fmt: skip
    record = asdict(outcome) | {"mixture": {"factoids": 0}}
    write_json_atomic(stage_dir.training, record)
    return load_model(previous, tokenizer), record


def _shared_stage(stage_dir: StageFolder, fingerprint: str) -> StageFolder | None:
    """A finished stage with this fingerprint, i.e. the same trained model: of a sibling run
    (same output folder), else of a run in a sibling grid (grids under one root share)."""
    for candidate in stage_dir.run.sharing_candidates(stage_dir.number):
        if (
            candidate.recorded_fingerprint() == fingerprint
            and candidate.training.is_file()
            and candidate.model.is_dir()
        ):
            problem = json_problem(candidate.training) or model_problem(candidate.model)
            if problem is None:
                return candidate
            log.warning("not reusing %s: %s", candidate.path, problem)
    return None


def _forget_stage(stage_dir: StageFolder) -> None:
    """Remove a stage's damaged results (its fingerprint and resumable checkpoints stay).
    The model is removed link by link: a shared stage's files are hard links, and the run
    it was shared from checks its own copy when it next reuses it."""
    for record in (stage_dir.record, stage_dir.training):
        record.unlink(missing_ok=True)
    shutil.rmtree(stage_dir.model, ignore_errors=True)
    shutil.rmtree(stage_dir.predictions_dir, ignore_errors=True)


def _copy_stage(source: StageFolder, stage_dir: StageFolder) -> None:
    """Hard-link (or copy) a finished stage's model and training record into this run."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    def fill(tmp: Path) -> None:
        shutil.copytree(source.model, tmp, dirs_exist_ok=True, copy_function=link_or_copy)

    write_dir_atomic(stage_dir.model, fill)
    shutil.rmtree(stage_dir.trainer, ignore_errors=True)  # an interrupted own attempt
    shutil.copy2(source.data, stage_dir.data)
    record = json.loads(source.training.read_text())
    origin = record.get("shared_from") or str(source.path)  # where it was trained, not the copy
    write_json_atomic(stage_dir.training, record | {"shared_from": origin})
    write_text_atomic(stage_dir.fingerprint, source.fingerprint.read_text())


def _tokens_by_kind(tokenizer, examples: list[Example]) -> dict[str, int]:
    """Tokens per epoch of each kind of example (factoid, replay, mixing)."""
    counts: dict[str, int] = {}
    for e in examples:
        kind = e.meta.get("kind", "factoid")
        counts[kind] = counts.get(kind, 0) + len(encode_example(tokenizer, e)["input_ids"])
    return counts


def _run_stage(config, index, stage_sets, previous, tokenizer, stage_dir: StageFolder,
               progress) -> dict:  # fmt: skip
    stage, examples = config.stages[index], stage_sets[index]
    name = config.stage_name(index)
    log.info("stage %d (%s): training on %s, %d examples, from %s, stop: %s", index + 1, name,
             stage.dataset, len(examples), previous,
             stage.stop.describe() if stage.stop else "none (train: false)")  # fmt: skip
    model, outcome = _train(config, index, stage_sets, previous, tokenizer, stage_dir, progress)
    if not is_main():
        return {}  # rank 0 scores; the others wait at the next barrier
    start = time.perf_counter()
    scores = {}
    for j in range(index + 1):
        set_name, spec = config.stage_name(j), REGISTRY[config.stages[j].dataset]
        if spec.kind != "factoid":
            continue  # non-factoid sets are trained on, not scored by exact match
        asked = stage_sets[j]
        if config.stages[j].few_shot:
            asked = [few_shot_example(e, config.stages[j].few_shot) for e in asked]
        preds = _score(model, tokenizer, asked, spec.match, config.evaluation, progress)
        scores[set_name] = accuracy(preds)
        write_jsonl_atomic(stage_dir.predictions(set_name),
                           (p.to_json() for p in preds))  # fmt: skip
        log.info("after stage %d: exact match on %s = %.1f%%", index + 1, set_name,
                 100 * scores[set_name])  # fmt: skip
    wall = outcome["wall_time_s"]
    record = {
        "index": index + 1,
        "name": name,
        "dataset": stage.dataset,
        "size": len(examples),
        "fingerprint": config.fingerprint(index),
        "stop_rule": stage.stop.describe() if stage.stop else None,
        "stop_reason": outcome["stop_reason"],
        "rule_met": outcome["rule_met"],
        "epochs": outcome["epochs"],
        "steps": outcome["steps"],
        "train_time_s": round(wall, 2),
        "eval_time_s": round(time.perf_counter() - start, 2),
        "train_tokens": outcome["train_tokens"],
        "response_tokens": outcome["response_tokens"],
        "tokens_per_s": round(outcome["train_tokens"] / max(wall, 1e-9), 1),
        "mixture": outcome["mixture"],
        "shared_from": outcome.get("shared_from"),
        "accuracy": scores,
        "loss_curve": outcome["loss_curve"],
        "epoch_checks": outcome["epoch_checks"],
        "curve": [
            {"step": h["step"], "epoch": h["epoch"], **h["probe"]}
            for h in outcome.get("probe_curve", [])
        ],
    }
    write_json_atomic(stage_dir.record, record)
    return record


def _write_results(run: RunFolder, config: ExperimentConfig, records: list[dict]) -> dict:
    names = [config.stage_name(i) for i in range(len(config.stages))]
    matrix = [[r["accuracy"].get(n) for n in names] for r in records]
    results = {
        "name": config.name,
        "model": config.model,
        "seed": config.seed,
        "stages": records,
        "accuracy_matrix": {"rows": "after stage i", "columns": names, "values": matrix},
        "finished": len(records) == len(config.stages),
    }
    write_json_atomic(run.results, results)
    return results


def results_table(results: dict) -> str:
    """Markdown: one row per finished stage, exact match (%) on every set trained so far."""
    columns = results["accuracy_matrix"]["columns"]
    stages = {r["name"]: r for r in results["stages"]}
    header = (
        ["after stage", "trained on"]
        + [f"EM {c} ({stages[c]['dataset']})" if c in stages else f"EM {c}" for c in columns]
        + ["epochs", "train s"]
    )
    rows = [
        [f"{record['index']} {record['name']}", f"{record['dataset']} ({record['size']})",
         *[f"{100 * record['accuracy'][c]:.1f}" if c in record["accuracy"] else "-"
           for c in columns],
         f"{record['epochs']:.1f}", f"{record['train_time_s']:.0f}"]
        for record in results["stages"]
    ]  # fmt: skip
    return markdown_table(header, rows)
