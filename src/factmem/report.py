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
import json
import logging
from pathlib import Path

import pandas as pd
import yaml

from factmem.config import ExperimentConfig, load_config
from factmem.data.registry import REGISTRY
from factmem.errors import FactmemError
from factmem.io import write_text_atomic

log = logging.getLogger(__name__)

NOT_STRATEGY_TAGS = {"strategy", "seed"}  # tags that are not part of a row's label
METRICS = ("avg_final", "bwt", "forgetting")


# ---------------------------------------------------------------- runs -> one row each


def collect_runs(runs_dir: Path) -> pd.DataFrame:
    """One row per finished run under `runs_dir` (any depth up to 3)."""
    rows = []
    result_files = sorted(
        p for depth in ("*", "*/*", "*/*/*") for p in runs_dir.glob(f"{depth}/results.json")
    )
    for results_file in result_files:
        run_dir = results_file.parent
        results = json.loads(results_file.read_text())
        if not results.get("finished"):
            log.info("skipping %s: not finished", run_dir)
            continue
        config = load_config(run_dir / "config.yaml")
        rows.append(run_row(run_dir, config, results))
    if not rows:
        raise FactmemError(f"no finished runs (results.json with finished: true) under {runs_dir}")
    return pd.DataFrame(rows)


def run_row(run_dir: Path, config: ExperimentConfig, results: dict) -> dict:
    """What the tables need of one run: its cell (D_A, strategy, D_B) and D_A's accuracies."""
    first = config.stage_name(0)
    later = [s.dataset for s in config.stages[1:]]
    da_by_stage = [r["accuracy"].get(first) for r in results["stages"]]
    last = results["stages"][-1]["accuracy"]
    mixing = [s.mixing for s in config.stages if s.mixing is not None]
    replay = [s.replay.fraction for s in config.stages if s.replay is not None]
    variant = ", ".join(
        f"{k}={v}" for k, v in config.tags.items()
        if k not in NOT_STRATEGY_TAGS and not k.endswith("dataset")
    )  # fmt: skip
    matrix = results.get("accuracy_matrix", {}).get("values")
    metrics = continual_metrics(matrix) if matrix else dict.fromkeys(METRICS)
    curve = [(p["epoch"], p[first]) for p in results["stages"][-1].get("curve", []) if first in p]
    return {
        "run": str(run_dir),
        "seed": config.seed,
        "d_a": config.stages[0].dataset,
        "d_b": " -> ".join(later) if later else "-",
        "stages": len(config.stages),
        "strategy": config.tags.get("strategy") or strategy_label(config),
        "variant": variant,
        "da_by_stage": da_by_stage,
        "da_first": da_by_stage[0],
        "da_final": da_by_stage[-1],
        "db_final": last.get(config.stage_name(len(config.stages) - 1)) if later else None,
        "ratio": mixing[0].ratio if mixing else None,
        "words": (mixing[0].words if mixing[0].source == "random_words" else mixing[0].prefix_words)
        if mixing
        else None,  # fmt: skip
        "replay": replay[0] if replay else None,
        "curve": curve,
        **metrics,
    }


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
    names = {"random_words": "Random", "generic": "Generic"}
    parts = [names[s.mixing.source] if s.mixing else "-" for s in config.stages]
    label = "/".join(parts) if any(p != "-" for p in parts) else ""
    replay = [s.replay.fraction for s in config.stages if s.replay is not None]
    if replay:
        label = f"Replay {replay[0]:g}" + (f" + {label}" if label else "")
    methods = []  # continual-learning baselines, in the order they act
    for stage in config.stages:
        if stage.lora is not None:
            methods.append(f"LoRA r{stage.lora.r}")
        if stage.regularizer is not None:
            name = {"l2": "L2", "ewc": "EWC", "lwf": "LwF"}[stage.regularizer.method]
            methods.append(f"{name} {stage.regularizer.strength:g}")
        if stage.weight_average is not None:
            methods.append(f"WiSE {stage.weight_average:g}")
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
    cells["row"] = cells["strategy"] + cells["variant"].map(lambda v: f" [{v}]" if v else "")
    cells["text"] = [
        f"{m:.1f} ± {s:.1f}" + (f" (n={n})" if n != 3 else "")
        for m, s, n in zip(cells["mean"], cells["std"], cells["n"], strict=True)
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
    rows = []
    for (d_a, strategy, d_b), part in runs.groupby(["d_a", "strategy", "d_b"], sort=False):
        row = {"D_A": d_a, "strategy": strategy, "later stages": d_b, "n": len(part)}
        for k in range(int(part["stages"].max())):
            values = pd.Series([v[k] if len(v) > k else None for v in part["da_by_stage"]],
                               dtype=float) * 100  # fmt: skip
            spread = values.std() if values.count() > 1 else 0.0
            row[f"after stage {k + 1}"] = f"{values.mean():.1f} ± {spread:.1f}"
        rows.append(row)
    return pd.DataFrame(rows).set_index(["D_A", "strategy", "later stages"])


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (D_A, strategy, later sets): average final accuracy, BWT and forgetting (%)."""
    rows = []
    for (d_a, strategy, d_b), part in runs.groupby(["d_a", "strategy", "d_b"], sort=False):
        row = {"D_A": d_a, "strategy": strategy, "later stages": d_b, "n": len(part)}
        for column, title in (("avg_final", "avg final acc"), ("bwt", "BWT"),
                              ("forgetting", "forgetting")):  # fmt: skip
            values = part[column].dropna().astype(float) * 100
            spread = values.std() if len(values) > 1 else 0.0
            row[title] = f"{values.mean():.1f} ± {spread:.1f}" if len(values) else ""
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


def paper_vs_ours(runs: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Our mean beside the paper's number for every cell both have, and whether the change
    from No Mixing has the same sign in both (the direction a small model can agree on)."""
    ours = aggregate(runs)
    ours = ours[ours["variant"] == ""]
    both = ours.merge(paper, on=["d_a", "d_b", "strategy"], how="inner")
    if both.empty:
        return both
    base_ours = ours[ours["strategy"] == "No Mixing"].set_index(["d_a", "d_b"])["mean"]
    base_paper = paper[paper["strategy"] == "No Mixing"].set_index(["d_a", "d_b"])["value"]

    def direction(row) -> str:
        key = (row["d_a"], row["d_b"])
        if row["strategy"] == "No Mixing" or key not in base_ours or key not in base_paper:
            return ""
        ours_delta = row["mean"] - base_ours[key]
        paper_delta = row["value"] - base_paper[key]
        agree = (ours_delta > 0) == (paper_delta > 0) if ours_delta and paper_delta else None
        return {True: "same", False: "opposite", None: "no change"}[agree]

    both["direction vs No Mixing"] = both.apply(direction, axis=1)
    return both.rename(columns={"mean": "ours", "value": "paper"})[
        ["d_a", "d_b", "strategy", "paper", "ours", "std", "n", "direction vs No Mixing", "table"]
    ]


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
    cells["label"] = cells["strategy"] + cells["variant"].map(lambda v: f" [{v}]" if v else "")
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
    axes[0][-1].legend(fontsize=8)
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
    for (d_a, d_b, strategy), part in runs.groupby(["d_a", "d_b", "strategy"], sort=False):
        points = pd.DataFrame([p for c in part["curve"] for p in c], columns=["epoch", "v"])
        stats = (
            points.assign(epoch=points["epoch"].round(2))
            .groupby("epoch")["v"]
            .agg(["mean", "std"])
            .fillna(0.0)
            * 100
        )
        ax.plot(stats.index, stats["mean"], marker=".", label=f"{strategy}: {d_a} -> {d_b}")
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                        alpha=0.15)  # fmt: skip
    ax.set_xlabel("stage-2 epoch")
    ax.set_ylabel("D_A exact match (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    return _save(fig, path)


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


def write_report(runs_dir: Path, out: Path | None = None, paper: Path | None = None) -> Path:
    """Tables (md, csv, tex), figures (png) and report.html under `out`; returns the page."""
    out = out or runs_dir / "report"
    runs = collect_runs(runs_dir)
    two_stage, multi = runs[runs["stages"] == 2], runs[runs["stages"] >= 3]
    tables = {}
    if not two_stage.empty:
        tables |= {
            "D_A exact match after stage 2 (%)": paper_table(two_stage, "da_final"),
            "D_B exact match after stage 2 (%)": paper_table(two_stage, "db_final"),
            "D_A exact match after stage 1 (%)": paper_table(two_stage, "da_first"),
        }
    if not multi.empty:
        tables["D_A exact match after each stage, runs of 3+ stages (%)"] = stage_table(multi)
    tables["Continual-learning summary over the scored sets (%)"] = summary_table(runs)
    if paper is not None:
        tables["Paper vs ours: D_A after stage 2 (%)"] = paper_vs_ours(
            runs, load_paper_numbers(paper)
        ).set_index(["d_a", "d_b"])
    command = f"factmem report {runs_dir}" + (f" --out {out}" if out != runs_dir / "report" else "")
    made_by = f"{len(runs)} finished runs. Made by `{command}`."
    markdown = [f"# factmem report: {runs_dir}\n", made_by + "\n"]
    for i, (title, table) in enumerate(tables.items(), 1):
        stem = f"table{i}"
        write_text_atomic(out / f"{stem}.csv", table.reset_index().to_csv(index=False))
        write_text_atomic(out / f"{stem}.tex", to_latex(table, title))
        markdown += [f"## {title}\n", to_markdown(table), ""]
    write_text_atomic(out / "cells.csv", aggregate(runs).to_csv(index=False))
    write_text_atomic(out / "runs.csv", runs.to_csv(index=False))
    figs = figures(runs, out)
    markdown += [f"![{title}]({path.name})\n" for title, path in figs.items()]
    write_text_atomic(out / "report.md", "\n".join(markdown) + "\n")
    page = out / "report.html"
    write_text_atomic(page, html_page(f"factmem report: {runs_dir}", made_by, tables, figs))
    return page


def html_page(title: str, made_by: str, tables: dict[str, pd.DataFrame],
              figs: dict[str, Path]) -> str:  # fmt: skip
    """One file, figures embedded as data URIs; on load it counts what rendered (for tests)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1200px}",
        "table{border-collapse:collapse;margin:1em 0;font-size:14px}",
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}",
        "td:nth-child(-n+2){text-align:left}img{max-width:100%;display:block;margin:1em 0}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(made_by)} Mean ± sample standard "
        "deviation over seeds, n = 3 unless shown.</p>",
    ]
    for title_text, table in tables.items():
        flat = table.reset_index()
        flat.columns.name = None
        body = flat.to_html(index=False, border=0)
        body = body.replace("<table", f"<table data-table='{html.escape(title_text)}'", 1)
        parts += [f"<h2>{html.escape(title_text)}</h2>", body]
    for title_text, path in figs.items():
        data = base64.b64encode(path.read_bytes()).decode()
        parts += [f"<h2>{html.escape(title_text)}</h2>",
                  f"<img data-figure alt='{html.escape(title_text)}' "
                  f"src='data:image/png;base64,{data}'>"]  # fmt: skip
    parts.append(
        "<script>window.addEventListener('load', () => {"
        "const imgs = [...document.querySelectorAll('img[data-figure]')];"
        "document.body.dataset.figures = imgs.length;"
        "document.body.dataset.figuresLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0)"
        ".length;"
        "document.body.dataset.tables = document.querySelectorAll('table[data-table]').length;"
        "});</script></body></html>"
    )
    return "\n".join(parts)
