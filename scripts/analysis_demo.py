"""Issue 6's measurements on a finished grid (default: the demo grid, runs/demo): Logit Lens
of No Mixing vs Random/Generic after stage 1 and stage 2, forgetting curves during stage 2,
and gradient cosines at the stage-1 checkpoints of No Mixing and Random; seeds pooled.

    .venv/bin/python scripts/analysis_demo.py [--grid runs/demo] [--out docs/analysis]

Writes <out>/README.md (tables) and PNG figures; the per-run results are cached in the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from factmem.analysis import run_gradients, run_lens
from factmem.atomic import write_text_atomic
from factmem.report import collect_runs
from factmem.report.figures import _retention_curves

LENS_STRATEGIES = {"No Mixing": "no-mixing", "Random/Generic": "random_generic"}
EPOCHS = (0, 1, 2, 4, 6, 10)  # curve points in the table (stage-2 epochs)
GRADIENT_STRATEGIES = {"No Mixing": "no-mixing", "Random/-": "random_none"}


def seed_runs(grid: Path, prefix: str) -> list[Path]:
    return sorted(p for p in grid.glob(f"{prefix}_seed*") if (p / "results.json").is_file())


def pooled_lens(records: list[dict]) -> dict:
    """Seeds pooled: every fact counts once."""
    firsts = [f for r in records for f in r["first_layers"] if f is not None]
    total = sum(r["examples"] for r in records)
    layers = len(records[0]["frequency"])
    frequency = [sum(r["frequency"][i] * r["examples"] for r in records) / total
                 for i in range(layers)]  # fmt: skip
    accuracy = sum((r["accuracy"] or 0) * r["examples"] for r in records) / total
    return {"facts": total, "runs": len(records), "frequency": frequency,
            "mean": statistics.mean(firsts) if firsts else float("nan"),
            "std": statistics.stdev(firsts) if len(firsts) > 1 else 0.0,
            "found": len(firsts) / total, "accuracy": accuracy}  # fmt: skip


def lens_section(grid: Path, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["## Logit Lens: where D_A's answers appear (the paper's Figure 4)", "",
             "| model | strategy | facts (runs) | first layer: mean | std | found in top-10 "
             "| exact match |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, stage in zip(axes, (1, 2), strict=True):
        for label, prefix in LENS_STRATEGIES.items():
            runs = seed_runs(grid, prefix)
            pooled = pooled_lens([run_lens(run, stage, None, 100, 10) for run in runs])
            found, accuracy = 100 * pooled["found"], 100 * pooled["accuracy"]
            lines.append(f"| after stage {stage} | {label} | {pooled['facts']} ({pooled['runs']}) "
                         f"| {pooled['mean']:.1f} | {pooled['std']:.1f} | {found:.0f}% | "
                         f"{accuracy:.1f}% |")  # fmt: skip
            ax.plot(range(1, len(pooled["frequency"]) + 1), pooled["frequency"], marker=".",
                    label=label)  # fmt: skip
        ax.set_title(f"D_A after stage {stage}")
        ax.set_xlabel("layer")
        ax.legend()
    axes[0].set_ylabel("share of D_A facts with the answer in the top-10")
    fig.tight_layout()
    fig.savefig(out / "lens.png", dpi=110)
    plt.close(fig)
    return lines + ["", "![Logit Lens](lens.png)", ""]


def gradient_section(grid: Path) -> list[str]:
    lines = ["## Gradient alignment at the stage-1 checkpoint", "",
             "Cosine between the gradient of the answer loss on D_A and on D_B, and on D_B "
             "mixed with generic text (Random/Generic's stage-2 mixture, same seed).", "",
             "| stage-1 model | seed | D_A vs D_B | D_A vs D_B+D_M | layers: min | max |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for label, prefix in GRADIENT_STRATEGIES.items():
        for run in seed_runs(grid, prefix):
            seed = run.name.rsplit("seed", 1)[1]
            mix = grid / f"random_generic_seed{seed}"
            record = run_gradients(run, 1, 32, mix if mix.is_dir() else None)
            c = record["cosines"]
            layer = [v for g, v in c["D_A vs D_B"]["groups"].items() if g.startswith("layer.")]
            mixed = c.get("D_A vs D_B+D_M", {}).get("overall", float("nan"))
            lines.append(f"| {label} | {seed} | {c['D_A vs D_B']['overall']:.4f} | {mixed:.4f} "
                         f"| {min(layer):.4f} | {max(layer):.4f} |")  # fmt: skip
    return lines + [""]


def curve_section(grid: Path, out: Path) -> list[str]:
    runs = collect_runs(grid)
    runs = runs[(runs["stages"] == 2) & (runs["curve"].map(len) > 0)]
    if runs.empty:
        return ["## Forgetting curves", "", "(no run recorded curves)", ""]
    _retention_curves(runs, out / "curves.png")
    lines = ["## Forgetting curves: D_A during stage 2", "", "![curves](curves.png)", "",
             "| strategy | " + " | ".join(f"epoch {e}" for e in EPOCHS) + " | end |",
             "|---" * (len(EPOCHS) + 2) + "|"]  # fmt: skip

    def at(curves, epoch: float) -> str:  # the probe at exactly this epoch, in every seed
        values = [v for c in curves for e, v in c if abs(e - epoch) < 1e-6]
        return f"{100 * statistics.mean(values):.1f}" if len(values) == len(curves) else "-"

    for strategy, part in runs.groupby("strategy", sort=False):
        curves = list(part["curve"])
        cells = " | ".join(at(curves, e) for e in EPOCHS)
        end = statistics.mean(c[-1][1] for c in curves)
        lines.append(f"| {strategy} | {cells} | {100 * end:.1f} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=Path, default=Path("runs/demo"))
    parser.add_argument("--out", type=Path, default=Path("docs/analysis"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    text = ["# Analysis of the demo grid", "",
            f"Made by `.venv/bin/python scripts/analysis_demo.py --grid {args.grid} --out "
            f"{args.out}` from `factmem grid demo` (KVR D_A -> unseen KVR D_B, 16 facts a stage, "
            "20 epochs each, 10-word mixing, seeds 0-2, the embedded SmolLM2-135M-Instruct); "
            "seeds pooled.", ""]  # fmt: skip
    text += lens_section(args.grid, args.out)
    text += curve_section(args.grid, args.out)
    text += gradient_section(args.grid)
    write_text_atomic(args.out / "README.md", "\n".join(text) + "\n")
    print("\n".join(text))
    print(json.dumps({"written": str(args.out / "README.md")}))


if __name__ == "__main__":
    main()
