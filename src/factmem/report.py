"""`factmem report RUNS_DIR`: finished runs -> the paper's tables and figures.

One row per run is read from `<run>/results.json` and `<run>/config.yaml`; seeds are
aggregated (mean, sample standard deviation, n) into tables laid out like the paper's:
rows D_A x strategy, columns D_B, with per-group averages (factoid and non-factoid D_B).
Written as markdown, CSV and LaTeX (pandas), PNG figures (matplotlib) and one
self-contained HTML page that embeds them all.
"""

from __future__ import annotations

import base64
import html
import logging
import re
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from factmem.archive import fill_replayed_facts
from factmem.atomic import write_text_atomic
from factmem.config import ExperimentConfig, load_config
from factmem.data.registry import REGISTRY
from factmem.errors import FactmemError
from factmem.layout import RunFolder, runs_under
from factmem.methods import method_labels
from factmem.mixing import mixing_source
from factmem.records import FACT_STATUSES, RunResults, fact_status, read_predictions
from factmem.regime_map import HEAT_TITLE, MAP_TITLE, heat_map, map_rows, map_table
from factmem.stats import mean_std_text, paired_difference

log = logging.getLogger(__name__)

NOT_STRATEGY_TAGS = {"strategy", "seed", "D_A", "D_B"}  # tags that are not part of a row's label
METRICS = ("avg_final", "bwt", "forgetting")


# ---------------------------------------------------------------- runs -> one row each


def collect_runs(runs_dirs: Path | list[Path]) -> pd.DataFrame:
    """One row per finished run under the folders (any depth up to 3): runs folders or
    archives (factmem.archive). A run found twice (in runs/ and in an archive: same name and
    stage fingerprints) counts once, from the first folder named."""
    dirs = [runs_dirs] if isinstance(runs_dirs, Path) else list(runs_dirs)
    rows, seen = [], set()
    for runs_dir in dirs:
        if not runs_dir.is_dir():
            raise FactmemError(f"{runs_dir}: no such folder")
        for run in runs_under(runs_dir, 3):
            run_dir, results = run.path, RunResults.read(run.results)
            if not results.finished:
                log.info("skipping %s: not finished", run_dir)
                continue
            identity = (run_dir.name, tuple(r.fingerprint for r in results.stages))
            if identity in seen:
                continue
            seen.add(identity)
            config = load_config(run.config)
            rows.append(run_row(run_dir, config, results))
    if not rows:
        where = ", ".join(str(d) for d in dirs)
        raise FactmemError(f"no finished runs (results.json with finished: true) under {where}")
    return _one_run_per_cell_and_seed(pd.DataFrame(rows))


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
    return [(r.fingerprint, tuple(p["loss"] for p in r.loss_curve if "loss" in p))
            for r in results.stages[:-1]]  # fmt: skip


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
        methods += method_labels(stage)
    if methods:
        label = " + ".join(dict.fromkeys(methods)) + (f" + {label}" if label else "")
    return label or "No Mixing"


# ---------------------------------------------------------------- tables


def aggregate(runs: pd.DataFrame, value: str = "da_final") -> pd.DataFrame:
    """Seeds -> mean, std, n (in %) per (D_A, strategy, variant, D_B)."""
    keys = ["d_a", "strategy", "variant", "d_b"]
    grouped = runs.dropna(subset=[value]).groupby(keys, sort=False)[value]
    out = grouped.agg(["mean", "std", "count"]).reset_index()
    out["mean"] *= 100
    out["std"] = (out["std"] * 100).fillna(0.0)
    return out.rename(columns={"count": "n"})


def paper_table(runs: pd.DataFrame, value: str = "da_final") -> pd.DataFrame:
    """Rows (D_A, strategy), columns D_B (factoid sets first), cells `mean ± std`, plus
    the average of the cell means over factoid and over non-factoid D_B, as the paper."""
    cells = aggregate(runs, value)
    cells["row"] = _labels(cells)
    cells["text"] = [
        _cell_text(m, s, n) for m, s, n in zip(cells["mean"], cells["std"], cells["n"], strict=True)
    ]
    columns = sorted(cells["d_b"].unique(), key=lambda d: (_group(d) != "factoid", d))
    rows = _ordered(cells[["d_a", "row"]].drop_duplicates().itertuples(index=False))
    wide = cells.pivot(index=["d_a", "row"], columns="d_b", values="text").reindex(rows)
    means = cells.pivot(index=["d_a", "row"], columns="d_b", values="mean").reindex(rows)
    wide = wide[columns].fillna("")
    for group in ("factoid", "non-factoid"):
        members = [c for c in columns if _group(c) == group]
        if len(members) >= 2 or (members and len(members) < len(columns)):
            wide[f"avg {group}"] = (
                means[members].mean(axis=1).map(lambda m: "" if pd.isna(m) else f"{m:.1f}")
            )
    wide.index.names = ["D_A", "strategy"]
    wide.columns.name = "D_B"
    return wide


def row_label(strategy: str, variant: str) -> str:
    """Strategy with its variant, as every table shows it: `No Mixing [lr=0.0003]`."""
    return f"{strategy} [{variant}]" if variant else strategy


def _labels(runs: pd.DataFrame) -> pd.Series:
    """row_label of each row of a frame with strategy and variant columns."""
    return pd.Series([row_label(s, v) for s, v in zip(runs["strategy"], runs["variant"],
                                                      strict=True)], index=runs.index)


def _cell_text(mean: float, std: float, n: int) -> str:
    """`mean ± std`; a single run has no spread to show (`(n=1)`, never `± 0.0`)."""
    if n == 1:
        return f"{mean:.1f} (n=1)"
    return f"{mean:.1f} ± {std:.1f}" + (f" (n={n})" if n != 3 else "")


