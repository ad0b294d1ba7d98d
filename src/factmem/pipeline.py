"""Run an experiment: stages in order, each trained once, every earlier set scored after each.

The run folder's files are listed (and their paths built) in layout.py: stage<k>/model,
stage<k>/predictions, stage<k>/stage.json written last, results.json, ...

A rerun of the same config skips finished stages and resumes an interrupted one from its
last trainer checkpoint. A run directory made by a different config is refused, never mixed.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from factmem.atomic import (
    write_dir_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)
from factmem.config import ExperimentConfig, StageConfig, config_to_yaml
from factmem.data.example import Example
from factmem.data.registry import REGISTRY
from factmem.distributed import barrier, is_main
from factmem.errors import ConfigError
from factmem.evaluation import accuracy, exact_match, exact_match_reaches, mean_response_loss
from factmem.fact_scores import score_facts
from factmem.familiarity import (
    few_shot_example,
)
from factmem.integrity import json_problem, model_problem, stage_problem
from factmem.layout import RunFolder, StageFolder
from factmem.markdown import markdown_table
from factmem.methods import StageContext, stage_methods
from factmem.models import load_model, load_tokenizer, resolve_model, save_model
from factmem.records import (
    RunResults,
    StageOutcome,
    StageRecord,
    file_digest,
)
from factmem.stage_data import (  # noqa: F401  (all importable from here, as before)
    BaseModelJudge,
    stage_examples,
    stage_familiar,
    stage_mixture,
    tokens_by_kind,
)
from factmem.training import StagePlan, train_stage

log = logging.getLogger(__name__)


@dataclass
class Stage:
    """What one stage of a run needs, computed once: its settings, its folder, every stage's
    own set (earlier ones are scored and replayed), its fingerprint."""

    config: ExperimentConfig
    index: int  # 0-based position in config.stages; `number` is the 1-based one of logs
    folder: StageFolder
    sets: list[list[Example]]
    fingerprint: str

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def settings(self) -> StageConfig:
        return self.config.stages[self.index]

    @property
    def name(self) -> str:
        return self.config.stage_name(self.index)

    @property
    def examples(self) -> list[Example]:
        """The stage's own set: the stop rules look at these."""
        return self.sets[self.index]


def _check_run_dir(run: RunFolder, fingerprints: list[str]) -> None:
    """Refuse to resume into a directory whose stages (finished or not) came from another config."""
    for number, fingerprint in enumerate(fingerprints, start=1):
        recorded = run.stage(number).recorded_fingerprint()
        if recorded is not None and recorded != fingerprint:
            raise ConfigError(
                f"{run.path} holds stage {number} of a different config (fingerprint "
                f"{recorded} != {fingerprint}); use another `name` / --name, or delete the "
                "directory"
            )


def run_experiment(
    config: ExperimentConfig,
    run_dir: Path | None = None,
    progress: bool = True,
    upto: int | None = None,
) -> RunResults | None:
    """Train and score every stage of `config` (or stages 0..`upto`, for a grid's scheduler);
    returns (and writes) results.json's content; None on ranks > 0 of a multi-process launch."""
    run = RunFolder(Path(run_dir)) if run_dir else RunFolder.of(config.output_dir, config.name)
    fingerprints = [config.fingerprint(i) for i in range(len(config.stages))]  # once per run
    _check_run_dir(run, fingerprints)
    run.path.mkdir(parents=True, exist_ok=True)
    if is_main():
        write_text_atomic(run.config, config_to_yaml(config))
    base_path = resolve_model(config.model)
    tokenizer = load_tokenizer(base_path)
    judge = BaseModelJudge(base_path, tokenizer, config)
    sets = [
        stage_examples(config, i, judge.for_dataset(config.stages[i].dataset))
        for i in range(len(config.stages))
    ]
    judge.model = None  # free it before training
    records: list[StageRecord] = []
    last = len(config.stages) - 1 if upto is None else upto
    for index in range(last + 1):
        stage = Stage(config, index, run.stage(index + 1), sets, fingerprints[index])
        with _stage_lock(run, stage.fingerprint):
            barrier()  # ranks > 0 read what rank 0 wrote for the previous stage
            record = _finished_record(stage)
            if record is None:
                record = _run_stage(stage, _start_model(stage, base_path), tokenizer, progress)
                if is_main():
                    _results(config, records + [record]).write(run.results)
            records.append(record)
    barrier()
    if not is_main():
        return None  # rank 0 scores and writes results.json
    results = _results(config, records)
    results.write(run.results)
    return results


