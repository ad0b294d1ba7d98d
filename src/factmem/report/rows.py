"""Finished runs -> one row each (config, results, predictions): what every table reads."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from factmem.archive import fill_replayed_facts
from factmem.config import ExperimentConfig, load_config
from factmem.data.registry import REGISTRY
from factmem.embedded import EMBEDDED
from factmem.errors import FactmemError
from factmem.layout import RunFolder, runs_under
from factmem.mixing import mixing_source
from factmem.records import FACT_STATUSES, RunResults, StageRecord, fact_status, read_predictions
from factmem.regime_map import REGIME_TAG

log = logging.getLogger(__name__)



NOT_STRATEGY_TAGS = {"strategy", "seed", "D_A", "D_B"}  # tags that are not part of a row's label


METRICS = ("avg_final", "bwt", "forgetting")


# the embedded model's config name, as the page should say what it is


def model_titles(text: str) -> str:
    """Model names in `text` (a config's, or several joined) with the embedded models named
    by what they are: `smollm2-135m` -> `SmolLM2-135M-Instruct (dequantised from Q4_1)`."""
    return re.sub("|".join(map(re.escape, EMBEDDED)), lambda m: EMBEDDED[m.group(0)].title, text)


def collect_runs(runs_dirs: Path | list[Path]) -> pd.DataFrame:
    """One row per finished run under the folders (any depth up to 3): runs folders or
    archives (factmem.archive). A run found twice (in runs/ and in an archive: same name and
    stage fingerprints) counts once, from the first folder named. When the two copies differ
    (the same config trained twice, e.g. on two machines) the one set aside is named in
    `.attrs["found_twice"]` and in the log: the report says which one it used."""
    dirs = [runs_dirs] if isinstance(runs_dirs, Path) else list(runs_dirs)
    rows, first, found_twice = [], {}, []
    for runs_dir in dirs:
        if not runs_dir.is_dir():
            raise FactmemError(f"{runs_dir}: no such folder")
        for run in runs_under(runs_dir, 3):
            run_dir, results = run.path, RunResults.read(run.results)
            if not results.finished:
                log.info("skipping %s: not finished", run_dir)
                continue
            identity = (run_dir.name, tuple(r.fingerprint for r in results.stages))
            if identity in first:
                used, used_results = first[identity]
                if _outcome(results) != _outcome(used_results):
                    found_twice.append(f"{run_dir.name} in {run_dir.parent} ({_last_d_a(results)}"
                                       f") set aside for {used.parent}'s "
                                       f"({_last_d_a(used_results)})")  # fmt: skip
                continue
            first[identity] = (run_dir, results)
            config = load_config(run.config)
            rows.append(run_row(run_dir, config, results))
    if not rows:
        where = ", ".join(str(d) for d in dirs)
        raise FactmemError(f"no finished runs (results.json with finished: true) under {where}")
    for line in found_twice:
        log.warning("a run trained twice with other results: %s", line)
    runs = _one_run_per_cell_and_seed(separate_regimes(pd.DataFrame(rows)))
    runs.attrs["found_twice"] = found_twice
    return runs


def _outcome(results: RunResults) -> list:
    """What a run's training and scoring gave, stage by stage: equal for two copies of one
    run, different for two trainings of one config that did not end alike."""
    return [(sorted(s.accuracy.items()), _losses(s)) for s in results.stages]


def _last_d_a(results: RunResults) -> str:
    """`D_A 57.0% after stage 2`: the first set's exact match after the last stage."""
    last = results.stages[-1]
    name, value = next(iter(last.accuracy.items()))
    return f"{name} {100 * value:.1f}% after stage {last.index}"


def regime_text(facts: int | None, learning_rate: float) -> str:
    """A regime as a variant names it: `regime=32 facts, lr 0.0003`."""
    return f"{REGIME_TAG}{facts} facts, lr {learning_rate:g}"


def separate_regimes(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of one cell under two regimes (D_A facts per stage, learning rate) that no tag
    tells apart, e.g. `factmem report docs/results/regime-strategies docs/results/cells-popqa`,
    would be pooled as seeds and paired across regimes: then every run's variant names its
    regime (ending in regime_text), so tables keep regimes apart and report.regimes can set
    them side by side. Runs whose tags already separate them are left as they are."""
    cell = ["d_a", "d_b", "strategy", "variant"]
    regimes_of_a_cell = runs.groupby(cell, sort=False)[["facts", "learning_rate"]].nunique()
    if not (regimes_of_a_cell > 1).any(axis=None):
        return runs
    regimes = [regime_text(f, lr) for f, lr in zip(runs["facts"], runs["learning_rate"],
                                                   strict=True)]  # fmt: skip
    variants = [f"{v}, {r}" if v else r for v, r in zip(runs["variant"], regimes, strict=True)]
    log.info("runs of one cell under several regimes: each run's variant names its regime")
    return runs.assign(variant=variants)


def _one_run_per_cell_and_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """Two different runs of one cell and seed (e.g. a grid and a rerun of it with another
    setting the tags do not name) would be pooled as if they were more seeds, and paired
    with one No Mixing twin at random: refuse rather than print such numbers."""
    cell = ["d_a", "d_b", "strategy", "variant", "seed"]
    clash = runs[runs.duplicated(cell, keep=False)]
    if not clash.empty:
        first = clash.groupby(cell, sort=False)["run"].apply(list).iloc[0]
        raise FactmemError(
            f"{first[0]} and {first[1]} are the same cell and seed "
            f"({', '.join(f'{k}={clash.iloc[0][k]}' for k in cell)}): report their folders "
            "separately, or tell them apart with a grid axis (a tag)"
        )
    return runs


def final_predictions(run_dir: Path, stage: int, set_name: str) -> dict[str, dict]:
    """{fact key: prediction row} of set `set_name` scored after stage `stage` (1-based)."""
    file = RunFolder(run_dir).stage(stage).predictions(set_name)
    return read_predictions(file) if file.is_file() else {}


def status_counts(rows: dict[str, dict]) -> dict[str, int] | None:
    """How many facts are kept / hidden / lost (records.fact_status); None for runs scored
    without fact scores."""
    statuses = [fact_status(row) for row in rows.values()]
    if not statuses or None in statuses:
        return None
    return {status: statuses.count(status) for status in FACT_STATUSES}


def run_row(run_dir: Path, config: ExperimentConfig, results: RunResults) -> dict:
    """What the tables need of one run: its cell (D_A, strategy, D_B) and D_A's accuracies."""
    first = config.stage_name(0)
    later = [s.dataset for s in config.stages[1:]]
    da_by_stage = [r.accuracy.get(first) for r in results.stages]
    last = results.stages[-1].accuracy
    mixing = [s.mixing for s in config.stages if s.mixing is not None]
    replay = [s.replay.fraction for s in config.stages if s.replay is not None]
    variant = ", ".join(
        f"{k}={v}" for k, v in config.tags.items()
        if k not in NOT_STRATEGY_TAGS and not k.endswith("dataset")
    )  # fmt: skip
    matrix = results.accuracy_matrix.get("values")
    metrics = continual_metrics(matrix) if matrix else dict.fromkeys(METRICS)
    curve = [(p["epoch"], p[first]) for p in results.stages[-1].curve if first in p]
    final = final_predictions(run_dir, len(results.stages), first)
    return {
        "run": str(run_dir),
        "seed": config.seed,
        "model": config.model,
        "facts": config.stages[0].size,
        "learning_rate": config.stage_training(len(config.stages) - 1).learning_rate,
        "d_a": config.stages[0].dataset,
        "d_b": " -> ".join(later) if later else "-",
        "db_size": config.stages[-1].size if later else None,
        "stages": len(config.stages),
        "strategy": config.tags.get("strategy") or strategy_label(config),
        "variant": variant,
        "da_by_stage": da_by_stage,
        "steps_by_stage": [r.steps for r in results.stages],
        "da_first": da_by_stage[0],
        "da_final": da_by_stage[-1],
        "db_final": last.get(config.stage_name(len(config.stages) - 1)) if later else None,
        "ratio": mixing[0].ratio if mixing else None,
        "words": mixing_source(mixing[0]).ablated_length(mixing[0]) if mixing else None,
        "replay": replay[0] if replay else None,
        "curve": curve,
        "last_loss": _last_loss(results.stages[-1].loss_curve),
        "earlier_stages": earlier_stages(results),
        "da_verdicts": {k: bool(row["correct"]) for k, row in final.items()},
        "da_status": status_counts(final),
        "da_replayed": sorted({
            key for r in results.stages
            for key in fill_replayed_facts(r.mixture, RunFolder(run_dir).stage(r.index))
            .get("replayed_facts", {}).get(first, [])
        }),  # fmt: skip
        **metrics,
    }


def _last_loss(loss_curve: list[dict]) -> float | None:
    """Mean training loss over the steps of the stage's last epoch (a mixed or replay stage
    takes several steps an epoch, each on a part of the mixture)."""
    points = [p for p in loss_curve if "loss" in p and "epoch" in p]
    if not points:
        return None
    last = [p["loss"] for p in points if p["epoch"] > points[-1]["epoch"] - 1 + 1e-6]
    return sum(last) / len(last)


def earlier_stages(results: RunResults) -> list[tuple[str, tuple[float, ...]]]:
    """(fingerprint, training losses) of every stage before the last: what tells whether two
    runs of a pair start their last stage from one model."""
    return [(r.fingerprint, _losses(r)) for r in results.stages[:-1]]


def _losses(stage: StageRecord) -> tuple[float, ...]:
    """A stage's training losses, step by step: equal only for one training, not two."""
    return tuple(p["loss"] for p in stage.loss_curve if "loss" in p)


def trained_apart(ours: list, twin: list) -> bool:
    """True when a stage the two runs share by fingerprint was trained twice with different
    losses (on two machines: the same config and seed give slightly different models), so
    the pair compares two different starting models, not one."""
    return any(a[0] == b[0] and a[1] != b[1] for a, b in zip(ours, twin, strict=False))


def continual_metrics(matrix: list[list[float | None]]) -> dict[str, float | None]:
    """The continual-learning summary of A[i][j] (accuracy on set j after stage i; None where
    a set is not scored): average final accuracy over the scored sets; backward transfer
    BWT = mean_j (A[T][j] - A[j][j]) over sets before the last; forgetting = mean_j
    (max_{j <= i < T} A[i][j] - A[T][j]) (Chaudhry et al. 2018; Lopez-Paz & Ranzato 2017)."""
    last = len(matrix) - 1
    scored = [j for j in range(len(matrix[last])) if matrix[last][j] is not None]
    earlier = [j for j in scored if j < last and matrix[j][j] is not None]
    final = [matrix[last][j] for j in scored]
    bwt = [matrix[last][j] - matrix[j][j] for j in earlier]
    forgetting = [
        max(matrix[i][j] for i in range(j, last) if matrix[i][j] is not None) - matrix[last][j]
        for j in earlier
    ]

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return {"avg_final": mean(final), "bwt": mean(bwt), "forgetting": mean(forgetting)}


def strategy_label(config: ExperimentConfig) -> str:
    """The paper's names: No Mixing, Replay 0.1, Random/-, -/Generic, Random/Generic, ..."""
    parts = [mixing_source(s.mixing).label if s.mixing else "-" for s in config.stages]
    label = "/".join(parts) if any(p != "-" for p in parts) else ""
    replay = [s.replay.fraction for s in config.stages if s.replay is not None]
    if replay:
        label = f"Replay {replay[0]:g}" + (f" + {label}" if label else "")
    methods = []  # continual-learning baselines, in the order they act
    for stage in config.stages:
        if any(getattr(stage, name) is not None for name in stage.METHOD_FIELDS):
            from factmem.methods import method_labels  # torch: only for runs that use one

            methods += method_labels(stage)
    if methods:
        label = " + ".join(dict.fromkeys(methods)) + (f" + {label}" if label else "")
    return label or "No Mixing"


def row_label(strategy: str, variant: str) -> str:
    """Strategy with its variant, as every table shows it: `No Mixing [lr=0.0003]`."""
    return f"{strategy} [{variant}]" if variant else strategy


def row_labels(runs: pd.DataFrame) -> pd.Series:
    """row_label of each row of a frame with strategy and variant columns."""
    return pd.Series([row_label(s, v) for s, v in zip(runs["strategy"], runs["variant"],
                                                      strict=True)], index=runs.index)


def db_group(d_b: str) -> str:
    last = d_b.split(" -> ")[-1]
    spec = REGISTRY.get(last)
    return "factoid" if spec is None or spec.kind == "factoid" else "non-factoid"


def ordered_pairs(pairs) -> list[tuple[str, str]]:
    """D_A in order of appearance; within it No Mixing, then replay by r, then the rest."""
    pairs = list(dict.fromkeys(tuple(p) for p in pairs))
    first_seen = {d: i for i, (d, _) in reversed(list(enumerate(pairs)))}

    def key(pair):
        d_a, row = pair
        rank = 0 if row.startswith("No Mixing") else 1 if row.startswith("Replay") else 2
        return (first_seen[d_a], rank, row if rank == 1 else "", pairs.index(pair))

    return sorted(pairs, key=key)


def distinct_values(runs: pd.DataFrame, column: str) -> str:
    """A column's distinct values in the order they come, as text (`0.0003, 0.0001`)."""
    found = [v for v in dict.fromkeys(runs[column]) if v is not None and v == v]
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in found) or "?"


def setting_text(runs: pd.DataFrame) -> str:
    """Our model and regime in words: what the page and its headline figure are about."""
    def values(column: str) -> str:
        return distinct_values(runs, column)

    return (f"ours: {model_titles(values('model'))}, {values('facts')} D_A facts, "
            f"learning rate "
            f"{values('learning_rate')}, {runs['seed'].nunique()} seed(s)")