def _group(d_b: str) -> str:
    last = d_b.split(" -> ")[-1]
    spec = REGISTRY.get(last)
    return "factoid" if spec is None or spec.kind == "factoid" else "non-factoid"


def _ordered(pairs) -> list[tuple[str, str]]:
    """D_A in order of appearance; within it No Mixing, then replay by r, then the rest."""
    pairs = list(dict.fromkeys(tuple(p) for p in pairs))
    first_seen = {d: i for i, (d, _) in reversed(list(enumerate(pairs)))}

    def key(pair):
        d_a, row = pair
        rank = 0 if row.startswith("No Mixing") else 1 if row.startswith("Replay") else 2
        return (first_seen[d_a], rank, row if rank == 1 else "", pairs.index(pair))

    return sorted(pairs, key=key)


def stage_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows (D_A, strategy, later sets), columns `after stage k`: forgetting stage by stage."""
    runs = runs.assign(strategy=_labels(runs))
    rows = []
    for (d_a, strategy, d_b), part in runs.groupby(["d_a", "strategy", "d_b"], sort=False):
        row = {"D_A": d_a, "strategy": strategy, "later stages": d_b, "n": len(part)}
        for k in range(int(part["stages"].max())):
            values = pd.Series([v[k] if len(v) > k else None for v in part["da_by_stage"]],
                               dtype=float) * 100  # fmt: skip
            row[f"after stage {k + 1}"] = mean_std_text(values.dropna().tolist())
        rows.append(row)
    return pd.DataFrame(rows).set_index(["D_A", "strategy", "later stages"])


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (D_A, strategy, later sets): average final accuracy, BWT and forgetting (%)."""
    runs = runs.assign(strategy=_labels(runs))
    rows = []
    for (d_a, strategy, d_b), part in runs.groupby(["d_a", "strategy", "d_b"], sort=False):
        row = {"D_A": d_a, "strategy": strategy, "later stages": d_b, "n": len(part)}
        for column, title in (("avg_final", "avg final acc"), ("bwt", "BWT"),
                              ("forgetting", "forgetting")):  # fmt: skip
            row[title] = mean_std_text((part[column].dropna().astype(float) * 100).tolist())
        rows.append(row)
    return pd.DataFrame(rows).set_index(["D_A", "strategy", "later stages"])


def to_markdown(table: pd.DataFrame) -> str:
    flat = table.reset_index()
    return flat.to_markdown(index=False, disable_numparse=True)


def to_latex(table: pd.DataFrame, caption: str) -> str:
    flat = table.reset_index().map(lambda v: str(v).replace("±", r"$\pm$"))
    return flat.to_latex(index=False, caption=caption, escape=False,
                         column_format="ll" + "r" * (flat.shape[1] - 2))  # fmt: skip


# ---------------------------------------------------------------- paper vs ours


PAPER_FILES = {"remix": "remix-paper-tables.yaml"}  # shipped in factmem/reference/


def paper_numbers_path(name: str | Path) -> Path:
    """`remix` (the REMIX paper's Tables 2-6, shipped with factmem) or a YAML file."""
    if str(name) in PAPER_FILES:
        return Path(__file__).parent / "reference" / PAPER_FILES[str(name)]
    path = Path(name)
    if not path.is_file():
        raise FactmemError(f"--paper {name}: no such file; use a YAML file of published cells "
                           f"or one of: {', '.join(PAPER_FILES)}")  # fmt: skip
    return path


def load_paper_numbers(path: Path) -> pd.DataFrame:
    """A YAML of published cells: tables[].cells[] with d_a, d_b, strategy, value (%)."""
    data = yaml.safe_load(path.read_text()) or {}
    rows = []
    for table in data.get("tables", []):
        for i, cell in enumerate(table.get("cells", [])):
            missing = [k for k in ("d_a", "d_b", "strategy", "value") if k not in cell]
            if missing:
                raise FactmemError(f"{path}: table {table.get('id')}, cell {i}: missing "
                                   f"{', '.join(missing)}")  # fmt: skip
            rows.append({**cell, "table": table.get("id"), "model": table.get("model")})
    return pd.DataFrame(rows, columns=["d_a", "d_b", "strategy", "value", "table", "model"])


BASELINE = "No Mixing"
# The paper's own no-mixing row in each table: Table 4 (replay) ran a separate one and
# names it "Replay 0.0" (its cells differ slightly from Table 2's No Mixing).
PAPER_BASELINES = (BASELINE, "Replay 0.0")


def twins(runs: pd.DataFrame) -> dict[tuple, list[tuple[Any, Any]]]:
    """{(D_A, D_B, variant, strategy): [(run, its No Mixing twin or None), ...]}: every run of
    a strategy beside the No Mixing run of the same D_A, D_B, variant and seed, in the order
    the runs come. The one pairing every paired table uses."""
    pairs: dict[tuple, list[tuple[Any, Any]]] = {}
    for (d_a, d_b, variant), part in runs.groupby(["d_a", "d_b", "variant"], sort=False):
        baseline = {r.seed: r for r in part.itertuples() if r.strategy == BASELINE}
        for run in part[part["strategy"] != BASELINE].itertuples():
            pairs.setdefault((d_a, d_b, variant, run.strategy), []).append(
                (run, baseline.get(run.seed)))
    return pairs


