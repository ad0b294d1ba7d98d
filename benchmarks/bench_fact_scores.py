"""What fact scores (evaluation.fact_scores) add to scoring a set: exact match alone against
exact match + fact scores (teacher-forced log-prob and rank, Logit Lens layer), same model
and examples, one process. The embedded SmolLM2-135M, untrained: on KVR prompts its answers
are wrong from the first tokens, so generation stops early (the cheapest case for exact
match, so the largest share for fact scores); on PopQA questions after 5 demonstrations
(the familiarity filter's prompts, ~150 tokens) when ../shared/data is there.

    .venv/bin/python benchmarks/bench_fact_scores.py
    .venv/bin/python benchmarks/bench_fact_scores.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from factmem.data.factoid import key_value_recall
from factmem.evaluation import exact_match
from factmem.fact_scores import score_facts
from factmem.models import load_model, load_tokenizer, resolve_model


def measure(model, tokenizer, examples) -> dict:
    start = time.perf_counter()
    predictions = exact_match(model, tokenizer, examples, max_new_tokens=64, progress=False)
    scored = time.perf_counter()
    score_facts(model, tokenizer, examples, predictions)
    done = time.perf_counter()
    return {"examples": len(examples), "exact_match_s": round(scored - start, 2),
            "fact_scores_s": round(done - scored, 2),
            "added": f"{100 * (done - scored) / (scored - start):.0f}%"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--facts", type=int, default=64)
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args()
    path = resolve_model("smollm2-135m")
    tokenizer = load_tokenizer(path)
    model = load_model(path, tokenizer)
    rows = {"kvr": measure(model, tokenizer, key_value_recall(args.facts, seed=0))}
    popqa = args.data_dir / "popqa" / "popqa_2000.json" if args.data_dir else None
    if popqa and popqa.is_file():
        from factmem.data.registry import candidates
        from factmem.familiarity import few_shot_example

        questions = [few_shot_example(e, 5) for e in candidates("popqa", 0, str(popqa), {})]
        rows["popqa, 5 demonstrations"] = measure(model, tokenizer, questions[: args.facts])
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
