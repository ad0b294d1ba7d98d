"""Score finished runs again from their saved stage models, training nothing.

For runs scored by a factmem that scored wrongly: before 731cbd1, a stage trained with bf16
mixed precision (`training.bf16: auto` on a CPU with AVX-512 BF16) was scored with bf16
autocast left on by accelerate, although `evaluation.bf16` was false. The pipeline itself
does the scoring: each run's stage records, predictions and results.json are removed, and
`run_experiment` finds every stage "already trained" and scores its saved model. Killed
midway, run it again. Prints D_A after the last stage, before -> after.

    .venv/bin/python scripts/rescore.py runs/cells-popqa runs/cells-triviaqa/seed0_*
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from factmem.config import ExperimentConfig, load_config
from factmem.layout import RunFolder
from factmem.pipeline import run_experiment
from factmem.records import RunResults


def candidates(paths: list[Path]) -> list[RunFolder]:
    """Run folders (with a config.yaml) given directly or one level below a grid folder."""
    runs = []
    for path in paths:
        found = [path] if (path / "config.yaml").is_file() else sorted(path.glob("*/config.yaml"))
        runs += [RunFolder(p if p.is_dir() else p.parent) for p in found]
    return runs


def unscorable(run: RunFolder, config: ExperimentConfig) -> str | None:
    """Why the run cannot be scored again without training (None: it can)."""
    for number in range(1, len(config.stages) + 1):
        stage = run.stage(number)
        if not stage.training.is_file() or not stage.model.is_dir():
            return f"stage {number} has no saved model and training record"
    return None


def d_a_final(run: RunFolder) -> float | None:
    if not run.results.is_file():
        return None
    results = RunResults.read(run.results)
    first = results.accuracy_matrix["columns"][0]
    return results.stages[-1].accuracy.get(first) if results.finished else None


def rescore(run: RunFolder, config: ExperimentConfig) -> tuple[float | None, float | None]:
    before = d_a_final(run)
    run.results.unlink(missing_ok=True)
    for stage in run.stages():
        stage.record.unlink(missing_ok=True)
        shutil.rmtree(stage.predictions_dir, ignore_errors=True)
    handler = logging.FileHandler(run.path / "run.log")  # the run's own log, as factmem run
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        logging.getLogger(__name__).info("rescore: scoring the saved stage models again")
        run_experiment(config, run.path, progress=False)
    finally:
        logging.getLogger().removeHandler(handler)
    return before, d_a_final(run)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders or grid folders")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")  # fmt: skip
    for noisy in ("transformers", "accelerate", "datasets", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for run in candidates(args.runs):
        config = load_config(run.config)
        why = unscorable(run, config)
        if why:
            print(f"{run.path}: skipped, {why}")
            continue
        before, after = rescore(run, config)
        print(f"{run.path}: D_A {_percent(before)} -> {_percent(after)}", flush=True)


if __name__ == "__main__":
    main()