def paired_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """Every strategy against No Mixing of the same D_A, D_B, variant and seeds, fact by
    fact (D_A after the last stage): difference (points), 95% interval, McNemar p, verdict.
    Seeds without a No Mixing twin, or whose facts differ, are left out (and counted)."""
    rows = []
    for (d_a, d_b, variant, strategy), runs_of in twins(runs).items():
        pairs, unpaired, apart = [], 0, 0
        for run, twin_run in runs_of:
            twin = (twin_run.da_verdicts or {}) if twin_run is not None else {}
            ours = run.da_verdicts or {}
            if not ours or set(ours) != set(twin):
                unpaired += 1
                continue
            apart += trained_apart(run.earlier_stages, twin_run.earlier_stages)
            facts = sorted(ours)
            pairs.append(([ours[f] for f in facts], [twin[f] for f in facts]))
        if not pairs:
            continue
        result = paired_difference(pairs)
        rows.append({"d_a": d_a, "d_b": d_b, "strategy": strategy, "variant": variant,
                     "seeds": result.seeds, "facts": result.facts,
                     "difference": result.difference, "low": result.low,
                     "high": result.high, "seed low": result.seed_low,
                     "seed high": result.seed_high, "kept only with it": result.only_strategy,
                     "kept only without": result.only_baseline,
                     "p (McNemar)": result.p_value, "verdict": result.verdict,
                     "unpaired seeds": unpaired, "trained apart": apart})  # fmt: skip
    return pd.DataFrame(rows)


def paired_table(runs: pd.DataFrame) -> pd.DataFrame:
    """paired_rows as text, one row per (D_A, D_B, strategy)."""
    rows = paired_rows(runs)
    if rows.empty:
        return rows
    out = pd.DataFrame({
        "D_A": rows["d_a"], "D_B": rows["d_b"],
        "strategy": _labels(rows),
        "seeds": rows["seeds"], "facts": rows["facts"],
        "Δ vs No Mixing (points)": rows["difference"].map(lambda d: f"{d:+.1f}"),
        "95% interval": [f"[{lo:+.1f}, {hi:+.1f}]" for lo, hi in zip(rows["low"], rows["high"],
                                                                    strict=True)],
        "95% interval, seeds resampled": [f"[{lo:+.1f}, {hi:+.1f}]" for lo, hi in zip(
            rows["seed low"], rows["seed high"], strict=True)],
        "kept only with / without": [f"{a} / {b}" for a, b in zip(
            rows["kept only with it"], rows["kept only without"], strict=True)],
        "p (McNemar)": rows["p (McNemar)"].map(lambda p: f"{p:.3g}"),
        "verdict": rows["verdict"],
    })  # fmt: skip
    if rows["unpaired seeds"].any():  # runs left out of the comparison are shown, not hidden
        out["left out (no No Mixing twin with the same facts)"] = rows["unpaired seeds"]
    if rows["trained apart"].any():  # pairs that do not start from one model are named
        out["seeds whose shared stage 1 was trained apart"] = rows["trained apart"]
    return out.set_index(["D_A", "D_B", "strategy"])


def paper_vs_ours(runs: pd.DataFrame, paper: pd.DataFrame,
                  paired: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every cell both have: the paper's number and its change from No Mixing, ours (mean ±
    std over seeds) and our paired change with its interval, and a verdict on the direction:
    agrees / disagrees where our difference is established (stats.PairedDifference.verdict),
    else not established.

    A strategy label may carry a variant in parentheses (`-/Generic (state_union)`): it is
    compared with the paper's `-/Generic`. `paired`: paired_rows of the runs without a
    variant, when the caller has them already (a seeded bootstrap per cell: done once)."""
    runs = runs[runs["variant"] == ""].assign(
        paper_strategy=lambda r: r["strategy"].str.replace(r" \(.*\)$", "", regex=True)
    )
    paired = paired_rows(runs) if paired is None else paired
    paired = paired.set_index(["d_a", "d_b", "strategy"]) if not paired.empty else None
    base_paper = paper[paper["strategy"].isin(PAPER_BASELINES)]
    base_paper = base_paper.drop_duplicates(["table", "d_a", "d_b"])
    base_paper = base_paper.set_index(["table", "d_a", "d_b"])["value"]
    rows = []
    for (d_a, d_b, strategy, paper_strategy), part in runs.groupby(
        ["d_a", "d_b", "strategy", "paper_strategy"], sort=False
    ):
        published = paper[(paper["d_a"] == d_a) & (paper["d_b"] == d_b)
                          & (paper["strategy"] == paper_strategy)]  # fmt: skip
        if published.empty:
            continue
        # the first table that has the cell (the paper's main model first); its change from
        # No Mixing is taken within that same table, never across models
        value, model = float(published["value"].iloc[0]), published["model"].iloc[0]
        table = published["table"].iloc[0]
        row = {"D_A": d_a, "D_B": d_b, "strategy": strategy, "paper table": table,
               "paper model": model,
               "paper": f"{value:.1f}", "paper Δ": "",
               "ours": mean_std_text((part["da_final"].astype(float) * 100).tolist()),
               "ours Δ [95% interval]": "", "seeds resampled": "", "verdict": ""}  # fmt: skip
        if strategy != BASELINE:
            if (table, d_a, d_b) in base_paper.index:
                row["paper Δ"] = f"{value - base_paper[(table, d_a, d_b)]:+.1f}"
            if paired is not None and (d_a, d_b, strategy) in paired.index:
                ours = paired.loc[(d_a, d_b, strategy)]
                row["ours Δ [95% interval]"] = (
                    f"{ours['difference']:+.1f} [{ours['low']:+.1f}, {ours['high']:+.1f}]"
                )
                row["seeds resampled"] = f"[{ours['seed low']:+.1f}, {ours['seed high']:+.1f}]"
                row["verdict"] = _direction_verdict(row["paper Δ"], ours["verdict"])
        rows.append(row)
    columns = ["D_A", "D_B", "strategy", "paper table", "paper model", "paper", "paper Δ", "ours",
               "ours Δ [95% interval]", "seeds resampled", "verdict"]  # fmt: skip
    order = _ordered((r["D_A"], r["strategy"]) for r in rows)
    d_a_rank = {d_a: i for i, (d_a, _) in reversed(list(enumerate(order)))}
    rows.sort(key=lambda r: (d_a_rank[r["D_A"]], r["D_B"], order.index((r["D_A"], r["strategy"]))))
    return pd.DataFrame(rows, columns=columns)


def _direction_verdict(paper_delta: str, ours: str) -> str:
    """Does our established direction match the paper's change from No Mixing?"""
    if ours == "not established":
        return "not established"
    if not paper_delta:  # the paper's table has no baseline cell to compare with
        return f"ours {ours}; paper Δ unknown"
    if float(paper_delta) == 0:
        return f"ours {ours}; paper: no change"
    paper_higher = float(paper_delta) > 0
    return "agrees" if paper_higher == (ours == "higher") else "disagrees"


