"""The report's tables, laid out like the paper's, and their registry of stable file names."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from factmem.records import FACT_STATUSES
from factmem.regime_map import D_B_LOSS_BELOW
from factmem.report.paired import (
    BASELINE,
    d_b_rows,
    direction_verdict,
    paired_rows,
    paper_d_b_difference,
    twins,
)
from factmem.report.rows import db_group, ordered_pairs, row_label, row_labels
from factmem.stats import mean_std_text


def aggregate(runs: pd.DataFrame, value: str = "da_final") -> pd.DataFrame:
    """Seeds -> mean, std, n (in %) per (D_A, strategy, variant, D_B)."""
    keys = ["d_a", "strategy", "variant", "d_b"]
    grouped = runs.dropna(subset=[value]).groupby(keys, sort=False)[value]
    out = grouped.agg(["mean", "std", "count"]).reset_index()
    out["mean"] *= 100
    out["std"] = (out["std"] * 100).fillna(0.0)
    return out.rename(columns={"count": "n"})


def cell_text(mean: float, std: float, n: int) -> str:
    """`mean ± std`; a single run has no spread to show (`(n=1)`, never `± 0.0`)."""
    if n == 1:
        return f"{mean:.1f} (n=1)"
    return f"{mean:.1f} ± {std:.1f}" + (f" (n={n})" if n != 3 else "")


def paper_table(runs: pd.DataFrame, value: str = "da_final") -> pd.DataFrame:
    """Rows (D_A, strategy), columns D_B (factoid sets first), cells `mean ± std`, plus
    the average of the cell means over factoid and over non-factoid D_B, as the paper."""
    cells = aggregate(runs, value)
    cells["row"] = row_labels(cells)
    cells["text"] = [
        cell_text(m, s, n) for m, s, n in zip(cells["mean"], cells["std"], cells["n"], strict=True)
    ]
    columns = sorted(cells["d_b"].unique(), key=lambda d: (db_group(d) != "factoid", d))
    rows = ordered_pairs(cells[["d_a", "row"]].drop_duplicates().itertuples(index=False))
    wide = cells.pivot(index=["d_a", "row"], columns="d_b", values="text").reindex(rows)
    means = cells.pivot(index=["d_a", "row"], columns="d_b", values="mean").reindex(rows)
    wide = wide[columns].fillna("")
    for group in ("factoid", "non-factoid"):
        members = [c for c in columns if db_group(c) == group]
        if len(members) >= 2 or (members and len(members) < len(columns)):
            wide[f"avg {group}"] = (
                means[members].mean(axis=1).map(lambda m: "" if pd.isna(m) else f"{m:.1f}")
            )
    wide.index.names = ["D_A", "strategy"]
    wide.columns.name = "D_B"
    return wide


def stage_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows (D_A, strategy, later sets), columns `after stage k`: forgetting stage by stage."""
    runs = runs.assign(strategy=row_labels(runs))
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
    runs = runs.assign(strategy=row_labels(runs))
    rows = []
    for (d_a, strategy, d_b), part in runs.groupby(["d_a", "strategy", "d_b"], sort=False):
        row = {"D_A": d_a, "strategy": strategy, "later stages": d_b, "n": len(part)}
        for column, title in (("avg_final", "avg final acc"), ("bwt", "BWT"),
                              ("forgetting", "forgetting")):  # fmt: skip
            row[title] = mean_std_text((part[column].dropna().astype(float) * 100).tolist())
        rows.append(row)
    return pd.DataFrame(rows).set_index(["D_A", "strategy", "later stages"])


