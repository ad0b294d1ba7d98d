"""Check factmem's cost estimate (src/factmem/estimate.py) against stages this machine ran.

1. Tokens: the estimate's tokens per stage (from the grid file alone) beside the tokens the
   archived stage records counted while training.
2. Time: the FLOP formula with the CPU's FLOP/s measured on one stage predicts the others.

    .venv/bin/python scripts/check_estimate.py docs/results/cells-popqa cells-popqa \
        --data-dir ../shared/data
    .venv/bin/python scripts/check_estimate.py docs/results/regime-extras regime-extras \
        --data-dir ../shared/data --only seed1 \
        --reference docs/results/regime-gsm8k/seed2_popqa_gsm8k_no-mixing/stage2
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from factmem.estimate import archived_stage_records, cpu_check, model_shape, stage_costs
from factmem.grid import load_grid
from factmem.markdown import markdown_table
from factmem.models import load_tokenizer, resolve_model
from factmem.records import StageOutcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", type=Path, help="a folder of archived runs of the grid")
    parser.add_argument("grid", help="the grid file or preset that made them")
    parser.add_argument("--data-dir")
    parser.add_argument("--only", default="", help="stages whose name contains this (runs of "
                        "one machine: times are compared within a machine)")  # fmt: skip
    parser.add_argument("--reference", type=Path, help="a stage folder (with training.json) "
                        "whose FLOP/s predicts the others, e.g. the stage `--dry-run --here` "
                        "timed them by (default: the first stage of the list)")  # fmt: skip
    args = parser.parse_args()
    records = {r["stage"]: r for r in archived_stage_records(args.archive)
               if args.only in r["stage"]}  # fmt: skip
    grid = load_grid(args.grid, data_dir=args.data_dir)
    model = grid.runs[0].config.model
    tokenizer = load_tokenizer(resolve_model(model))
    rows = []
    for run in grid.runs:
        for cost in stage_costs(run.config, tokenizer, run.name):
            record = records.get(f"{run.name}/stage{cost.stage}")
            if record is not None:
                rows.append([record["stage"], f"{cost.tokens:,}", f"{record['train_tokens']:,}",
                             f"{cost.tokens / record['train_tokens']:.3f}"])  # fmt: skip
    print("## Tokens: estimated from the grid file vs counted in training\n")
    print(markdown_table(["stage", "estimated", "counted", "ratio"], rows))
    listed = sorted(records.values(), key=lambda r: r["stage"])
    if args.reference:
        outcome = StageOutcome.read(args.reference / "training.json")
        listed.insert(0, {"stage": str(args.reference), "train_tokens": outcome.train_tokens,
                          "train_time_s": outcome.wall_time_s})  # fmt: skip
    checked = cpu_check(listed, model_shape(model).parameters)
    print(f"\n## Time: 6 x {model_shape(model).parameters / 1e6:.1f}M parameters x tokens, "
          f"at the FLOP/s of {checked[0]['stage']}\n")
    rows = [[c["stage"], f"{c['tokens']:,}", f"{c['measured_s']:.0f}", f"{c['predicted_s']:.0f}",
             f"{c['ratio']:.2f}"] for c in checked]  # fmt: skip
    print(markdown_table(["stage", "tokens", "measured s", "predicted s", "measured/predicted"],
                         rows))  # fmt: skip
    ratios = [c["ratio"] for c in checked[1:]]
    if ratios:
        print(f"\nmeasured/predicted over {len(ratios)} stages: median "
              f"{statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    main()