# ---------------------------------------------------------------- figures


def figures(runs: pd.DataFrame, out: Path) -> dict[str, Path]:
    """Every figure the runs have data for: {title: png path}."""
    import matplotlib

    matplotlib.use("Agg")
    made: dict[str, Path] = {}
    two_stage = runs[runs["stages"] == 2]
    if not two_stage.empty:
        made["D_A retention by D_B and strategy"] = _bars_by_db(two_stage, out / "forgetting.png")
    replay = two_stage[two_stage["strategy"].str.fullmatch(r"No Mixing|Replay [0-9.e-]+")]
    if replay["replay"].fillna(0.0).nunique() >= 2:
        curve = replay.assign(x=replay["replay"].fillna(0.0), strategy="Replay")
        made["Replay ratio"] = _curve(
            curve, "replay fraction r (0 = No Mixing)", out / "replay.png"
        )
    mixed = runs[runs["ratio"].notna()]
    if mixed["ratio"].nunique() >= 2:
        made["Mixing ratio (D:D_M = 1:x)"] = _curve(mixed.assign(x=mixed["ratio"]),
                                                    "mixing examples per factoid",
                                                    out / "mixing_ratio.png")  # fmt: skip
    if mixed["words"].nunique() >= 2:
        made["Mixing length"] = _curve(mixed.assign(x=mixed["words"]), "words per mixing example",
                                       out / "mixing_length.png")  # fmt: skip
    curves = two_stage[two_stage["curve"].map(len) > 0]
    if not curves.empty:
        made["D_A retention during stage 2"] = _retention_curves(curves, out / "curves.png")
    multi = runs[runs["stages"] >= 3]
    if not multi.empty:
        made["D_A after each stage (3-stage runs)"] = _stage_bars(multi, out / "stages.png")
    return made


def _bars_by_db(runs: pd.DataFrame, path: Path) -> Path:
    import matplotlib.pyplot as plt

    cells = aggregate(runs)
    cells["label"] = _labels(cells)
    sets = list(dict.fromkeys(cells["d_a"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(5 + 3 * len(sets), 4), squeeze=False)
    for ax, d_a in zip(axes[0], sets, strict=True):
        part = cells[cells["d_a"] == d_a]
        d_bs = list(dict.fromkeys(part["d_b"]))
        labels = [row for _, row in _ordered(part[["d_a", "label"]].itertuples(index=False))]
        width = 0.8 / len(labels)
        for i, label in enumerate(labels):
            sub = part[part["label"] == label].set_index("d_b").reindex(d_bs)
            xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(d_bs))]
            ax.bar(xs, sub["mean"], width, yerr=sub["std"], capsize=2, label=label)
        ax.set_xticks(range(len(d_bs)), d_bs, rotation=20)
        ax.set_ylim(0, 105)
        ax.set_title(f"D_A = {d_a}")
        ax.set_ylabel("D_A exact match after stage 2 (%)")
    # beside the last panel, not over its bars
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def _curve(runs: pd.DataFrame, xlabel: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    groups = runs.groupby(["d_a", "d_b", "strategy"])
    for (d_a, d_b, strategy), part in groups:
        stats = part.groupby("x")["da_final"].agg(["mean", "std"]).fillna(0.0) * 100
        ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3,
                    label=f"{strategy}: {d_a} -> {d_b}")  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel("D_A exact match after the last stage (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _retention_curves(runs: pd.DataFrame, path: Path) -> Path:
    """D_A exact match vs stage-2 epoch (comparable across mixtures of different sizes),
    mean over seeds, one line per (strategy, D_B)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    runs = runs.assign(strategy=_labels(runs))  # variants (e.g. two learning rates) apart
    for (d_a, d_b, strategy), part in runs.groupby(["d_a", "d_b", "strategy"], sort=False):
        stats = _curve_points(part).agg(["mean", "std"]).fillna(0.0) * 100
        ax.plot(stats.index, stats["mean"], marker=".", label=f"{strategy}: {d_a} -> {d_b}")
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                        alpha=0.15)  # fmt: skip
    ax.set_xlabel("stage-2 epoch")
    ax.set_ylabel("D_A exact match (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _curve_points(part: pd.DataFrame):
    """The runs' forgetting curves, grouped by epoch (rounded: seeds' epochs line up)."""
    points = pd.DataFrame([p for c in part["curve"] for p in c], columns=["epoch", "v"])
    return points.assign(epoch=points["epoch"].round(2)).groupby("epoch")["v"]


CURVE_EPOCHS = (0, 1, 2, 3, 5, 10, 15, 20, 30, 40)


def curve_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The forgetting curves as numbers: D_A (%, mean over seeds) during the last stage at
    a few epochs, and the first epoch at which it is 0 (the figure shows every point)."""
    rows = []
    runs = runs[runs["curve"].map(len) > 0]
    for (d_a, d_b, label), part in runs.assign(label=_labels(runs)).groupby(
            ["d_a", "d_b", "label"], sort=False):  # fmt: skip
        means = _curve_points(part).mean() * 100
        row = {"D_A": d_a, "D_B": d_b, "strategy": label, "seeds": len(part)}
        row |= {f"epoch {e:g}": f"{means[e]:.1f}" for e in CURVE_EPOCHS if e in means.index}
        zero = means[means == 0]
        row["first epoch at 0%"] = f"{zero.index[0]:g}" if len(zero) else "never"
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.set_index(["D_A", "D_B", "strategy"]).fillna("") if rows else table


