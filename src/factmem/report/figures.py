"""The report's figures (matplotlib, written atomically)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd

from factmem.report.rows import ordered_pairs, row_labels
from factmem.report.tables import aggregate, curve_points

FOREST_TITLE = "The answer: our change from No Mixing beside the paper's, cell by cell"


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
    cells["label"] = row_labels(cells)
    sets = list(dict.fromkeys(cells["d_a"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(5 + 3 * len(sets), 4), squeeze=False)
    for ax, d_a in zip(axes[0], sets, strict=True):
        part = cells[cells["d_a"] == d_a]
        d_bs = list(dict.fromkeys(part["d_b"]))
        labels = [row for _, row in ordered_pairs(part[["d_a", "label"]].itertuples(index=False))]
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
    return save_figure(fig, path)


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
    return save_figure(fig, path)


def _retention_curves(runs: pd.DataFrame, path: Path) -> Path:
    """D_A exact match vs stage-2 epoch (comparable across mixtures of different sizes),
    mean over seeds, one line per (strategy, D_B)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    runs = runs.assign(strategy=row_labels(runs))  # variants (e.g. two learning rates) apart
    for (d_a, d_b, strategy), part in runs.groupby(["d_a", "d_b", "strategy"], sort=False):
        stats = curve_points(part).agg(["mean", "std"]).fillna(0.0) * 100
        ax.plot(stats.index, stats["mean"], marker=".", label=f"{strategy}: {d_a} -> {d_b}")
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                        alpha=0.15)  # fmt: skip
    ax.set_xlabel("stage-2 epoch")
    ax.set_ylabel("D_A exact match (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


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
    return save_figure(fig, path)


def forest_plot(rows: pd.DataFrame, setting: str, path: Path) -> Path:
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
    across = rows["cell"].str.contains(" D_B, ").any()  # paired.d_b_forest_rows
    ax.set_xlabel("D_A after stage 2: change from No Mixing (points)"
                  + ("\n'X - Y D_B' rows: D_A after D_B X minus after D_B Y" if across else ""))
    fig.suptitle(textwrap.fill(setting, 120), fontsize=9)  # whole, over the figure's width
    ax.set_ylim(-0.8, len(rows) - 0.2 + 0.9)  # room above the top row for the legend
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=1,
              frameon=False)  # fmt: skip
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
