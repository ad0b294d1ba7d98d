"""D_A retention of No Mixing, Replay 0.1, Random/- and Random/Generic over seeds (issue 3).

Runs each preset once per seed under `--output-dir` (a rerun skips finished runs and
stages, and runs that share a stage-1 setup train it once), then writes the table of
D_A exact match after the last stage, mean, sample standard deviation and n, to
`<output-dir>/retention.md`. Beside exact match, which cannot tell "almost kept" from "gone",
it gives the final model's mean response loss on D_A (nats per answer token; computed once
per run and kept in `<run>/da_loss.json`).

    .venv/bin/python scripts/remix_retention.py                       # paper's 50-word lengths
    .venv/bin/python scripts/remix_retention.py --random-words 10 --generic-words 10

A 50-word random sequence is ~160 SmolLM2 tokens against ~35 for a KVR fact, so at the
paper's 1:2 ratio a mixed 20-epoch stage costs ~10x a plain one (~40 min on 2 CPU cores);
the word options shorten the mixing examples to fit a small machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

from factmem.atomic import write_json_atomic, write_text_atomic
from factmem.config import find_config, load_config
from factmem.data.example import Example
from factmem.evaluation import mean_response_loss
from factmem.models import load_model, load_tokenizer
from factmem.pipeline import run_experiment

STRATEGIES = {
    "No Mixing": "no-mixing",
    "Replay 0.1": "replay-0.1",
    "Random/-": "random-none",
    "Random/Generic": "random-generic",
}


def run_config(preset: str, seed: int, args: argparse.Namespace):
    data = load_config(find_config(preset)).model_dump()
    data |= {"seed": seed, "name": f"{preset}-s{seed}", "output_dir": str(args.output_dir)}
    for stage in data["stages"]:
        mixing = stage.get("mixing")
        if mixing and mixing["source"] == "random_words" and args.random_words:
            mixing["words"] = args.random_words
        if mixing and mixing["source"] == "generic" and args.generic_words:
            mixing["prefix_words"] = mixing["continuation_words"] = args.generic_words
    return load_config(data)


def da_loss(run_dir: Path, results: dict) -> float:
    """Mean response loss of the run's final model on D_A (cached in the run directory)."""
    cache = run_dir / "da_loss.json"
    if cache.is_file():
        return json.loads(cache.read_text())["da_loss"]
    last = run_dir / f"stage{len(results['stages'])}" / "model"
    tokenizer = load_tokenizer(str(last))
    rows = [json.loads(line) for line in (run_dir / "stage1" / "data.jsonl").open()]
    d_a = [Example(r["prompt"], r["response"]) for r in rows if r["meta"]["kind"] == "factoid"]
    loss = mean_response_loss(load_model(str(last), tokenizer), tokenizer, d_a)
    write_json_atomic(cache, {"da_loss": loss, "model": str(last), "examples": len(d_a)})
    return loss


def cell(values: list[float], scale: float = 100, digits: int = 1) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.{digits}f} ± {scale * spread:.{digits}f}"


def table(rows: dict[str, list[dict]]) -> str:
    lines = [
        "| strategy | D_A after stage 1 | **D_A after stage 2** | D_B after stage 2 "
        "| D_A loss after stage 2 | n | D_A per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, results in rows.items():
        if not results:
            continue
        first = [r["stages"][0]["accuracy"]["D_A"] for r in results]
        kept = [r["stages"][-1]["accuracy"]["D_A"] for r in results]
        learned = [r["stages"][-1]["accuracy"]["D_B"] for r in results]
        losses = [r["da_loss"] for r in results]
        seeds = ", ".join(f"{100 * v:.1f}" for v in kept)
        lines.append(
            f"| {label} | {cell(first)} | **{cell(kept)}** | {cell(learned)} "
            f"| {cell(losses, 1, 2)} | {len(results)} | {seeds} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output-dir", type=Path, default=Path("runs/remix"))
    parser.add_argument("--random-words", type=int, help="override random_words `words`")
    parser.add_argument("--generic-words", type=int, help="override generic prefix/continuation")
    parser.add_argument("--only", nargs="+", choices=list(STRATEGIES), help="a subset")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    chosen = args.only or list(STRATEGIES)
    rows: dict[str, list[dict]] = {label: [] for label in chosen}
    for label in chosen:  # strategy by strategy: rows complete early if the run is cut short
        for seed in args.seeds:
            config = run_config(STRATEGIES[label], seed, args)
            logging.info("=== %s, seed %d: %s", label, seed, config.name)
            results = run_experiment(config, progress=False).to_json()
            run_dir = args.output_dir / config.name
            rows[label].append(results | {"da_loss": da_loss(run_dir, results)})
            write_text_atomic(args.output_dir / "retention.md", table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