FOREST_TITLE = "The answer: our change from No Mixing beside the paper's, cell by cell"
LOSS_TITLE = "The last stage's training loss in its last epoch (non-factoid D_B: no exact match)"
CURVE_TITLE = "D_A during the last stage (%), from evaluation.curve_every_steps"


def loss_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The last stage's training loss over its last epoch, mean ± std over seeds: a
    non-factoid D_B has no exact match, and this is what says it was learned."""
    rows = []
    runs = runs.dropna(subset=["last_loss"])
    for (d_a, d_b, label), part in runs.assign(label=_labels(runs)).groupby(
            ["d_a", "d_b", "label"], sort=False):  # fmt: skip
        losses = part["last_loss"].astype(float)
        text = f"{losses.mean():.3g}" + (f" ± {losses.std():.2g}" if len(losses) > 1 else "")
        rows.append({"D_A": d_a, "D_B": d_b, "strategy": label, "seeds": len(part),
                     "training loss, last epoch": text})  # fmt: skip
    if not rows:
        return pd.DataFrame(rows)
    order = {pair: i for i, pair in enumerate(_ordered((r["D_A"], r["strategy"]) for r in rows))}
    d_as = list(dict.fromkeys(r["D_A"] for r in rows))
    rows = sorted(rows, key=lambda r: (d_as.index(r["D_A"]), r["D_B"],
                                       order[r["D_A"], r["strategy"]]))  # fmt: skip
    return pd.DataFrame(rows).set_index(["D_A", "D_B", "strategy"])


def _stage_bars(runs: pd.DataFrame, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    labels = list(dict.fromkeys(runs["strategy"] + " (" + runs["d_b"] + ")"))
    stages = int(runs["stages"].max())
    width = 0.8 / stages
    for k in range(stages):
        means, stds = [], []
        for label in labels:
            part = runs[(runs["strategy"] + " (" + runs["d_b"] + ")") == label]
            values = pd.Series([v[k] if len(v) > k else None for v in part["da_by_stage"]],
                               dtype=float) * 100  # fmt: skip
            means.append(values.mean())
            stds.append(values.std() if len(values) > 1 else 0.0)
        xs = [j + (k - (stages - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=f"after stage {k + 1}")
    ax.set_xticks(range(len(labels)), labels, rotation=15, fontsize=8)
    ax.set_ylabel("D_A exact match (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    return _save(fig, path)


def forest_rows(versus: pd.DataFrame, paired: pd.DataFrame) -> pd.DataFrame:
    """paper_vs_ours's cells that have both changes from No Mixing, with ours as numbers
    (difference, fact-level and seed-level interval, from the same `paired` rows that
    paper_vs_ours was given) beside the paper's, in its order."""
    if paired.empty:
        return paired
    paired = paired.set_index(["d_a", "d_b", "strategy"])
    rows = []
    for row in versus.itertuples(index=False):
        key = (row.D_A, row.D_B, row.strategy)
        if not row[versus.columns.get_loc("paper Δ")] or key not in paired.index:
            continue
        ours = paired.loc[key]
        rows.append({"cell": f"{row.D_A} -> {row.D_B}: {row.strategy}",
                     "paper": float(row[versus.columns.get_loc("paper Δ")]),
                     "paper model": row[versus.columns.get_loc("paper model")],
                     **{k: float(ours[k]) for k in ("difference", "low", "high", "seed low",
                                                    "seed high")}})  # fmt: skip
    return pd.DataFrame(rows)


# the embedded model's config name, as the page should say what it is
EMBEDDED_NAME = ("smollm2-135m", "SmolLM2-135M-Instruct (dequantised from Q4_1)")


def distinct_values(runs: pd.DataFrame, column: str) -> str:
    """A column's distinct values in the order they come, as text (`0.0003, 0.0001`)."""
    found = [v for v in dict.fromkeys(runs[column]) if v is not None and v == v]
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in found) or "?"


def setting_text(runs: pd.DataFrame) -> str:
    """Our model and regime in words: what the page and its headline figure are about."""
    def values(column: str) -> str:
        return distinct_values(runs, column)

    return (f"ours: {values('model').replace(*EMBEDDED_NAME)}, {values('facts')} D_A facts, "
            f"learning rate "
            f"{values('learning_rate')}, {runs['seed'].nunique()} seed(s)")


