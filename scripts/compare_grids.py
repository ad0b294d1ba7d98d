"""Do two grid directories hold the same results? (e.g. a killed-and-resumed grid vs an
uninterrupted one of the same seeds)

    .venv/bin/python scripts/compare_grids.py runs/demo runs/uninterrupted/demo

Per run: exact match on every set after every stage, every logged step loss, the forgetting
curve, and every prediction file byte for byte. Prints one line per run and exits 1 if any
differ (or if the two grids hold different runs). Also counts each grid's stage trainings
(stages not shared from another run) and how many stages resumed from a trainer checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def science(run: Path) -> list:
    results = json.loads((run / "results.json").read_text())
    predictions = {p.relative_to(run).as_posix(): p.read_bytes()
                   for p in sorted(run.glob("stage*/predictions/*.jsonl"))}  # fmt: skip
    return [(s["accuracy"], [h["loss"] for h in s["loss_curve"]], s.get("curve"))
            for s in results["stages"]] + [predictions]  # fmt: skip


def trainings(grid: Path) -> tuple[int, int]:
    trained = resumed = 0
    for record in grid.glob("*/stage*/stage.json"):
        if json.loads(record.read_text()).get("shared_from") is None:
            trained += 1
    for log in grid.glob("*/run.log"):  # each run's own log
        resumed += log.read_text().count("resuming stage training from")
    return trained, resumed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args()
    runs = sorted(p.parent.name for p in args.a.glob("*/results.json"))
    others = sorted(p.parent.name for p in args.b.glob("*/results.json"))
    if runs != others:
        print(f"different runs: {runs} vs {others}")
        return 1
    different = 0
    for name in runs:
        same = science(args.a / name) == science(args.b / name)
        different += not same
        print(f"{name}: {'same' if same else 'DIFFERENT'}")
    for grid in (args.a, args.b):
        trained, resumed = trainings(grid)
        print(f"{grid}: {trained} stage trainings, {resumed} resumed from a checkpoint")
    print(f"{len(runs) - different} of {len(runs)} runs identical")
    return 1 if different or not runs else 0


if __name__ == "__main__":
    sys.exit(main())