def _start_model(stage: Stage, base_path: str) -> str:
    """The model a stage starts from: the last earlier stage that trained, else the base."""
    trained = [j + 1 for j in range(stage.index) if stage.config.stages[j].train]
    return str(stage.folder.run.stage(trained[-1]).model) if trained else base_path


def _results(config: ExperimentConfig, records: list[StageRecord]) -> RunResults:
    names = [config.stage_name(i) for i in range(len(config.stages))]
    return RunResults.of(config.name, config.model, config.seed, names, records)


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


def _finished_record(stage: Stage) -> StageRecord | None:
    """The stage's record if it finished earlier and its files are whole; a damaged stage
    is cleared so that it is done again."""
    if not stage.folder.record.is_file():
        return None
    problem = stage_problem(stage.folder, stage.settings.train)
    if problem is None:
        log.info("stage %d (%s): finished earlier, skipping", stage.number, stage.name)
        return StageRecord.read(stage.folder.record)
    log.warning("stage %d: %s; doing the stage again", stage.number, problem)
    if is_main():
        stage.folder.forget()
    barrier()
    return None


def _score(model, tokenizer, examples, mode, evaluation, progress: bool):
    """Exact-match predictions with the experiment's evaluation settings."""
    return exact_match(
        model, tokenizer, examples, mode=mode, batch_size=evaluation.batch_size,
        max_new_tokens=evaluation.max_new_tokens, fast_path=evaluation.fast_path,
        tie_margin=evaluation.tie_margin, bf16=evaluation.bf16, progress=progress,
    )  # fmt: skip


def _run_stage(stage: Stage, start_model: str, tokenizer, progress) -> StageRecord:
    """prepare -> train -> score -> record, for a stage not finished earlier."""
    log.info("stage %d (%s): training on %s, %d examples, from %s, stop: %s", stage.number,
             stage.name, stage.settings.dataset, len(stage.examples), start_model,
             stage.settings.stop.describe() if stage.settings.stop else "none (train: false)"
             )  # fmt: skip
    model, outcome = _trained_model(stage, start_model, tokenizer, progress)
    if not is_main():
        return None  # type: ignore[return-value]  # rank 0 scores; the others wait at a barrier
    start = time.perf_counter()
    scores = _score_sets(stage, model, tokenizer, progress)
    record = StageRecord(
        index=stage.number,
        name=stage.name,
        dataset=stage.settings.dataset,
        size=len(stage.examples),
        fingerprint=stage.fingerprint,
        stop_rule=stage.settings.stop.describe() if stage.settings.stop else None,
        stop_reason=outcome.stop_reason,
        rule_met=outcome.rule_met,
        epochs=outcome.epochs,
        steps=outcome.steps,
        train_time_s=round(outcome.wall_time_s, 2),
        eval_time_s=round(time.perf_counter() - start, 2),
        train_tokens=outcome.train_tokens,
        response_tokens=outcome.response_tokens,
        tokens_per_s=round(outcome.train_tokens / max(outcome.wall_time_s, 1e-9), 1),
        mixture=outcome.mixture,
        shared_from=outcome.shared_from,
        accuracy=scores,
        loss_curve=outcome.loss_curve,
        epoch_checks=outcome.epoch_checks,
        curve=[{"step": h["step"], "epoch": h["epoch"], **h["probe"]}
               for h in outcome.probe_curve],  # fmt: skip
        files=_finished_files(stage.folder),
    )
    record.write(stage.folder.record)
    return record