def _forest(rows: pd.DataFrame, setting: str, path: Path) -> Path:
    """One row a cell: our change from No Mixing (dot; thick bar: facts resampled within
    seeds; thin bar: seeds resampled) beside the paper's (diamond)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.42 * len(rows)))
    ys = list(range(len(rows)))[::-1]
    ax.hlines(ys, rows["seed low"], rows["seed high"], color="C0", lw=1)
    ax.hlines(ys, rows["low"], rows["high"], color="C0", lw=5, alpha=0.6)
    ax.plot(rows["difference"], ys, "o", color="C0", label="ours: Δ, 95% intervals (thick: "
            "facts resampled; thin: seeds resampled)")
    models = ", ".join(dict.fromkeys(rows["paper model"]))
    ax.plot(rows["paper"], ys, "D", color="C3", label=f"paper: Δ ({models})")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(ys, rows["cell"], fontsize=8)
    ax.set_xlabel("D_A after stage 2: change from No Mixing (points)")
    ax.set_title(textwrap.fill(setting, 95), fontsize=9)  # whole, however long the setting
    ax.set_ylim(-0.8, len(rows) - 0.2 + 0.9)  # room above the top row for the legend
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=1,
              frameon=False)  # fmt: skip
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------- the whole report


def per_seed_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Each strategy beside its No Mixing twin, seed by seed (D_A after the last stage, %):
    with a few seeds, whether an effect holds in every seed or comes from one shows here."""
    rows = []
    for (d_a, d_b, variant, _), runs_of in twins(runs).items():
        for run, twin in runs_of:
            ours, theirs = run.da_verdicts or {}, (twin.da_verdicts or {}) if twin else {}
            if twin is None or not ours or set(ours) != set(theirs):
                continue
            rows.append({
                "D_A": d_a, "D_B": d_b,
                "strategy": row_label(run.strategy, variant),
                "seed": run.seed, "No Mixing": f"{100 * twin.da_final:.1f}",
                "strategy (%)": f"{100 * run.da_final:.1f}",
                "Δ (points)": f"{100 * (run.da_final - twin.da_final):+.1f}",
                "kept only with / without": f"{sum(ours[f] and not theirs[f] for f in ours)} / "
                                            f"{sum(theirs[f] and not ours[f] for f in ours)}",
            })  # fmt: skip
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(["D_A", "D_B", "strategy", "seed"], kind="stable").set_index(
        ["D_A", "D_B", "strategy", "seed"])


def replay_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Replay strategies: D_A after the last stage, the replayed facts apart from the rest,
    beside No Mixing on the same other facts. A replayed fact is trained on again, so
    retention that comes only from the replayed facts is not protection of what was not
    replayed; the paired table counts both alike."""
    rows = []
    for (d_a, d_b, variant, strategy), runs_of in twins(runs).items():
        runs_of = [(run, twin) for run, twin in runs_of if run.da_replayed]
        if not runs_of:
            continue
        replayed = [0, 0]  # kept, facts
        others, twins_kept = [0, 0], [0, 0]
        for run, twin_run in runs_of:
            verdicts, chosen = run.da_verdicts or {}, set(run.da_replayed)
            replayed[0] += sum(verdicts.get(k, False) for k in chosen)
            replayed[1] += len(chosen)
            rest = [k for k in verdicts if k not in chosen]
            others[0] += sum(verdicts[k] for k in rest)
            others[1] += len(rest)
            twin = (twin_run.da_verdicts or {}) if twin_run is not None else {}
            if set(twin) == set(verdicts):
                twins_kept[0] += sum(twin[k] for k in rest)
                twins_kept[1] += len(rest)
        rows.append({
            "D_A": d_a, "D_B": d_b,
            "strategy": row_label(strategy, variant),
            "seeds": len(runs_of),
            "replayed facts kept": _kept(replayed),
            "other facts kept": _kept(others),
            "No Mixing, the same other facts": _kept(twins_kept) if twins_kept[1] else "no twin",
        })  # fmt: skip
    table = pd.DataFrame(rows)
    return table.set_index(["D_A", "D_B", "strategy"]) if not table.empty else table


STATUS_TITLE = ("D_A after the last stage: facts kept (exact match), hidden (gold in the "
                "output, or its first token ranked 1) or lost, summed over seeds")


# Every table a report can hold: title -> the stable stem of its files (<stem>.csv, .tex), so
# a new table anywhere on the page renames nothing that scripts and readers already use.
TABLES = {
    MAP_TITLE: "regime_map",
    "D_A exact match after stage 2 (%)": "da_after_stage2",
    "D_B exact match after stage 2 (%)": "db_after_stage2",
    "D_A exact match after stage 1 (%)": "da_after_stage1",
    "D_A exact match after each stage, runs of 3+ stages (%)": "da_by_stage",
    LOSS_TITLE: "last_loss",
    "Continual-learning summary over the scored sets (%)": "summary",
    "D_A after the last stage: each strategy minus No Mixing, fact by fact": "paired",
    "The same, seed by seed (D_A after the last stage, %)": "paired_by_seed",
    STATUS_TITLE: "fact_status",
    CURVE_TITLE: "curves",
    "Replay: D_A after the last stage, replayed facts apart from the rest": "replay",
    "Paper vs ours: D_A after stage 2 (%)": "paper_vs_ours",
}


def _title(stem: str) -> str:
    """A table's title by its stable name (TABLES)."""
    return next(title for title, name in TABLES.items() if name == stem)


