"""The regime map (configs/grids/regime-map.yaml): No Mixing's D_A retention over facts per
stage x learning rate, and the regime point that a rule fixed before the runs picks.

A module of its own because the rule is part of the experiment's record: the grid file states
it in words before any run, this file applies it to the archived runs, and a test holds the
two together (tests/test_regime_map.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from factmem.records import FACT_STATUSES

MAP_TITLE = "Regime map: No Mixing over facts per stage x learning rate (seed-mean, %)"
HEAT_TITLE = "Regime map: D_A retention after stage 2, No Mixing"
# The rule, as configs/grids/regime-map.yaml writes it: a point is usable when stage 1
# memorised D_A, stage 2 learned D_B, and retention leaves room to move either way.
STAGE1_AT_LEAST = 0.95
D_B_AT_LEAST = 0.95
RETENTION_ABOVE, RETENTION_BELOW = 0.10, 0.90
# A non-factoid D_B (GSM8K) has no exact match: "learned" is its last epoch's mean training
# loss below this, the rule kvr-floor fixed before its runs (configs/grids/kvr-floor.yaml).
# Amendment to the map's rule, written in the grid file after its first KVR -> GSM8K run.
D_B_LOSS_BELOW = 0.05
# How report.rows.separate_regimes names a run's regime in its variant when a report sets
# grids of different regimes side by side: such runs are not a map (no rule was fixed for them).
REGIME_TAG = "regime="


def map_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The two-stage No Mixing runs of a grid with a `facts` axis (a map, also while only
    part of it has run), or of runs that vary both facts and learning rate; otherwise an
    empty frame."""
    plain = runs[(runs["stages"] == 2) & (runs["strategy"] == "No Mixing")]
    plain = plain[~plain["variant"].str.contains(REGIME_TAG, regex=False)]
    on_axis = plain["variant"].str.contains(r"(?:^|, )facts=", regex=True)
    if on_axis.any():
        return plain[on_axis]
    if plain["facts"].nunique() < 2 or plain["learning_rate"].nunique() < 2:
        return plain.iloc[0:0]
    return plain


def why_unusable(da_first: float, db_final: float | None, da_final: float,
                 db_loss: float | None = None) -> list[str]:  # fmt: skip
    """The rule's conditions a point fails (empty: usable). `db_loss`: the last stage's
    last-epoch training loss, what says "learned" for a D_B without exact match."""
    failed = []
    if da_first < STAGE1_AT_LEAST:
        failed.append(f"stage 1 did not memorise (D_A {100 * da_first:.0f}% < "
                      f"{100 * STAGE1_AT_LEAST:.0f}%)")  # fmt: skip
    if db_final is None:
        if db_loss is None or not db_loss < D_B_LOSS_BELOW:
            shown = "no loss recorded" if db_loss is None else f"loss {db_loss:.3g}"
            failed.append(f"D_B not learned ({shown}, not < {D_B_LOSS_BELOW:g})")
    elif db_final < D_B_AT_LEAST:
        failed.append(f"D_B not learned ({100 * db_final:.0f}% < {100 * D_B_AT_LEAST:.0f}%)")
    if not RETENTION_ABOVE < da_final < RETENTION_BELOW:
        failed.append(f"retention {100 * da_final:.0f}% outside "
                      f"({100 * RETENTION_ABOVE:.0f}%, {100 * RETENTION_BELOW:.0f}%)")  # fmt: skip
    return failed


def map_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (pair, facts, learning rate): seed means of D_A after stage 1, D_B and D_A
    after stage 2, optimizer steps per stage, kept/hidden/lost, and the rule's verdict."""
    plain = map_runs(runs)
    rows = []
    for (d_a, d_b, db_size, facts, lr), part in plain.groupby(
            ["d_a", "d_b", "db_size", "facts", "learning_rate"], dropna=False):  # fmt: skip
        da_first, da_final = part["da_first"].mean(), part["da_final"].mean()
        db = part["db_final"].dropna()
        db_final = db.mean() if len(db) else None
        losses = part["last_loss"].dropna() if "last_loss" in part else []
        db_loss = float(losses.mean()) if len(losses) else None
        statuses = [s for s in part["da_status"] if s]
        steps = [s for s in part["steps_by_stage"] if s]
        failed = why_unusable(da_first, db_final, da_final, db_loss)
        rows.append({
            "pair": f"{d_a} -> {d_b}", "db_size": db_size, "facts": int(facts),
            "learning_rate": float(lr),
            "seeds": len(part),
            "steps": " + ".join(str(round(sum(s[i] for s in steps) / len(steps)))
                                for i in range(2)) if steps else "?",
            "da_first": da_first, "db_final": db_final, "db_loss": db_loss,
            "da_final": da_final,
            **{s: sum(c[s] for c in statuses) if statuses else None for s in FACT_STATUSES},
            "usable": not failed, "why": "; ".join(failed),
        })  # fmt: skip
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["pair"] = _pair_labels(table)
    table["chosen"] = False
    for index in chosen_points(table).values():
        if index is not None:
            table.loc[index, "chosen"] = True
    return table


def _pair_labels(rows: pd.DataFrame) -> list[str]:
    """`d_a -> d_b`, or `d_a -> d_b (D_B 32)` where the pair's D_B size does not follow the
    facts axis (KVR -> GSM8K holds GSM8K at a fixed number of examples): two D_B sizes are
    two pairs of the map, each with its own chosen point, never pooled as seeds."""
    follows = {pair: (part["db_size"] == part["facts"]).all()
               for pair, part in rows.groupby("pair", sort=False)}  # fmt: skip
    return [pair if follows[pair] else f"{pair} (D_B {int(size)})"
            for pair, size in zip(rows["pair"], rows["db_size"], strict=True)]  # fmt: skip