def _finished_files(folder: StageFolder) -> dict[str, dict]:
    """Rows and sha256 of the stage's training set and predictions, for its record: what
    integrity.files_problem checks before the stage is reused."""
    paths = [folder.data, *sorted(folder.predictions_dir.glob("*.jsonl"))]
    return {p.relative_to(folder.path).as_posix(): file_digest(p) for p in paths if p.is_file()}


def _score_sets(stage: Stage, model, tokenizer, progress: bool) -> dict[str, float]:
    """Exact match on every factoid set trained so far; writes each set's predictions."""
    config, scores = stage.config, {}
    for j in range(stage.index + 1):
        set_name, spec = config.stage_name(j), REGISTRY[config.stages[j].dataset]
        if spec.kind != "factoid":
            continue  # non-factoid sets are trained on, not scored by exact match
        asked = stage.sets[j]
        if config.stages[j].few_shot:
            asked = [few_shot_example(e, config.stages[j].few_shot) for e in asked]
        preds = _score(model, tokenizer, asked, spec.match, config.evaluation, progress)
        if config.evaluation.fact_scores:
            score_facts(model, tokenizer, asked, preds, batch_size=config.evaluation.batch_size,
                        bf16=config.evaluation.bf16,
                        max_new_tokens=min(config.evaluation.contains_max_new_tokens,
                                           config.evaluation.max_new_tokens),
                        progress=progress)  # fmt: skip
        scores[set_name] = accuracy(preds)
        write_jsonl_atomic(stage.folder.predictions(set_name), (p.to_json() for p in preds))
        log.info("after stage %d: exact match on %s = %.1f%%", stage.number, set_name,
                 100 * scores[set_name])  # fmt: skip
    return scores


def _trained_model(stage: Stage, start_model: str, tokenizer, progress) -> tuple[Any, StageOutcome]:
    """The stage's trained model: saved earlier (only its scoring was cut short), shared by
    a sibling run with the same fingerprint, or trained now."""
    folder = stage.folder
    if folder.training.is_file() and folder.model.is_dir():
        problem = json_problem(folder.training) or (
            model_problem(folder.model) if stage.settings.train else None
        )
        if problem is None:
            log.info("stage %d: already trained, scoring the saved model", stage.number)
            return load_model(str(folder.model), tokenizer), StageOutcome.read(folder.training)
        log.warning("stage %d: %s; training the stage again", stage.number, problem)
        if is_main():
            folder.forget()
        barrier()
    shared = shared_stage(folder, stage.fingerprint) if stage.config.share_stages else None
    if shared is not None:
        log.info("stage %d: same fingerprint as %s, reusing its model", stage.number, shared.path)
        if is_main():
            folder.take_shared(shared)
        barrier()
        return load_model(str(folder.model), tokenizer), StageOutcome.read(folder.training)
    if is_main():
        write_text_atomic(folder.fingerprint, stage.fingerprint + "\n")
    if not stage.settings.train:
        return _score_only(start_model, tokenizer, stage.examples, folder)
    return _train(stage, start_model, tokenizer, progress)