def status_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Kept / hidden / lost D_A facts per cell (records.fact_status), over the runs scored
    with fact scores; a hidden fact is one exact match calls lost but the model still has."""
    runs = runs[runs["da_status"].map(bool)]
    rows = []
    for (d_a, d_b, label), part in runs.assign(label=_labels(runs)).groupby(
            ["d_a", "d_b", "label"], sort=False):  # fmt: skip
        total = {s: sum(c[s] for c in part["da_status"]) for s in FACT_STATUSES}
        facts = sum(total.values())
        rows.append({"D_A": d_a, "D_B": d_b, "strategy": label, "seeds": len(part),
                     **{s: f"{n} ({100 * n / facts:.1f}%)" for s, n in total.items()}})
    table = pd.DataFrame(rows)
    return table.set_index(["D_A", "D_B", "strategy"]) if rows else table


def _kept(counts: list[int]) -> str:
    kept, facts = counts
    return f"{kept} / {facts} ({100 * kept / facts:.1f}%)" if facts else "-"


GLOSSARY = {
    "exact match": "the greedy answer, stripped and lower-cased, equals a gold answer (the "
    "paper's rule; WebQuestions: a gold answer inside the output). D_A after stage 2 is the "
    "retention the paper reports.",
    "mean ± std, n": "over seeds: the mean and the sample standard deviation of n seeds.",
    "Δ vs No Mixing": "a strategy's D_A exact match minus that of its No Mixing twin (same "
    "D_A facts, D_B and seed), in points, fact by fact.",
    "95% interval": "bootstrap over facts, resampled within each seed (10,000 resamples).",
    "seeds resampled": "hierarchical bootstrap: seeds first, then facts within each drawn "
    "seed; wider when seeds disagree.",
    "kept only with / without": "facts the strategy keeps and No Mixing loses / facts No "
    "Mixing keeps and the strategy loses (McNemar's discordant pairs).",
    "p (McNemar)": "McNemar's exact two-sided test on those discordant pairs.",
    "verdict": "higher or lower only when p < 0.05 and both 95% intervals exclude 0, else not "
    "established; against the paper: agrees when our established direction is the sign of "
    "the paper's Δ, disagrees when it is the opposite.",
    "kept / hidden / lost": "after the last stage: kept = exact match; hidden = not exact, but "
    "the gold is inside the output or its first token ranks 1 under teacher forcing; lost = "
    "neither.",
    "BWT, forgetting": "backward transfer: mean over earlier sets of (accuracy after the last "
    "stage - accuracy right after learning it); forgetting: mean drop from each set's best "
    "accuracy (Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018).",
}  # fmt: skip


def summary_items(runs: pd.DataFrame) -> dict[str, str]:
    """What was run, in words: the first thing on the page."""
    def values(column: str) -> str:
        return distinct_values(runs, column)

    models = values("model")
    steps = [s for s in runs["steps_by_stage"] if s]
    per_stage = []
    for i in range(max((len(s) for s in steps), default=0)):
        counts = sorted({s[i] for s in steps if len(s) > i})
        shown = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        per_stage.append(f"stage {i + 1}: {shown}")
    return {
        "model": models.replace(*EMBEDDED_NAME)
        + (" (not the paper's Llama-3-8B base model)" if "smollm2" in models else ""),
        "runs": f"{len(runs)} finished; seeds {values('seed')}",
        "cells": "; ".join(dict.fromkeys(f"{a} -> {b}" for a, b in zip(runs["d_a"], runs["d_b"],
                                                                       strict=True))),
        "strategies": values("strategy"),
        "D_A facts per stage": values("facts"),
        "learning rate": values("learning_rate"),
        "optimizer steps": "; ".join(per_stage) or "?",
    }  # fmt: skip


def all_hundred(table: pd.DataFrame) -> bool:
    """Every value cell reads 100 (e.g. D_A after stage 1, D_B): folded on the page."""
    cells = [str(v) for v in table.to_numpy().ravel() if str(v) not in ("", "-", "nan")]
    return bool(cells) and all(c.split(" ")[0] in ("100.0", "100") for c in cells)


def write_report(runs_dirs: Path | list[Path], out: Path | None = None,
                 paper: str | Path | None = None) -> Path:  # fmt: skip
    """Tables (md, csv, tex), figures (png) and report.html under `out`; returns the page.

    `runs_dirs`: runs folders and/or archives; `paper`: `remix` or a YAML of published cells."""
    dirs = [runs_dirs] if isinstance(runs_dirs, Path) else list(runs_dirs)
    out = out or dirs[0] / "report"
    runs = collect_runs(dirs)
    two_stage, multi = runs[runs["stages"] == 2], runs[runs["stages"] >= 3]
    tables = {}
    lead: dict[str, Path] = {}  # the answer, shown before every table
    regime = map_rows(runs)
    if not regime.empty:  # a regime-map grid: the map is its answer, so it comes first
        tables[_title("regime_map")] = map_table(regime)
        lead[HEAT_TITLE] = heat_map(regime, out / "regime_map.png")
    if not two_stage.empty:
        tables |= {
            _title("da_after_stage2"): paper_table(two_stage, "da_final"),
            _title("db_after_stage2"): paper_table(two_stage, "db_final"),
            _title("da_after_stage1"): paper_table(two_stage, "da_first"),
        }
    if not multi.empty:
        tables[_title("da_by_stage")] = stage_table(multi)
    losses = loss_table(two_stage[two_stage["d_b"].map(_group) == "non-factoid"])
    if not losses.empty:
        tables[_title("last_loss")] = losses
    tables[_title("summary")] = summary_table(runs)
    paired = paired_table(runs)
    if not paired.empty:
        tables[_title("paired")] = paired
        by_seed = per_seed_table(runs)
        if by_seed.index.get_level_values("seed").nunique() > 1:
            tables[_title("paired_by_seed")] = by_seed
    statuses = status_table(runs)
    if not statuses.empty:
        tables[_title("fact_status")] = statuses
    curves = curve_table(runs)
    if not curves.empty:
        tables[_title("curves")] = curves
    replays = replay_table(runs)
    if not replays.empty:
        tables[_title("replay")] = replays
    if paper is not None:
        published = load_paper_numbers(paper_numbers_path(paper))
        plain = paired_rows(two_stage[two_stage["variant"] == ""])
        versus = paper_vs_ours(two_stage, published, plain)
        if versus.empty:
            log.warning("--paper %s: none of these runs' cells is in the paper's tables", paper)
        else:
            tables[_title("paper_vs_ours")] = versus.set_index(
                ["D_A", "D_B", "strategy"]
            )
            forest = forest_rows(versus, plain)
            if not forest.empty:
                import matplotlib

                matplotlib.use("Agg")
                lead[FOREST_TITLE] = _forest(forest, setting_text(two_stage),
                                             out / "paper_vs_ours.png")  # fmt: skip
    command = " ".join(["factmem report", *map(str, dirs)]
                       + ([f"--out {out}"] if out != dirs[0] / "report" else [])
                       + ([f"--paper {paper}"] if paper is not None else []))  # fmt: skip
    name = ", ".join(dict.fromkeys(d.resolve().name for d in dirs))
    made_by = f"{len(runs)} finished runs ({setting_text(runs)}). Made by `{command}`."
    summary = summary_items(runs)
    markdown = [f"# factmem report: {name}\n", made_by + "\n", "## What was run\n"]
    markdown += [f"- **{k}**: {v}" for k, v in summary.items()] + [""]
    markdown += [f"![{title}]({path.name})\n" for title, path in lead.items()]
    _remove_stale_tables(out, {TABLES[title] for title in tables})
    for title, table in tables.items():
        stem = TABLES[title]  # a table without a registered name is a bug: fail loudly
        write_text_atomic(out / f"{stem}.csv", table.reset_index().to_csv(index=False))
        write_text_atomic(out / f"{stem}.tex", to_latex(table, title))
        markdown += [f"## {title}\n", to_markdown(table), ""]
    write_text_atomic(out / "cells.csv", aggregate(runs).to_csv(index=False))
    write_text_atomic(out / "runs.csv",
                      runs.drop(columns=["earlier_stages", "last_loss"]).to_csv(index=False))
    figs = figures(runs, out)
    markdown += [f"![{title}]({path.name})\n" for title, path in figs.items()]
    markdown += ["## Glossary\n"] + [f"- **{k}**: {v}" for k, v in GLOSSARY.items()]
    write_text_atomic(out / "report.md", "\n".join(markdown) + "\n")
    page = out / "report.html"
    write_text_atomic(page, html_page(f"factmem report: {name}", made_by, tables, figs, lead,
                                      summary))  # fmt: skip
    return page


def _remove_stale_tables(out: Path, written: set[str]) -> None:
    """Tables an earlier report of this folder wrote and this one does not (or wrote under
    their old numbered names, table<i>): left in place they would read as current."""
    if not out.is_dir():
        return
    for file in [*out.glob("*.csv"), *out.glob("*.tex")]:
        ours = file.stem in TABLES.values() or re.fullmatch(r"table\d+", file.stem)
        if ours and file.stem not in written:
            file.unlink()


def _img(title: str, path: Path, lead: bool = False) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    mark = " data-lead" if lead else ""
    return (f"<img data-figure{mark} alt='{html.escape(title)}' "
            f"src='data:image/png;base64,{data}'>")


def html_page(title: str, made_by: str, tables: dict[str, pd.DataFrame],
              figs: dict[str, Path], lead: dict[str, Path] | None = None,
              summary: dict[str, str] | None = None) -> str:  # fmt: skip
    """One file, figures embedded as data URIs: what was run, the `lead` figures (the
    answer), the tables (folded where every cell is 100), the other figures, a glossary. On
    load it counts what rendered, and whether the first lead figure starts on the first
    screen (for tests)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1200px}",
        "table{border-collapse:collapse;margin:1em 0;font-size:14px}",
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}",
        "td:nth-child(-n+2){text-align:left}img{max-width:100%;display:block;margin:1em 0}",
        "dl.summary{display:grid;grid-template-columns:max-content auto;gap:2px 12px;"
        "font-size:14px;margin:0.5em 0}dl.summary dt{font-weight:bold}dl.summary dd{margin:0}"
        "details>summary{cursor:pointer;font-size:1.2em;font-weight:bold;margin:1em 0}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if summary:
        parts.append("<dl class='summary'>" + "".join(
            f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in summary.items())
            + "</dl>")  # fmt: skip
    for title_text, path in (lead or {}).items():
        parts += [f"<h2>{html.escape(title_text)}</h2>", _img(title_text, path, lead=True)]
    parts.append(f"<p>{html.escape(made_by)} Mean ± sample standard deviation over seeds, "
                 "n = 3 unless shown; the glossary at the end says what each column means.</p>")
    for title_text, table in tables.items():
        flat = table.reset_index()
        flat.columns.name = None
        body = flat.to_html(index=False, border=0)
        body = body.replace("<table", f"<table data-table='{html.escape(title_text)}'", 1)
        if all_hundred(table):  # nothing to read but 100s: one line, open on a click
            parts.append(f"<details data-folded><summary>{html.escape(title_text)}: every cell "
                         f"100 (click to show)</summary>{body}</details>")
        else:
            parts += [f"<h2>{html.escape(title_text)}</h2>", body]
    for title_text, path in figs.items():
        parts += [f"<h2>{html.escape(title_text)}</h2>", _img(title_text, path)]
    parts.append("<h2>Glossary</h2><dl class='summary'>" + "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in GLOSSARY.items())
        + "</dl>")  # fmt: skip
    parts.append(
        "<script>window.addEventListener('load', () => {"
        "const imgs = [...document.querySelectorAll('img[data-figure]')];"
        "document.body.dataset.figures = imgs.length;"
        "document.body.dataset.figuresLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0)"
        ".length;"
        "document.body.dataset.tables = document.querySelectorAll('table[data-table]').length;"
        "document.body.dataset.folded = document.querySelectorAll('details[data-folded]').length;"
        "const lead = document.querySelector('img[data-lead]');"
        "if (lead) document.body.dataset.leadOnFirstScreen ="
        " lead.getBoundingClientRect().top < window.innerHeight ? 1 : 0;"
        "});</script></body></html>"
    )
    return "\n".join(parts)
