"""Paired statistics: each strategy against its No Mixing twin, and the paper's numbers beside
ours (the verdict agrees / disagrees)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from factmem.errors import FactmemError
from factmem.report.rows import db_group, ordered_pairs, trained_apart
from factmem.stats import mean_std_text, paired_difference

BASELINE = "No Mixing"


# The paper's own no-mixing row in each table: Table 4 (replay) ran a separate one and
# names it "Replay 0.0" (its cells differ slightly from Table 2's No Mixing).
PAPER_BASELINES = (BASELINE, "Replay 0.0")


def twins(runs: pd.DataFrame, baseline_strategy: str = BASELINE
          ) -> dict[tuple, list[tuple[Any, Any]]]:  # fmt: skip
    """{(D_A, D_B, variant, strategy): [(run, its No Mixing twin or None), ...]}: every run of
    a strategy beside the No Mixing run (or `baseline_strategy`'s: a control, `--versus`) of
    the same D_A, D_B, variant and seed, in the order the runs come. The one pairing every
    paired table uses."""
    pairs: dict[tuple, list[tuple[Any, Any]]] = {}
    for (d_a, d_b, variant), part in runs.groupby(["d_a", "d_b", "variant"], sort=False):
        baseline = {r.seed: r for r in part.itertuples() if r.strategy == baseline_strategy}
        if baseline_strategy != BASELINE and not baseline:
            continue  # a control that this cell did not run
        # against a control, No Mixing is left out too: the main table has it, sign reversed
        for run in part[~part["strategy"].isin({baseline_strategy, BASELINE})].itertuples():
            pairs.setdefault((d_a, d_b, variant, run.strategy), []).append(
                (run, baseline.get(run.seed)))
    return pairs


def paired_rows(runs: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """Every strategy against No Mixing (or `baseline`, a control) of the same D_A, D_B,
    variant and seeds, fact by fact (D_A after the last stage): difference (points), 95%
    interval, McNemar p, verdict. Seeds without a twin, or whose facts differ, are left out
    (and counted)."""
    rows = []
    for (d_a, d_b, variant, strategy), runs_of in twins(runs, baseline).items():
        row = _pooled(runs_of)
        if row is not None:
            rows.append({"d_a": d_a, "d_b": d_b, "strategy": strategy, "variant": variant,
                         **row})
    return pd.DataFrame(rows)


def _pooled(runs_of: list[tuple[Any, Any]]) -> dict[str, Any] | None:
    """The fact-by-fact difference (first run minus its twin, D_A after the last stage) pooled
    over the seeds whose two runs scored the same facts; None when no seed did."""
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
        return None
    result = paired_difference(pairs)
    return {"seeds": result.seeds, "facts": result.facts,
            "difference": result.difference, "low": result.low,
            "high": result.high, "seed low": result.seed_low,
            "seed high": result.seed_high, "kept only with it": result.only_strategy,
            "kept only without": result.only_baseline,
            "p (McNemar)": result.p_value, "verdict": result.verdict,
            "unpaired seeds": unpaired, "trained apart": apart}  # fmt: skip


def d_b_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1 claim, fact by fact: for one D_A and strategy, D_A after a
    non-factoid D_B minus D_A after a factoid D_B, run against run of the same seed (both
    start from the one stage-1 model, so they score the same facts). Every (factoid,
    non-factoid) pair of D_B the runs hold; seeds missing either run are counted."""
    rows = []
    runs = runs.assign(group=runs["d_b"].map(db_group))
    for (d_a, variant, strategy), part in runs.groupby(["d_a", "variant", "strategy"],
                                                       sort=False):  # fmt: skip
        by_db = {d_b: {r.seed: r for r in cell.itertuples()}
                 for d_b, cell in part.groupby("d_b", sort=True)}  # fmt: skip
        groups = dict(zip(part["d_b"], part["group"], strict=True))
        for low in (d for d in by_db if groups[d] == "factoid"):
            for high in (d for d in by_db if groups[d] == "non-factoid"):
                runs_of = [(run, by_db[low].get(seed)) for seed, run in by_db[high].items()]
                row = _pooled(runs_of)
                if row is not None:
                    # was the non-factoid D_B learned? it has no exact match: its loss says
                    losses = [r.last_loss for r, twin in runs_of
                              if twin is not None and r.last_loss is not None]  # fmt: skip
                    rows.append({"d_a": d_a, "strategy": strategy, "variant": variant,
                                 "non-factoid": high, "factoid": low, **row,
                                 "non-factoid loss": sum(losses) / len(losses) if losses
                                 else float("nan")})  # fmt: skip
    order = ordered_pairs((r["d_a"], r["strategy"]) for r in rows)  # No Mixing first
    rows.sort(key=lambda r: (order.index((r["d_a"], r["strategy"])), r["variant"]))
    return pd.DataFrame(rows)


def paper_d_b_difference(paper: pd.DataFrame | None, d_a: str, strategy: str, high: str,
                         low: str) -> tuple[str, str]:
    """(the paper's D_A after `high` minus after `low`, its table) from the first table that
    prints both cells, never across tables; ("", "") when none does. A strategy's variant in
    parentheses (`-/Generic (state_union)`) is compared with the paper's strategy."""
    if paper is None:
        return "", ""
    strategy = re.sub(r" \(.*\)$", "", strategy)
    names = PAPER_BASELINES if strategy == BASELINE else (strategy,)
    cells = paper[(paper["d_a"] == d_a) & paper["strategy"].isin(names)]
    for table, part in cells.groupby("table", sort=False):
        values = part.drop_duplicates("d_b").set_index("d_b")["value"]
        if high in values.index and low in values.index:
            return f"{values[high] - values[low]:+.1f}", str(table)
    return "", ""


PAPER_FILES = {"remix": "remix-paper-tables.yaml"}  # shipped in factmem/reference/


def paper_numbers_path(name: str | Path) -> Path:
    """`remix` (the REMIX paper's Tables 2-6, shipped with factmem) or a YAML file."""
    if str(name) in PAPER_FILES:
        return Path(__file__).parents[1] / "reference" / PAPER_FILES[str(name)]
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
                row["verdict"] = direction_verdict(row["paper Δ"], ours["verdict"])
        rows.append(row)
    columns = ["D_A", "D_B", "strategy", "paper table", "paper model", "paper", "paper Δ", "ours",
               "ours Δ [95% interval]", "seeds resampled", "verdict"]  # fmt: skip
    order = ordered_pairs((r["D_A"], r["strategy"]) for r in rows)
    d_a_rank = {d_a: i for i, (d_a, _) in reversed(list(enumerate(order)))}
    rows.sort(key=lambda r: (d_a_rank[r["D_A"]], r["D_B"], order.index((r["D_A"], r["strategy"]))))
    return pd.DataFrame(rows, columns=columns)


def direction_verdict(paper_delta: str, ours: str) -> str:
    """Does our established direction match the paper's change from No Mixing?"""
    if ours == "not established":
        return "not established"
    if not paper_delta:  # the paper's table has no baseline cell to compare with
        return f"ours {ours}; paper Δ unknown"
    if float(paper_delta) == 0:
        return f"ours {ours}; paper: no change"
    paper_higher = float(paper_delta) > 0
    return "agrees" if paper_higher == (ours == "higher") else "disagrees"


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


def d_b_forest_rows(runs: pd.DataFrame, paper: pd.DataFrame,
                    found: pd.DataFrame | None = None) -> pd.DataFrame:  # fmt: skip
    """d_b_rows without a variant whose two cells the paper prints in one table, as
    forest_rows' rows: the paper's Table 1 claim (a non-factoid D_B minus a factoid one)
    beside its number. `found`: d_b_rows of the runs, when the caller has them already."""
    rows = []
    found = d_b_rows(runs) if found is None else found
    if found.empty:
        return pd.DataFrame()
    for r in found[found["variant"] == ""].to_dict("records"):
        delta, table = paper_d_b_difference(paper, r["d_a"], r["strategy"], r["non-factoid"],
                                            r["factoid"])  # fmt: skip
        if not delta:
            continue
        model = paper.loc[paper["table"] == table, "model"].iloc[0]
        rows.append({"cell": f"{r['d_a']}: {r['non-factoid']} - {r['factoid']} D_B, "
                             f"{r['strategy']}",
                     "paper": float(delta), "paper model": model,
                     **{k: float(r[k]) for k in ("difference", "low", "high", "seed low",
                                                 "seed high")}})  # fmt: skip
    return pd.DataFrame(rows)
