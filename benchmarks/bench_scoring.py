"""Where scoring's time goes (exact match, fact scores, the familiarity filter), against
the naive way and the machine's matmul bound, in one process.

Scoring is forward passes and generation, no training, so the same look as
bench_step_profile.py: seconds per variant, then each factmem variant once more under
torch.profiler, the share of its time in matrix products (aten::mm/addmm/bmm, self time),
their FLOP rate, and the bound: a plain `torch.mm` of every matmul shape it ran, timed
here in the same dtype.

  familiarity   the filter's questions: PopQA after 5 demonstrations (~190 tokens, ~160 of
                them the demonstrations), or KVR prompts after them without --data-dir.
                naive: `model.generate`, left-padded batches of 64, greedy, until EOS or the
                judge's 32-token cap, then strip/lower/compare. before: factmem's exact
                match without the shared prefix. now: with it (the demonstrations encoded
                once per call, their key/value cache copied into each batch).
  exact match   as the pipeline scores a set after a stage (64 KVR facts; + PopQA), with the
                untrained model: its answers are wrong from the first tokens (one
                factmem variant: this path did not change; where its time goes).
  fact scores   the teacher-forced log-prob/rank and the Logit Lens layer of every fact
                (64 KVR facts; + 64 PopQA questions with --data-dir). before: two passes
                (teacher forcing, then the prompts again with layer hooks); now: one.
  contains      fact scores on exact match's own predictions, whose wrong answers the early
                stop cut at their first wrong token. before: `contains` read from the cut
                output (no generation; it misses a gold said later); now: those answers
                generated on until the gold, EOS or the cap. Seconds beside exact match's,
                and how many facts' `contains` the cut output got wrong. `--model PATH`
                scores a trained model instead (e.g. a stage 2 after generic mixing,
                whose wrong answers run on like passages).

Every variant's verdicts and scores are compared with the others' (`identical`).

    .venv/bin/python benchmarks/bench_scoring.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_step_profile import cpu_kind, matmul_account  # noqa: E402


def naive_filter(model, tokenizer, questions, max_new_tokens: int) -> list[bool]:
    """What a user writes: batched greedy generate, no early stop, no shared prefix."""
    import torch

    from factmem.batching import pad_rows
    from factmem.data.example import encode_prompt
    from factmem.evaluation import decode, is_correct

    verdicts = []
    model.eval()
    for start in range(0, len(questions), 64):
        batch = questions[start : start + 64]
        ids, mask = pad_rows([encode_prompt(tokenizer, q.prompt, q.history) for q in batch],
                             tokenizer.pad_token_id, left=True)  # fmt: skip
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=max_new_tokens,
                                 eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        for row, q in zip(out[:, ids.shape[1] :], batch, strict=True):
            verdicts.append(is_correct(decode(tokenizer, row.tolist()), q.gold_answers()))
    return verdicts


def two_pass_fact_scores(model, tokenizer, examples) -> list[tuple[int, int | None]]:
    """Fact scores as factmem computed them before: teacher forcing, then the lens apart."""
    from factmem.evaluation import answer_logits
    from factmem.fact_scores import LENS_TOP_K
    from factmem.lens import lens_hits

    ranks = {}
    for i, logits, gold in answer_logits(model, tokenizer, examples, 64, False):
        ranks[i] = int((logits[0] > logits[0, gold[0]]).sum()) + 1
    layers = lens_hits(model, tokenizer, examples, top_k=LENS_TOP_K, batch_size=64)
    return [(ranks[i], layer) for i, layer in enumerate(layers.first_layers())]


def one_pass_fact_scores(model, tokenizer, examples) -> list[tuple[int, int | None]]:
    from factmem.evaluation import Prediction
    from factmem.fact_scores import score_facts

    predictions = [Prediction(e.prompt, e.response, list(e.gold_answers()), "", False,
                              "generated") for e in examples]  # fmt: skip
    score_facts(model, tokenizer, examples, predictions)
    return [(p.first_token_rank, p.lens_first_layer) for p in predictions]


def contains_after_exact_match(model, tokenizer, examples, predictions,
                               finish: bool) -> tuple[list, float]:  # fmt: skip
    """`contains` of every fact and the seconds fact scoring took, on a copy of exact
    match's predictions (scoring fills them in place)."""
    from factmem.fact_scores import score_facts

    predictions = copy.deepcopy(predictions)
    if not finish:  # the old way: no generation, contains read from the cut output
        for p in predictions:
            p.output_cut = False
    start = time.perf_counter()
    score_facts(model, tokenizer, examples, predictions)
    return [p.contains for p in predictions], time.perf_counter() - start


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def profiled(fn, *args) -> dict:
    """The call again under torch.profiler: matmul share, rate, and the plain-GEMM bound."""
    import torch
    from torch.profiler import ProfilerActivity

    start = time.perf_counter()
    with torch.profiler.profile(activities=[ProfilerActivity.CPU], record_shapes=True,
                                with_flops=True) as prof:  # fmt: skip
        fn(*args)
    wall = time.perf_counter() - start
    mm = matmul_account(prof.events(), torch.float32)
    return {"profiled_s": round(wall, 2), "matmul_s": round(mm["matmul_s"], 2),
            "matmul_share": round(mm["matmul_s"] / wall, 2),
            "matmul_gflops": mm["matmul_gflops"], "plain_gemm_gflops": mm["plain_gemm_gflops"],
            "bound_s": round(mm["bound_s"], 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--facts", type=int, default=64)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--model", help="a trained model's folder (default: the embedded one)")
    parser.add_argument("--only-contains", action="store_true",
                        help="only the contains rows (a trained model's)")
    args = parser.parse_args()

    from factmem.data.factoid import key_value_recall
    from factmem.evaluation import exact_match
    from factmem.familiarity import few_shot_example
    from factmem.models import load_model, load_tokenizer, resolve_model

    path = args.model or resolve_model("smollm2-135m")
    tokenizer = load_tokenizer(path)
    model = load_model(path, tokenizer)
    kvr = key_value_recall(args.facts, seed=0)
    popqa = args.data_dir / "popqa" / "popqa_2000.json" if args.data_dir else None
    facts = {"kvr": kvr}
    if popqa and popqa.is_file():
        from factmem.data.registry import candidates

        facts["popqa"] = candidates("popqa", 0, str(popqa), {})[: args.facts]
    questions = [few_shot_example(e, 5) for e in facts.get("popqa", kvr)]

    def judge(share: bool) -> list[bool]:
        return [p.correct for p in exact_match(model, tokenizer, questions, max_new_tokens=32,
                                               fast_path=False, progress=False,
                                               share_prefix=share)]  # fmt: skip

    exact_match(model, tokenizer, questions[:2], max_new_tokens=4, progress=False)  # warm-up
    print(f"model: {path}")
    print("\n| contains | examples | exact match s | fact scores before s | now s | "
          "now / exact match | facts whose contains the cut output got wrong |")
    print("|---|---|---|---|---|---|---|")
    for name, examples in facts.items():
        scored, match_s = timed(lambda e: exact_match(model, tokenizer, e, progress=False),
                                examples)  # fmt: skip
        before, before_s = contains_after_exact_match(model, tokenizer, examples, scored, False)
        now, now_s = contains_after_exact_match(model, tokenizer, examples, scored, True)
        assert all(n or not b for b, n in zip(before, now, strict=True))  # never lost
        print(f"| {name} | {len(examples)} | {match_s:.2f} | {before_s:.2f} | {now_s:.2f} | "
              f"{now_s / match_s:.2f}x | {sum(n != b for b, n in zip(before, now, strict=True))} |")
    if args.only_contains:
        return
    rows = []
    naive, naive_s = timed(naive_filter, model, tokenizer, questions, 32)
    before, before_s = timed(judge, False)
    now, now_s = timed(judge, True)
    rows.append({"scenario": f"familiarity ({'popqa' if 'popqa' in facts else 'kvr'}, 5 shots)",
                 "examples": len(questions), "naive_s": round(naive_s, 2),
                 "before_s": round(before_s, 2), "now_s": round(now_s, 2),
                 "identical": naive == before == now,
                 "profile_before": None if args.no_profile else profiled(judge, False),
                 "profile_now": None if args.no_profile else profiled(judge, True)})  # fmt: skip
    for name, examples in facts.items():  # exact match as the pipeline scores: unchanged
        def score(examples=examples) -> list[bool]:
            return [p.correct for p in exact_match(model, tokenizer, examples, progress=False)]

        verdicts, seconds = timed(score)
        rows.append({"scenario": f"exact match ({name}, untrained model)",
                     "examples": len(examples), "naive_s": None, "before_s": round(seconds, 2),
                     "now_s": round(seconds, 2), "identical": verdicts == score(),
                     "profile_before": None,
                     "profile_now": None if args.no_profile else profiled(score)})  # fmt: skip
    for name, examples in facts.items():
        before, before_s = timed(two_pass_fact_scores, model, tokenizer, examples)
        now, now_s = timed(one_pass_fact_scores, model, tokenizer, examples)
        rows.append({"scenario": f"fact scores ({name})", "examples": len(examples),
                     "naive_s": None, "before_s": round(before_s, 2), "now_s": round(now_s, 2),
                     "identical": before == now,
                     "profile_before": None if args.no_profile else profiled(
                         two_pass_fact_scores, model, tokenizer, examples),
                     "profile_now": None if args.no_profile else profiled(
                         one_pass_fact_scores, model, tokenizer, examples)})  # fmt: skip
    print("\n| scenario | examples | naive s | before s | now s | now vs before | identical "
          "| matmul share before / now | matmul GFLOP/s now | plain GEMM GFLOP/s | bound s now |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b, n = r["profile_before"] or {}, r["profile_now"] or {}
        share = (f"{100 * b['matmul_share']:.0f}% / " if b else "") + (
            f"{100 * n['matmul_share']:.0f}%" if n else "-")
        print(f"| {r['scenario']} | {r['examples']} | {r['naive_s'] or '-'} | {r['before_s']} | "
              f"{r['now_s']} | {r['before_s'] / r['now_s']:.2f}x | {r['identical']} | {share} | "
              f"{n.get('matmul_gflops', '-')} | {n.get('plain_gemm_gflops', '-')} | "
              f"{n.get('bound_s', '-')} |")
    print(json.dumps({"cpu_flags": cpu_kind(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
