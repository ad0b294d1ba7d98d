"""The same cells under two or more regimes, side by side: does each strategy's change from
No Mixing hold, vanish, flip or appear as the regime moves toward the paper's (more facts a
stage, so more optimizer steps; a lower learning rate)?

Fed by runs that rows.separate_regimes tagged, e.g. `factmem report
docs/results/regime-strategies docs/results/cells-popqa --paper remix`. Each regime's cells are
scored exactly as a one-regime report scores them (paired.paired_rows, paired.paper_vs_ours):
this module only lines them up and names the movement."""

from __future__ import annotations

import pandas as pd

from factmem.records import FACT_STATUSES
from factmem.regime_map import REGIME_TAG
from factmem.report.paired import BASELINE, forest_rows, paired_rows, paper_vs_ours
from factmem.report.rows import distinct_values, model_titles, ordered_pairs, regime_text
from factmem.stats import mean_std_text

CONTRAST_TITLE = "As the regime moves toward the paper's: each strategy's Δ vs No Mixing per regime"
ESTABLISHED = ("higher", "lower")


def split_regimes(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """[(regime label, its runs with the regime taken out of the variant)], ordered toward
    the paper's regime (facts ascending, then learning rate descending); empty unless the
    runs' variants name two regimes or more (rows.separate_regimes)."""
    parts: dict[tuple, list[int]] = {}
    variants = {}
    for index, (facts, lr, variant) in zip(runs.index, runs[["facts", "learning_rate",
                                                               "variant"]].itertuples(index=False),
                                           strict=True):  # fmt: skip
        regime = regime_text(facts, lr)
        if variant != regime and not variant.endswith(", " + regime):
            continue
        variants[index] = variant[: -len(regime)].removesuffix(", ")
        parts.setdefault((facts, -lr), []).append(index)
    if len(parts) < 2:
        return []
    return [(regime_text(facts, -neg_lr).removeprefix(REGIME_TAG),
             runs.loc[indices].assign(variant=[variants[i] for i in indices]))
            for (facts, neg_lr), indices in sorted(parts.items())]  # fmt: skip


def scored_regimes(runs: pd.DataFrame, published: pd.DataFrame | None = None
                   ) -> list[tuple[str, pd.DataFrame, pd.DataFrame, pd.DataFrame | None]]:
    """[(regime label, its paper's-cell runs, paired_rows, paper_vs_ours or None)]: each
    regime scored once (a seeded bootstrap per cell), for the table and the figure alike."""
    scored = []
    for label, part in split_regimes(runs):
        part = part[part["variant"] == ""]
        paired = paired_rows(part)
        versus = paper_vs_ours(part, published, paired) if published is not None else None
        scored.append((label, part, paired, versus))
    return scored


def movement(first: str, last: str) -> str:
    """Our paired verdict at the first regime against the one nearest the paper's."""
    if first in ESTABLISHED and last in ESTABLISHED:
        return "holds" if first == last else "flips"
    if first in ESTABLISHED:
        return "vanishes"
    if last in ESTABLISHED:
        return "appears"
    return "not established at either"


def _status_text(part: pd.DataFrame, strategy: str) -> str:
    """kept / hidden / lost D_A facts of a strategy's runs, summed over seeds; empty for runs
    scored before fact scores were recorded."""
    counts = [c for c in part.loc[part["strategy"] == strategy, "da_status"] if c]
    if not counts:
        return ""
    return " / ".join(str(sum(c[s] for c in counts)) for s in FACT_STATUSES)


def regime_contrast(runs: pd.DataFrame, published: pd.DataFrame | None = None,
                    scored: list | None = None) -> pd.DataFrame:
    """One row a cell (the paper's cells: runs without another variant) that two regimes or
    more have: per regime, our Δ from No Mixing with its seed-level 95% interval and our
    verdict (against the paper's Δ when `published`), kept / hidden / lost; then how the
    verdict moves from the first regime to the last (movement). No Mixing's own row shows
    its retention per regime. `scored`: scored_regimes of these runs, when the caller has it."""
    regimes = scored_regimes(runs, published) if scored is None else scored
    if not regimes:
        return pd.DataFrame()
    cells: dict[tuple, dict] = {}
    for label, part, paired, versus in regimes:
        versus = versus.set_index(["D_A", "D_B", "strategy"]) if versus is not None else None
        paired = paired.set_index(["d_a", "d_b", "strategy"]) if not paired.empty else None
        for (d_a, d_b, strategy), of_cell in part.groupby(["d_a", "d_b", "strategy"],
                                                          sort=False):  # fmt: skip
            row = cells.setdefault((d_a, d_b, strategy), {"regimes": {}})
            paper = (versus.loc[(d_a, d_b, strategy)] if versus is not None
                     and (d_a, d_b, strategy) in versus.index else None)  # fmt: skip
            if paper is not None:
                row["paper"], row["paper Δ"] = paper["paper"], paper["paper Δ"]
            status = _status_text(of_cell, strategy)
            if strategy == BASELINE:
                ours = mean_std_text((of_cell["da_final"].astype(float) * 100).tolist())
                row["regimes"][label] = (f"kept {ours}", "", "", status)  # ours says its n
                continue
            if paired is None or (d_a, d_b, strategy) not in paired.index:
                continue
            ours = paired.loc[(d_a, d_b, strategy)]
            text = f"{ours['difference']:+.1f} [{ours['seed low']:+.1f}, {ours['seed high']:+.1f}]"
            if ours["seeds"] != 3:
                text += f" (n={ours['seeds']})"
            against = paper["verdict"] if paper is not None and paper["verdict"] else ""
            row["regimes"][label] = (text, ours["verdict"], against, status)
    labels = [label for label, *_ in regimes]
    rows = []
    for (d_a, d_b, strategy), row in cells.items():
        present = [label for label in labels if label in row["regimes"]]
        if len(present) < 2:
            continue
        out = {"D_A": d_a, "D_B": d_b, "strategy": strategy, "paper": row.get("paper", ""),
               "paper Δ": row.get("paper Δ", "")}
        for label in labels:
            text, _, against, status = row["regimes"].get(label, ("", "", "", ""))
            out[f"Δ [seeds resampled] @ {label}"] = text
            out[f"vs paper @ {label}"] = against
            out[f"kept / hidden / lost @ {label}"] = status
        first, last = (row["regimes"][present[0]][1], row["regimes"][present[-1]][1])
        out["as the regime moves"] = "" if strategy == BASELINE else movement(first, last)
        rows.append(out)
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    front = ["D_A", "D_B", "strategy"]
    table = table.loc[:, (table != "").any(axis=0) | table.columns.isin(front)]  # no empty column
    order = ordered_pairs(zip(table["D_A"], table["strategy"], strict=True))
    table["_rank"] = [(r.D_A, r.D_B, order.index((r.D_A, r.strategy)))
                      for r in table.itertuples()]  # fmt: skip
    return table.sort_values("_rank").drop(columns="_rank").set_index(["D_A", "D_B", "strategy"])


def regime_forest_rows(runs: pd.DataFrame, published: pd.DataFrame,
                       scored: list | None = None) -> pd.DataFrame:
    """forest_rows of each regime, a cell's regimes next to each other (labelled by regime),
    for the page's lead figure when a report sets regimes side by side: only the cells that
    two regimes or more have (the others are in the tables)."""
    frames = []
    regimes = scored_regimes(runs, published) if scored is None else scored
    for order, (label, _, paired, versus) in enumerate(regimes):
        rows = forest_rows(versus, paired) if not versus.empty else pd.DataFrame()
        if not rows.empty:
            frames.append(rows.assign(regime=order, position=range(len(rows)),
                                      cell=rows["cell"] + f" @ {label}"))  # fmt: skip
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    rows["base"] = rows["cell"].str.replace(r" @ .*$", "", regex=True)
    rows = rows[rows.groupby("base")["regime"].transform("nunique") > 1]  # the contrast only
    first = {cell: i for i, cell in reversed(list(enumerate(rows["base"])))}
    rows = rows.assign(first=rows["base"].map(first)).sort_values(["first", "regime"])
    return rows.drop(columns=["regime", "position", "base", "first"]).reset_index(drop=True)


def regimes_setting_text(runs: pd.DataFrame) -> str:
    """Our model, then each regime with its own number of seeds (a partial grid has fewer)."""
    model = model_titles(distinct_values(runs, "model"))
    parts = [f"{label}: {part['seed'].nunique()} seed(s)" for label, part in split_regimes(runs)]
    return f"ours: {model}; " + "; ".join(parts)
