"""Do two grid directories hold the same results? (e.g. a killed-and-resumed grid vs an
uninterrupted one of the same seeds)

    .venv/bin/python scripts/compare_grids.py runs/demo runs/uninterrupted/demo

Per run: exact match on every set after every stage, and every logged step loss. Prints one
line per run and exits 1 if any differ. Also counts each grid's stage trainings (stages not
shared from another run) and how many stages resumed from a trainer checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def science(run: Path) -> list:
    results = json.loads((run / "results.json").read_text())
    return [(s["accuracy"], [h["loss"] for h in s["loss_curve"]], s.get("curve"))
            for s in results["stages"]]  # fmt: skip


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