def paired_table(runs: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """paired_rows as text, one row per (D_A, D_B, strategy)."""
    rows = paired_rows(runs, baseline)
    if rows.empty:
        return rows
    out = pd.DataFrame({
        "D_A": rows["d_a"], "D_B": rows["d_b"],
        "strategy": row_labels(rows),
        "seeds": rows["seeds"], "facts": rows["facts"],
        f"Δ vs {baseline} (points)": rows["difference"].map(lambda d: f"{d:+.1f}"),
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
        out[f"left out (no {baseline} twin with the same facts)"] = rows["unpaired seeds"]
    if rows["trained apart"].any():  # pairs that do not start from one model are named
        out["seeds whose shared stage 1 was trained apart"] = rows["trained apart"]
    return out.set_index(["D_A", "D_B", "strategy"])


CONTROLS_TITLE = ("D_A after the last stage: each strategy minus a control (`--versus`), "
                  "fact by fact")


def controls_table(runs: pd.DataFrame, controls: Sequence[str]) -> pd.DataFrame:
    """Each strategy against each control named by `--versus` (e.g. Plain 3x steps, a D_B
    trained alone for a mixed stage's steps; or Replay 0.1 against REMIX), fact by fact, as
    the No Mixing table is: whether a strategy's change is its own or the control's."""
    parts = []
    for control in controls:
        table = paired_table(runs, control)
        if not table.empty:
            parts.append(table.rename(columns=lambda c, name=control: c.replace(name, "control"))
                         .assign(control=control).set_index("control", append=True))
    return pd.concat(parts) if parts else pd.DataFrame()


D_B_TITLE = ("D_A after the last stage: a non-factoid D_B minus a factoid D_B, same strategy, "
             "fact by fact (the paper's Table 1 claim)")


def d_b_table(runs: pd.DataFrame, paper: pd.DataFrame | None = None,
              found: pd.DataFrame | None = None) -> pd.DataFrame:  # fmt: skip
    """d_b_rows as text, with the paper's difference of the same two cells (where it prints
    both) and whether our established direction is its sign: the paper finds factoid D_B
    forgets more (Table 1's averages), but not in every cell (PopQA: EntQ 57.8, GSM8K 19.0).
    The non-factoid D_B's training loss in its last epoch sits beside it: a D_B that was not
    learned forgets less for that reason alone. `found`: d_b_rows of the runs, when the
    caller has them already (a seeded bootstrap per row: done once)."""
    rows = d_b_rows(runs) if found is None else found
    if rows.empty:
        return rows
    out = []
    for r in rows.to_dict("records"):
        high, low = r["non-factoid"], r["factoid"]
        delta, table = (paper_d_b_difference(paper, r["d_a"], r["strategy"], high, low)
                        if not r["variant"] else ("", ""))  # fmt: skip
        row = {
            "D_A": r["d_a"], "strategy": row_label(r["strategy"], r["variant"]),
            "non-factoid - factoid D_B": f"{high} - {low}",
            "seeds": r["seeds"], "facts": r["facts"], "Δ (points)": f"{r['difference']:+.1f}",
            "95% interval": f"[{r['low']:+.1f}, {r['high']:+.1f}]",
            "95% interval, seeds resampled": f"[{r['seed low']:+.1f}, {r['seed high']:+.1f}]",
            "kept only after non-factoid / factoid":
                f"{r['kept only with it']} / {r['kept only without']}",
            "p (McNemar)": f"{r['p (McNemar)']:.3g}", "ours": r["verdict"],
            "non-factoid D_B's last-epoch loss": _learned_text(r["non-factoid loss"]),
        }  # fmt: skip
        if paper is not None:
            verdict = direction_verdict(delta, r["verdict"])
            if not r["non-factoid loss"] < D_B_LOSS_BELOW and verdict != "not established":
                verdict += ", but D_B not learned"  # a direction that says little
            row |= {"paper Δ": delta, "paper table": table, "verdict": verdict}
        if rows["unpaired seeds"].any():  # seeds left out are shown, not hidden
            row["left out (a seed without both runs)"] = r["unpaired seeds"]
        if rows["trained apart"].any():
            row["seeds whose shared stage 1 was trained apart"] = r["trained apart"]
        out.append(row)
    return pd.DataFrame(out).set_index(["D_A", "strategy", "non-factoid - factoid D_B"])


def _learned_text(loss: float) -> str:
    """`0.012` or `0.399 (not learned)`: the regime map's rule for a non-factoid D_B."""
    if loss != loss:  # no loss recorded
        return "?"
    return f"{loss:.3g}" + ("" if loss < D_B_LOSS_BELOW else " (not learned)")


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


def kept_text(counts: list[int]) -> str:
    kept, facts = counts
    return f"{kept} / {facts} ({100 * kept / facts:.1f}%)" if facts else "-"


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
            "replayed facts kept": kept_text(replayed),
            "other facts kept": kept_text(others),
            "No Mixing, the same other facts": (kept_text(twins_kept) if twins_kept[1]
                                                else "no twin"),
        })  # fmt: skip
    table = pd.DataFrame(rows)
    return table.set_index(["D_A", "D_B", "strategy"]) if not table.empty else table


STATUS_TITLE = ("D_A after the last stage: facts kept (exact match), hidden (gold in the "
                "output, or its first token ranked 1) or lost, summed over seeds")


def status_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Kept / hidden / lost D_A facts per cell (records.fact_status), over the runs scored
    with fact scores; a hidden fact is one exact match calls lost but the model still has."""
    runs = runs[runs["da_status"].map(bool)]
    rows = []
    for (d_a, d_b, label), part in runs.assign(label=row_labels(runs)).groupby(
            ["d_a", "d_b", "label"], sort=False):  # fmt: skip
        total = {s: sum(c[s] for c in part["da_status"]) for s in FACT_STATUSES}
        facts = sum(total.values())
        rows.append({"D_A": d_a, "D_B": d_b, "strategy": label, "seeds": len(part),
                     **{s: f"{n} ({100 * n / facts:.1f}%)" for s, n in total.items()}})
    table = pd.DataFrame(rows)
    return table.set_index(["D_A", "D_B", "strategy"]) if rows else table


CURVE_EPOCHS = (0, 1, 2, 3, 5, 10, 15, 20, 30, 40)


def curve_points(part: pd.DataFrame):
    """The runs' forgetting curves, grouped by epoch (rounded: seeds' epochs line up)."""
    points = pd.DataFrame([p for c in part["curve"] for p in c], columns=["epoch", "v"])
    return points.assign(epoch=points["epoch"].round(2)).groupby("epoch")["v"]


def curve_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The forgetting curves as numbers: D_A (%, mean over seeds) during the last stage at
    a few epochs, and the first epoch at which it is 0 (the figure shows every point)."""
    rows = []
    runs = runs[runs["curve"].map(len) > 0]
    for (d_a, d_b, label), part in runs.assign(label=row_labels(runs)).groupby(
            ["d_a", "d_b", "label"], sort=False):  # fmt: skip
        means = curve_points(part).mean() * 100
        row = {"D_A": d_a, "D_B": d_b, "strategy": label, "seeds": len(part)}
        row |= {f"epoch {e:g}": f"{means[e]:.1f}" for e in CURVE_EPOCHS if e in means.index}
        zero = means[means == 0]
        row["first epoch at 0%"] = f"{zero.index[0]:g}" if len(zero) else "never"
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.set_index(["D_A", "D_B", "strategy"]).fillna("") if rows else table


