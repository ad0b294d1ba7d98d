"""Where a training step's time goes, and how close it is to the machine's matmul bound.

One stage of the embedded SmolLM2-135M with batch 32, trained three ways, each in its own
process (so that none inherits another's allocator state), one after another:

  naive    transformers' Trainer, DataCollatorForLanguageModeling, fp32 (what a user writes)
  before   factmem as it was: SDPA attention, transformers' default (`training.attention: sdpa`)
  now      factmem's defaults: the attention kernel chosen by measurement

For each, tokens/s over the whole stage (`train_stage`'s own wall time: collator, answer-
column logits, fused AdamW, malloc trim, all of it), then the same stage again under
torch.profiler for two steps after two warm-up steps: the share of step time in matrix
products (aten::mm/addmm/bmm, self time) and their FLOP rate. The bound is a plain
`torch.mm` of every matmul shape of those steps, timed in the same process in the step's
dtype: the step time if a step cost its matrix products and nothing else.

    .venv/bin/python benchmarks/bench_step_profile.py                      # kvr, bf16 auto
    .venv/bin/python benchmarks/bench_step_profile.py --scenario mixed
    .venv/bin/python benchmarks/bench_step_profile.py --scenario mixed --repeat 3 --no-profile
    .venv/bin/python benchmarks/bench_step_profile.py --bf16 false         # the fp32 path
                                                 # (what CPUs without AVX-512 BF16 run)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
VARIANTS = {  # name: (environment, training overrides)
    "naive": ({}, None),
    "before": ({}, {"attention": "sdpa"}),
    "now": ({}, {}),
}


def examples(scenario: str, facts: int):
    from factmem.config import MixingConfig
    from factmem.data.factoid import key_value_recall
    from factmem.mixing import build_mixing

    data = key_value_recall(facts, seed=0)
    if scenario == "mixed":  # REMIX: 50 random words per example at D:D_M = 1:2
        cfg = MixingConfig(source="random_words", words=50, ratio=2.0)
        data += build_mixing(cfg, len(data), "0", "unused", data)[0]
    return data


class _Steps:
    """A TrainerCallback that advances the profiler's schedule once per optimizer step."""

    def __init__(self, profiler):
        from transformers import TrainerCallback

        outer = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                outer.profiler.step()

        self.profiler, self.callback = profiler, Callback()


def train(variant: str, data, tokenizer, path: str, epochs: int, bf16: bool, work: Path,
          callbacks=()) -> float:  # fmt: skip
    """Seconds of one stage's training (the model loaded outside the timing)."""
    from factmem.config import StopRule, TrainingConfig
    from factmem.models import load_model
    from factmem.training import StagePlan, train_stage

    model = load_model(path, tokenizer)
    if variant == "naive":
        return naive(model, data, tokenizer, epochs, work, callbacks, bf16)
    cfg = TrainingConfig(learning_rate=3e-4, checkpoint_every_epochs=0, bf16=bf16,
                         **VARIANTS[variant][1])  # fmt: skip
    if callbacks:  # profiling: train_stage builds its own Trainer; add the callback to it
        import factmem.training as training

        original = training._StageTrainer.__init__

        def with_callbacks(self, *args, **kwargs):
            kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + list(callbacks)
            original(self, *args, **kwargs)

        training._StageTrainer.__init__ = with_callbacks
    plan = StagePlan(data, cfg, StopRule(epochs=epochs), work, seed=0)
    out = train_stage(model, tokenizer, plan, progress=False)
    if out.attention:
        print(f"kernels: {out.attention}", file=sys.stderr)
    return out.wall_time_s


def naive(model, data, tokenizer, epochs, work, callbacks, bf16: bool = False) -> float:
    """The Trainer as a user writes it: fp32 on a CPU; on a GPU with bf16=True, the flag
    every GPU user sets (so the GPU comparison is not flattered by an fp32 baseline)."""
    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from factmem.data.example import format_example

    on_gpu = torch.cuda.is_available()
    encoded = [tokenizer(format_example(e, tokenizer.eos_token), add_special_tokens=False)
               for e in data]  # fmt: skip
    args = TrainingArguments(output_dir=str(work), per_device_train_batch_size=32,
                             num_train_epochs=epochs, learning_rate=3e-4,
                             lr_scheduler_type="cosine", warmup_ratio=0.05, save_strategy="no",
                             report_to="none", use_cpu=not on_gpu, disable_tqdm=True,
                             bf16=bf16 and on_gpu, logging_strategy="no")  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=encoded, callbacks=list(callbacks),
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def plain_gemm_seconds(shapes: dict[tuple, int], dtype) -> float:
    """Seconds that `count` plain torch.mm calls of each (m, k) x (k, n) shape take."""
    import torch

    total = 0.0
    for (m, k, n), count in shapes.items():
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(min(count, 8)):
                torch.mm(a, b)
            best = min(best, (time.perf_counter() - start) / min(count, 8))
        total += best * count
    return total


