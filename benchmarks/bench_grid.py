"""A grid's wall time: `factmem grid` (each distinct stage trained once) against the naive way,
one `factmem run` per grid point with nothing shared (every run trains all its stages).

The grid: No Mixing, Replay 0.1, Random/- and Random/Generic x `--seeds` seeds, KVR ->
unseen KVR, `--facts` facts a stage, `--epochs` epochs, 10-word mixing. Both ways run in
this process, one after the other, into fresh folders; their exact-match results must agree.

    .venv/bin/python benchmarks/bench_grid.py                       # a tiny random Llama
    .venv/bin/python benchmarks/bench_grid.py --model smollm2-135m --facts 8 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from factmem.config import load_config
from factmem.grid import load_grid, run_grid
from factmem.pipeline import run_experiment
from factmem.testing import build_tiny_model

STRATEGIES = {
    "No Mixing": {},
    "Replay 0.1": {"stages.1.replay": {"fraction": 0.1}},
    "Random/-": {"stages.0.mixing": {"source": "random_words", "words": 10}},
    "Random/Generic": {
        "stages.0.mixing": {"source": "random_words", "words": 10},
        "stages.1.mixing": {"source": "generic", "prefix_words": 10, "continuation_words": 10},
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="default: a tiny random Llama built here")
    parser.add_argument("--facts", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-grid-"))
    model = args.model or str(build_tiny_model(work / "tiny"))
    options = {} if args.model else {"key_length": 3, "value_length": 2}
    if not args.model:  # a random tiny model cannot write passages: give it a local corpus
        import random

        words = [f"w{i}" for i in range(500)]
        rng = random.Random(0)
        docs = [{"text": " ".join(rng.choices(words, k=120))} for _ in range(200)]
        (work / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
        generic = STRATEGIES["Random/Generic"]["stages.1.mixing"]
        generic |= {"corpus": "local", "path": str(work / "corpus.jsonl")}
    base = {
        "model": model,
        "training": {"checkpoint_every_epochs": 0}
        | ({} if args.model else {"learning_rate": 1e-2, "batch_size": 4}),
        "evaluation": {"max_new_tokens": 16},
        "stages": [
            {
                "name": "D_A",
                "dataset": "kvr",
                "size": args.facts,
                "options": options,
                "stop": {"epochs": args.epochs},
            },  # fmt: skip
            {
                "name": "D_B",
                "dataset": "kvr_id",
                "size": args.facts,
                "options": options,
                "stop": {"epochs": args.epochs},
            },  # fmt: skip
        ],
    }
    (work / "base.yaml").write_text(yaml.safe_dump(base))
    grid_file = work / "grid.yaml"
    grid_file.write_text(yaml.safe_dump({
        "name": "g", "base": str(work / "base.yaml"), "output_dir": str(work / "grid"),
        "axes": {"strategy": STRATEGIES, "seed": list(range(args.seeds))},
    }, sort_keys=False))  # fmt: skip
    grid = load_grid(grid_file)

    start = time.perf_counter()
    for run in grid.runs:  # naive: every run on its own, every stage trained
        alone = run.config.model_dump() | {"share_stages": False,
                                           "output_dir": str(work / "naive")}  # fmt: skip
        run_experiment(load_config(alone), progress=False)
    naive = time.perf_counter() - start

    start = time.perf_counter()
    run_grid(grid, progress=False)
    shared = time.perf_counter() - start

    same = all(
        json.loads((work / "naive" / r.name / "results.json").read_text())["accuracy_matrix"]
        == json.loads((r.run_dir / "results.json").read_text())["accuracy_matrix"]
        for r in grid.runs
    )
    counts = grid.training_counts()
    print(f"model {args.model or 'tiny random Llama'}, {counts['runs']} runs, "
          f"{args.facts} facts, {args.epochs} epochs a stage")  # fmt: skip
    print("| way | stage trainings | seconds | vs naive |\n|---|---|---|---|")
    print(f"| naive: one `factmem run` per point, nothing shared | {counts['stage_slots']} "
          f"| {naive:.1f} | 1.00x |")  # fmt: skip
    print(f"| `factmem grid` | {counts['trainings']} | {shared:.1f} | {naive / shared:.2f}x |")
    print(f"same exact-match results: {same}  (work folder {work})")


if __name__ == "__main__":
    main()