def _train(stage: Stage, start_model: str, tokenizer, progress) -> tuple[Any, StageOutcome]:
    """Build the stage's training set, hook in its methods, train, save the model."""
    config, settings, folder = stage.config, stage.settings, stage.folder
    evaluation = config.evaluation
    train_set, mixture_stats = stage_mixture(config, stage.index, stage.sets)
    mixture_stats["tokens"] = tokens_by_kind(tokenizer, train_set)
    if is_main():
        write_jsonl_atomic(folder.data, (asdict(e) for e in train_set))
    model = load_model(start_model, tokenizer)
    methods = stage_methods(StageContext(
        stage=settings, tokenizer=tokenizer,
        previous_set=stage.sets[stage.index - 1] if stage.index else [],
        previous_dir=folder.run.stage(stage.index).origin().path, previous_model=start_model,
        adapter_dir=folder.adapter, load_model=lambda path: load_model(path, tokenizer),
        save=is_main(),
    ))  # fmt: skip
    for method in methods:
        method.before_training(model)
    for method in methods:
        model = method.wrap(model)
    plugins = [p for p in (method.penalty(model) for method in methods) if p is not None]
    match = REGISTRY[settings.dataset].match

    def epoch_check(m) -> float | tuple[float, str]:
        if settings.stop.exact_match_at_least is not None:  # answered as soon as it is known
            return exact_match_reaches(
                m, tokenizer, stage.examples, settings.stop.exact_match_at_least, mode=match,
                batch_size=evaluation.batch_size, max_new_tokens=evaluation.max_new_tokens,
                fast_path=evaluation.fast_path, tie_margin=evaluation.tie_margin,
                bf16=evaluation.bf16)  # fmt: skip
        return mean_response_loss(m, tokenizer, stage.examples, batch_size=evaluation.batch_size,
                                  bf16=evaluation.bf16)  # fmt: skip

    # the stage's own rows are kind "factoid" in its data whatever the set (GSM8K too): the
    # log names the set instead
    log.info("stage %d: training on %d examples (%s)", stage.number, len(train_set),
             ", ".join(f"{settings.dataset if k == 'factoid' else k} {v}"
                       for k, v in mixture_stats["tokens"].items()) + " tokens")  # fmt: skip
    plan = StagePlan(train_set, config.stage_training(stage.index), settings.stop,
                     folder.trainer, config.seed, epoch_check=epoch_check,
                     probe=_curve_probe(config, stage.index, stage.sets, tokenizer),
                     probe_every_steps=evaluation.curve_every_steps, plugins=plugins,
                     progress_file=folder.progress)
    outcome = train_stage(model, tokenizer, plan, progress)
    for method in methods:  # e.g. LoRA merges (keeping its adapter), WiSE-FT averages
        model = method.after_training(model)
    outcome.mixture = mixture_stats
    if is_main():
        write_dir_atomic(folder.model, lambda tmp: save_model(model, tokenizer, tmp))
        outcome.write(folder.training)
        shutil.rmtree(folder.trainer, ignore_errors=True)  # only served resumption
    return model, outcome


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


def _score_only(start_model: str, tokenizer, examples: list[Example], folder: StageFolder):
    """A stage with `train: false`: the previous model, nothing trained."""
    outcome = StageOutcome(epochs=0, steps=0, stop_reason="train: false", rule_met=True,
                           wall_time_s=0.0, train_tokens=0, response_tokens=0,
                           mixture={"factoids": 0})  # fmt: skip
    if is_main():
        write_jsonl_atomic(folder.data, (asdict(e) for e in examples))
        outcome.write(folder.training)
    return load_model(start_model, tokenizer), outcome


def shared_stage(stage_dir: StageFolder, fingerprint: str) -> StageFolder | None:
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


def results_table(results: RunResults) -> str:
    """Markdown: one row per finished stage, exact match (%) on every set trained so far."""
    columns = results.accuracy_matrix["columns"]
    stages = {r.name: r for r in results.stages}
    header = (
        ["after stage", "trained on"]
        + [f"EM {c} ({stages[c].dataset})" if c in stages else f"EM {c}" for c in columns]
        + ["epochs", "train s"]
    )
    rows = [
        [f"{record.index} {record.name}", f"{record.dataset} ({record.size})",
         *[f"{100 * record.accuracy[c]:.1f}" if c in record.accuracy else "-" for c in columns],
         f"{record.epochs:.1f}", f"{record.train_time_s:.0f}"]
        for record in results.stages
    ]  # fmt: skip
    return markdown_table(header, rows)