def matmul_account(events, dtype) -> dict:
    """The profiled matrix products: their self time, their FLOP rate, the rate of a plain
    `torch.mm` of the same shapes timed here in `dtype`, and the bound (seconds, if every
    matmul ran at that rate)."""
    matmul = [e for e in events if e.name in MATMULS]
    matmul_s = sum(e.self_cpu_time_total for e in matmul) / 1e6
    flops = sum(e.flops or 0 for e in matmul)
    shapes: dict[tuple, int] = {}
    for e in matmul:
        if e.name != "aten::mm" or len(e.input_shapes) < 2:  # bmm: attention, a few percent
            continue
        (m, k), (_, n) = e.input_shapes[0], e.input_shapes[1]
        shapes[(m, k, n)] = shapes.get((m, k, n), 0) + 1
    mm_flops = sum(2 * m * k * n * c for (m, k, n), c in shapes.items())
    gemm_s = plain_gemm_seconds(shapes, dtype)
    return {"matmul_s": matmul_s,
            "matmul_gflops": round(flops / matmul_s / 1e9, 1) if matmul_s else None,
            "plain_gemm_gflops": round(mm_flops / gemm_s / 1e9, 1) if gemm_s else None,
            "bound_s": gemm_s * flops / max(mm_flops, 1)}  # fmt: skip


