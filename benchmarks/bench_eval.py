"""Exact-match evaluation time: factmem's path against plain greedy `generate`.

naive:   what the paper's released code does: left-padded batches, greedy `model.generate`
         with max_new_tokens=1000, stopping only at EOS, then strip/lower/compare.
factmem: factmem.evaluation.exact_match (teacher-forced certification of correct answers,
         generation only for the rest, stopped once the verdict is final).

Scenarios (each on the embedded SmolLM2-135M-Instruct, in one process):
  after-stage-2  the default run's final model scored on D_A (forgotten) and D_B (memorised);
                 needs `factmem run default` first (uses runs/default/).
  base-model     the untrained model on KVR prompts: every answer wrong, and the naive way
                 generates until EOS or 1000 tokens.
  long-answers   the untrained model on open questions, scored against its own greedy
                 answers (what a model that memorised long responses looks like): every
                 answer right, 40-200 tokens long.
The verdicts of both ways are compared and must be identical.

    .venv/bin/python benchmarks/bench_eval.py [--run runs/default] [--base-examples 16]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from factmem.data.example import Example
from factmem.data.factoid import key_value_recall
from factmem.evaluation import exact_match, greedy_generate, is_correct, teacher_forcing_pays
from factmem.models import load_model, load_tokenizer, resolve_model


def naive_verdicts(model, tokenizer, examples, batch_size) -> list[bool]:
    outputs = greedy_generate(
        model,
        tokenizer,
        [e.prompt for e in examples],
        max_new_tokens=1000,
        batch_size=batch_size,
        progress=False,
    )
    return [is_correct(o, e.gold_answers()) for o, e in zip(outputs, examples, strict=True)]


def compare(name, model, tokenizer, examples, batch_size) -> dict:
    """Naive generate vs factmem with the teacher-forced pass off and on (auto picks one)."""
    start = time.perf_counter()
    reference = naive_verdicts(model, tokenizer, examples, batch_size)
    row = {"scenario": name, "examples": len(examples), "naive_s": time.perf_counter() - start}
    for label, fast_path in (("generate_only", False), ("teacher_forced", True)):
        start = time.perf_counter()
        predictions = exact_match(model, tokenizer, examples, batch_size=batch_size,
                                  fast_path=fast_path, progress=False)  # fmt: skip
        row[f"{label}_s"] = time.perf_counter() - start
        verdicts = [p.correct for p in predictions]
        row[f"{label}_identical_verdicts"] = verdicts == reference
    row["accuracy"] = sum(reference) / len(reference)
    row["auto_picks"] = "teacher_forced" if teacher_forcing_pays(tokenizer, examples) else (
        "generate_only")  # fmt: skip
    row["auto_speedup_vs_naive"] = row["naive_s"] / row[f"{row['auto_picks']}_s"]
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}


def read_examples(path: Path) -> list[Example]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [Example(r["prompt"], r["response"], tuple(r["answers"])) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="runs/default")
    parser.add_argument("--base-examples", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--only", nargs="*", default=["after-stage-2", "base-model", "long-answers"]
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    results = []
    final = Path(args.run) / "stage2" / "model"
    if "after-stage-2" in args.only and final.is_dir():
        tokenizer = load_tokenizer(str(final))
        model = load_model(str(final), tokenizer)
        examples = [
            e for k in (1, 2) for e in read_examples(Path(args.run) / f"stage{k}" / "data.jsonl")
        ]
        results.append(
            compare("after-stage-2 (D_A + D_B)", model, tokenizer, examples, args.batch_size)
        )
    elif "after-stage-2" in args.only:
        print(f"skipping after-stage-2: {final} not found (run `factmem run default` first)")
    path = resolve_model("smollm2-135m")
    tokenizer = load_tokenizer(path)
    model = load_model(path, tokenizer)
    if "base-model" in args.only:
        kvr = key_value_recall(args.base_examples, seed=0)
        results.append(compare("base-model (KVR prompts)", model, tokenizer, kvr, args.batch_size))
    if "long-answers" in args.only:
        own = own_answers(model, tokenizer)
        results.append(
            compare("long-answers (own answers)", model, tokenizer, own, args.batch_size)
        )
    print(json.dumps(results, indent=2))


QUESTIONS = [
    "Explain in two sentences why the sky is blue.",
    "Describe a cat in two sentences.",
    "What is photosynthesis? Answer in two sentences.",
    "Give two tips for learning a new language.",
    "Why do we have seasons? Two sentences.",
    "What does a compiler do? Two sentences.",
    "Describe the ocean in two sentences.",
    "What is a prime number? Two sentences.",
]


def own_answers(model, tokenizer) -> list[Example]:
    """The model's own complete greedy answers (ending in EOS within 200 tokens) as golds."""
    outputs = greedy_generate(model, tokenizer, QUESTIONS, max_new_tokens=200, progress=False)
    examples = []
    for question, output in zip(QUESTIONS, outputs, strict=True):
        ids = tokenizer(output, add_special_tokens=False)["input_ids"]
        if 0 < len(ids) < 190:  # so generation ended at EOS, not at the 200-token cap
            examples.append(Example(question, output))
    return examples


if __name__ == "__main__":
    main()