LOSS_TITLE = "The last stage's training loss in its last epoch (non-factoid D_B: no exact match)"


CURVE_TITLE = "D_A during the last stage (%), from evaluation.curve_every_steps"


def loss_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The last stage's training loss over its last epoch, mean ± std over seeds: a
    non-factoid D_B has no exact match, and this is what says it was learned."""
    rows = []
    runs = runs.dropna(subset=["last_loss"])
    for (d_a, d_b, label), part in runs.assign(label=row_labels(runs)).groupby(
            ["d_a", "d_b", "label"], sort=False):  # fmt: skip
        losses = part["last_loss"].astype(float)
        text = f"{losses.mean():.3g}" + (f" ± {losses.std():.2g}" if len(losses) > 1 else "")
        rows.append({"D_A": d_a, "D_B": d_b, "strategy": label, "seeds": len(part),
                     "training loss, last epoch": text})  # fmt: skip
    if not rows:
        return pd.DataFrame(rows)
    pairs = ordered_pairs((r["D_A"], r["strategy"]) for r in rows)
    order = {pair: i for i, pair in enumerate(pairs)}
    d_as = list(dict.fromkeys(r["D_A"] for r in rows))
    rows = sorted(rows, key=lambda r: (d_as.index(r["D_A"]), r["D_B"],
                                       order[r["D_A"], r["strategy"]]))  # fmt: skip
    return pd.DataFrame(rows).set_index(["D_A", "D_B", "strategy"])


def to_markdown(table: pd.DataFrame) -> str:
    flat = table.reset_index()
    return flat.to_markdown(index=False, disable_numparse=True)


def to_latex(table: pd.DataFrame, caption: str) -> str:
    flat = table.reset_index().map(lambda v: str(v).replace("±", r"$\pm$"))
    return flat.to_latex(index=False, caption=caption, escape=False,
                         column_format="ll" + "r" * (flat.shape[1] - 2))  # fmt: skip