def profile(variant: str, data, tokenizer, path: str, bf16: bool, work: Path) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, schedule

    steps = 2
    prof = torch.profiler.profile(activities=[ProfilerActivity.CPU], record_shapes=True,
                                  with_flops=True,
                                  schedule=schedule(wait=1, warmup=1, active=steps,
                                                    repeat=1))  # fmt: skip
    hook = _Steps(prof)
    steps_per_epoch = -(-len(data) // 32)
    epochs = -(-(2 + steps) // steps_per_epoch)
    with prof:
        train(variant, data, tokenizer, path, epochs, bf16, work, [hook.callback])
    events = prof.events()
    step_us = sum(e.cpu_time_total for e in events if e.name.startswith("ProfilerStep"))
    autocast = bf16 and variant != "naive"
    mm = matmul_account(events, torch.bfloat16 if autocast else torch.float32)
    top = {}
    for e in events:
        if not e.name.startswith("ProfilerStep"):
            top[e.name] = top.get(e.name, 0) + e.self_cpu_time_total
    others = sorted(((k, v) for k, v in top.items() if k not in MATMULS), key=lambda kv: -kv[1])
    return {
        "profiled_s_per_step": round(step_us / 1e6 / steps, 3),
        "matmul_s_per_step": round(mm["matmul_s"] / steps, 3),
        "matmul_gflops": mm["matmul_gflops"],
        "plain_gemm_gflops": mm["plain_gemm_gflops"],
        "bound_s_per_step": round(mm["bound_s"] / steps, 3),
        "largest_other_ops_s_per_step": {k: round(v / 1e6 / steps, 3) for k, v in others[:6]},
    }


def worker(args) -> None:
    import torch

    from factmem.data.example import encode_example
    from factmem.models import load_tokenizer, resolve_model
    from factmem.training import release_freed_memory, use_bf16

    args.no_profile = args.no_profile or torch.cuda.is_available()  # the profile reads CPU ops
    path = resolve_model(args.model)
    tokenizer = load_tokenizer(path)
    data = examples(args.scenario, args.facts)
    bf16 = use_bf16(args.bf16 if args.bf16 == "auto" else args.bf16 == "true")
    tokens = args.epochs * sum(len(encode_example(tokenizer, e)["input_ids"]) for e in data)
    with tempfile.TemporaryDirectory() as tmp:
        seconds = train(args.worker, data, tokenizer, path, args.epochs, bf16, Path(tmp) / "t")
        # the naive Trainer does not trim: without this its freed memory stays with the
        # process, and the profiled stage after it was OOM-killed on 24 GB once
        gc.collect()
        release_freed_memory()
        row = {"seconds": round(seconds, 1), "tokens": tokens,
               "tokens_per_s": round(tokens / seconds, 1),
               "bf16": bf16 and (args.worker != "naive" or torch.cuda.is_available())}
        if not args.no_profile:
            row |= profile(args.worker, data, tokenizer, path, bf16, Path(tmp) / "p")
    steps = args.epochs * -(-len(data) // 32)
    row["s_per_step"] = round(seconds / steps, 3)
    if "matmul_s_per_step" in row:
        # the profiler slows the Python around the kernels, not the kernels: the share is
        # taken of the step as timed without it
        row["matmul_share"] = round(row["matmul_s_per_step"] / row["s_per_step"], 3)
    if torch.cuda.is_available():
        row |= gpu_fraction(path, row["tokens_per_s"])
    print(json.dumps(row))


def gpu_fraction(path: str, tokens_per_s: float) -> dict:
    """Model FLOP/s (6 x parameters x tokens/s, the usual training estimate) against the bf16
    peak: the datasheet's where known, and a plain 8192^3 bf16 matmul measured here."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    parameters = sum(p.numel() for p in model.parameters())
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize()
    measured = 10 * 2 * 8192**3 / (time.perf_counter() - start)
    name = torch.cuda.get_device_name()
    datasheet = next((v for k, v in DATASHEET_BF16.items() if k in name), None)
    model_flops = 6 * parameters * tokens_per_s
    return {"gpu": name, "parameters": parameters, "model_tflops": round(model_flops / 1e12, 2),
            "gemm_tflops": round(measured / 1e12, 1),
            "of_gemm_peak": round(model_flops / measured, 4),
            "of_datasheet_peak": round(model_flops / datasheet, 4) if datasheet else None}


DATASHEET_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12}  # dense


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=["kvr", "mixed"], default="kvr")
    parser.add_argument("--facts", type=int, default=32, help="KVR facts (mixed: + 2x random)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the timed stage")
    parser.add_argument("--bf16", choices=["auto", "true", "false"], default="auto")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--model", default="smollm2-135m", help="a config's model name")
    parser.add_argument("--no-profile", action="store_true",
                        help="time the stages only (no torch.profiler pass; always on a GPU)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="time every variant this many times, alternating (runs of one "
                        "variant differ by up to ~20%% here); the table shows the median")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    rows: dict[str, dict] = {}
    for round_ in range(args.repeat):  # alternating: a slow spell of the machine hits all
        for name in args.variants:
            profile_it = not args.no_profile and round_ == 0
            command = [sys.executable, __file__, "--worker", name, "--scenario", args.scenario,
                       "--facts", str(args.facts), "--epochs", str(args.epochs),
                       "--bf16", args.bf16, "--model", args.model,
                       *([] if profile_it else ["--no-profile"])]  # fmt: skip
            out = subprocess.run(command, env=dict(os.environ) | VARIANTS[name][0],
                                 capture_output=True, text=True)  # fmt: skip
            if out.returncode:
                sys.exit(f"variant {name} failed:\n{out.stderr[-3000:]}")
            kernels = [line for line in out.stderr.splitlines() if line.startswith("kernels:")]
            row = json.loads(out.stdout.strip().splitlines()[-1])
            if kernels:
                row["kernels"] = kernels[0].removeprefix("kernels: ")
            print(name, json.dumps(row), flush=True)
            if name not in rows:
                rows[name] = row | {"tokens_per_s_runs": []}
            rows[name]["tokens_per_s_runs"].append(row["tokens_per_s"])
    for row in rows.values():  # the median run stands for the variant
        runs = sorted(row["tokens_per_s_runs"])
        row["tokens_per_s"] = runs[len(runs) // 2] if len(runs) % 2 else round(
            (runs[len(runs) // 2 - 1] + runs[len(runs) // 2]) / 2, 1)
        row["s_per_step"] = round(row["s_per_step"] * row["tokens_per_s_runs"][0]
                                  / row["tokens_per_s"], 3)  # fmt: skip
    base = rows.get("naive", {}).get("tokens_per_s")
    before = rows.get("before", {}).get("tokens_per_s")
    vs = lambda r, ref: f"{r['tokens_per_s'] / ref:.2f}x" if ref else "-"  # noqa: E731
    if args.no_profile or any("matmul_s_per_step" not in r for r in rows.values()):
        print("\n| variant | tokens/s | vs naive | vs before | s/step | model TFLOP/s "
              "| of GEMM peak | of datasheet peak |")
        print("|---|---|---|---|---|---|---|---|")
        for name, r in rows.items():
            print(f"| {name} | {r['tokens_per_s']} | {vs(r, base)} | {vs(r, before)} | "
                  f"{r['s_per_step']} | {r.get('model_tflops', '-')} | "
                  f"{r.get('of_gemm_peak', '-')} | {r.get('of_datasheet_peak', '-')} |")
    else:
        print("\n| variant | tokens/s | vs naive | vs before | s/step | matmul s/step "
              "| matmul share | matmul GFLOP/s | plain GEMM GFLOP/s | bound s/step |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, r in rows.items():
            print(f"| {name} | {r['tokens_per_s']} | {vs(r, base)} | {vs(r, before)} | "
                  f"{r['s_per_step']} | {r['matmul_s_per_step']} | "
                  f"{100 * r['matmul_share']:.0f}% | {r['matmul_gflops']} | "
                  f"{r['plain_gemm_gflops']} | {r['bound_s_per_step']} |")
    summary = {"scenario": args.scenario, "facts": args.facts, "epochs": args.epochs,
               "bf16": args.bf16, "cpu_flags": cpu_kind(), "results": rows}  # fmt: skip
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


def cpu_kind() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    return ", ".join(f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags)


if __name__ == "__main__":
    main()
