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
from factmem.evaluation import exact_match, greedy_generate, is_correct
from factmem.models import load_model, load_tokenizer, resolve_model


def naive_verdicts(model, tokenizer, examples, batch_size) -> list[bool]:
    outputs = greedy_generate(model, tokenizer, [e.prompt for e in examples],
                              max_new_tokens=1000, batch_size=batch_size, progress=False)
    return [is_correct(o, e.gold_answers()) for o, e in zip(outputs, examples, strict=True)]


def compare(name, model, tokenizer, examples, batch_size) -> dict:
    start = time.perf_counter()
    reference = naive_verdicts(model, tokenizer, examples, batch_size)
    naive_s = time.perf_counter() - start
    start = time.perf_counter()
    predictions = exact_match(model, tokenizer, examples, batch_size=batch_size, progress=False)
    fast_s = time.perf_counter() - start
    verdicts = [p.correct for p in predictions]
    return {
        "scenario": name, "examples": len(examples), "accuracy": sum(verdicts) / len(verdicts),
        "naive_s": round(naive_s, 2), "factmem_s": round(fast_s, 2),
        "speedup": round(naive_s / fast_s, 2), "identical_verdicts": verdicts == reference,
        "teacher_forced": sum(p.method == "teacher_forced" for p in predictions),
    }


def read_examples(path: Path) -> list[Example]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [Example(r["prompt"], r["response"], tuple(r["answers"])) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="runs/default")
    parser.add_argument("--base-examples", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    results = []
    run = Path(args.run)
    final = run / "stage2" / "model"
    if final.is_dir():
        tokenizer = load_tokenizer(str(final))
        model = load_model(str(final), tokenizer)
        examples = read_examples(run / "stage1" / "data.jsonl") + read_examples(
            run / "stage2" / "data.jsonl")
        results.append(compare("after-stage-2 (D_A + D_B)", model, tokenizer, examples,
                               args.batch_size))
    else:
        print(f"skipping after-stage-2: {final} not found (run `factmem run default` first)")
    path = resolve_model("smollm2-135m")
    tokenizer = load_tokenizer(path)
    model = load_model(path, tokenizer)
    results.append(compare("base-model (KVR prompts)", model, tokenizer,
                           key_value_recall(args.base_examples, seed=0), args.batch_size))
    results.append(compare("long-answers (own greedy answers)", model, tokenizer,
                           own_answers(model, tokenizer), args.batch_size))  # fmt: skip
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