def chosen_points(rows: pd.DataFrame) -> dict[str, int | None]:
    """{pair: index of its chosen row, or None}: among the usable points, the nearest to the
    paper's regime: most facts per stage (most optimizer steps) first, then the lowest
    learning rate."""
    chosen: dict[str, int | None] = {}
    for pair, part in rows.groupby("pair", sort=False):
        usable = part[part["usable"]]
        if usable.empty:
            chosen[pair] = None
            continue
        chosen[pair] = usable.sort_values(["facts", "learning_rate"],
                                          ascending=[False, True]).index[0]  # fmt: skip
    return chosen


def chosen_text(rows: pd.DataFrame) -> str:
    """The rule's answer per pair, in words, for the report's first screen: the chosen point,
    or that none of the points run is usable (the pair's No Mixing regime is not found on
    this map; for KVR -> GSM8K, its floor is not lifted)."""
    parts = []
    for pair, index in chosen_points(rows).items():
        if index is None:
            parts.append(f"{pair}: none of its {int((rows['pair'] == pair).sum())} points run "
                         "is usable")  # fmt: skip
        else:
            row = rows.loc[index]
            parts.append(f"{pair}: {row['facts']} facts, learning rate {row['learning_rate']:g}")
    return "; ".join(parts)


def map_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The map as the report prints it (percentages)."""
    def pct(value: float | None) -> str:
        return "-" if value is None or value != value else f"{100 * value:.1f}"

    def counts(row) -> str:
        if row["kept"] is None or row["kept"] != row["kept"]:
            return "-"
        return " / ".join(str(int(row[s])) for s in FACT_STATUSES)

    table = pd.DataFrame({
        "pair": rows["pair"], "facts": rows["facts"],
        "learning rate": rows["learning_rate"].map(lambda v: f"{v:g}"),
        "steps (stage 1 + 2)": rows["steps"],
        "D_A after stage 1": rows["da_first"].map(pct),
        "D_B after stage 2": [pct(d) if d is not None and d == d else
                              ("-" if loss is None or loss != loss else f"loss {loss:.3g}")
                              for d, loss in zip(rows["db_final"], rows["db_loss"],
                                                 strict=True)],  # fmt: skip
        "D_A after stage 2": rows["da_final"].map(pct),
        "kept / hidden / lost": rows.apply(counts, axis=1),
        "rule": [("CHOSEN" if c else "usable") if u else w
                 for u, c, w in zip(rows["usable"], rows["chosen"], rows["why"], strict=True)],
    })  # fmt: skip
    return table.set_index(["pair", "facts", "learning rate"])


def heat_map(rows: pd.DataFrame, path: Path) -> Path:
    """One panel per pair: facts (rows, most at the top) x learning rate (columns, the paper's
    5e-5 at the right), colour = D_A retention after stage 2; the text gives D_A and D_B; a
    thick frame marks the chosen point, a cross a point the rule rejects, grey a point not
    run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from factmem.report.figures import save_figure  # one savefig routine (atomic)

    pairs = list(dict.fromkeys(rows["pair"]))
    facts = sorted(rows["facts"].unique(), reverse=True)
    rates = sorted(rows["learning_rate"].unique(), reverse=True)
    size = (2.2 + 3.0 * len(pairs) * max(len(rates), 2) / 3, 1.6 + 0.9 * len(facts))
    fig, axes = plt.subplots(1, len(pairs), figsize=size, squeeze=False)
    for ax, pair in zip(axes[0], pairs, strict=True):
        part = rows[rows["pair"] == pair].set_index(["facts", "learning_rate"])
        grid = [[part["da_final"].get((f, r), float("nan")) * 100 for r in rates] for f in facts]
        image = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        for i, f in enumerate(facts):
            for j, r in enumerate(rates):
                if (f, r) not in part.index:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, color="0.85"))
                    ax.text(j, i, "not run", ha="center", va="center", fontsize=7)
                    continue
                row = part.loc[(f, r)]
                db = (f"{100 * row['db_final']:.0f}" if row["db_final"] is not None
                      and row["db_final"] == row["db_final"] else
                      f"loss {row['db_loss']:.2f}" if row["db_loss"] is not None else "-")
                text = (f"D_A {100 * row['da_final']:.0f}\nD_B {db}\n"
                        f"s1 {100 * row['da_first']:.0f}")  # fmt: skip
                colour = "white" if row["da_final"] < 0.6 else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
                if row["chosen"]:
                    ax.add_patch(Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, fill=False,
                                           lw=3, edgecolor="red"))  # fmt: skip
                elif not row["usable"]:
                    ax.plot([j - 0.45, j + 0.45], [i - 0.45, i + 0.45], color="0.6", lw=0.6)
        ax.set_xticks(range(len(rates)), [f"{r:g}" for r in rates])
        ax.set_yticks(range(len(facts)), [str(f) for f in facts])
        ax.set_xlabel("learning rate (paper: 5e-05)")
        ax.set_ylabel("facts per stage (batch 32)")
        ax.set_title(pair, fontsize=9)
    fig.colorbar(image, ax=axes[0][-1], label="D_A after stage 2 (%)")
    fig.suptitle("No Mixing; red frame: the chosen point; cross: rejected by the rule; "
                 "s1: D_A after stage 1", fontsize=8)  # fmt: skip
    return save_figure(fig, path)
