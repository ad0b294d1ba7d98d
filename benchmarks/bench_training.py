"""Training speed of one stage: factmem's trainer against the naive way, same data and model.

naive:   transformers Trainer, DataCollatorForLanguageModeling (right-padded batches, labels =
         input ids, loss on every token), fp32, default AdamW. What a user writes first.
factmem: factmem.training.train_stage with its defaults (response-only labels, logits only
         where there are labels, bf16 autocast where the CPU supports it, fused AdamW).

Both train the embedded SmolLM2-135M-Instruct on the same KVR examples with batch size 32 for
the same number of epochs, from the same weights, in one process. Tokens/s counts every
input token (prompt + response), the same count for both.

    .venv/bin/python benchmarks/bench_training.py                     # KVR facts only
    .venv/bin/python benchmarks/bench_training.py --scenario mixed --examples 32 --epochs 2
                                        # + random-word REMIX data at 1:2 (mixed lengths)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

from factmem.config import MixingConfig, StopRule, TrainingConfig
from factmem.data.example import encode_example, format_example
from factmem.data.factoid import key_value_recall
from factmem.mixing import build_mixing
from factmem.models import load_model, load_tokenizer, resolve_model
from factmem.training import StagePlan, train_stage


def naive(path, tokenizer, examples, epochs, work) -> float:
    model = load_model(path, tokenizer)
    texts = [format_example(e, tokenizer.eos_token) for e in examples]
    data = [tokenizer(t, add_special_tokens=False) for t in texts]
    args = TrainingArguments(
        output_dir=str(work),
        per_device_train_batch_size=32,
        num_train_epochs=epochs,
        learning_rate=3e-4,
        lr_scheduler_type="cosine",
        warmup_ratio=0.05,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def ours(path, tokenizer, examples, epochs, work, **overrides) -> float:
    model = load_model(path, tokenizer)
    cfg = TrainingConfig(learning_rate=3e-4, checkpoint_every_epochs=0, **overrides)
    plan = StagePlan(examples, cfg, StopRule(epochs=epochs), work, seed=0)
    out = train_stage(model, tokenizer, plan, progress=False)
    return out.wall_time_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", choices=["kvr", "mixed"], default="kvr")
    parser.add_argument("--examples", type=int, default=64, help="KVR facts")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--mix-words", type=int, default=50, help="mixed: random-word length")
    parser.add_argument("--mix-ratio", type=float, default=2.0, help="mixed: D:D_M = 1:ratio")
    args = parser.parse_args()
    torch.manual_seed(0)
    path = resolve_model("smollm2-135m")
    tokenizer = load_tokenizer(path)
    examples = key_value_recall(args.examples, seed=0)
    if args.scenario == "mixed":  # REMIX: facts plus random word sequences, shuffled together
        cfg = MixingConfig(source="random_words", words=args.mix_words, ratio=args.mix_ratio)
        examples += build_mixing(cfg, len(examples), "0", "unused", examples)[0]
    tokens = args.epochs * sum(len(encode_example(tokenizer, e)["input_ids"]) for e in examples)
    variants = {
        "naive (Trainer, LM collator, fp32)": lambda w: naive(path, tokenizer, examples,
                                                              args.epochs, w),
        "factmem, bf16 off": lambda w: ours(path, tokenizer, examples, args.epochs, w, bf16=False),
        "factmem, always padded": lambda w: ours(path, tokenizer, examples, args.epochs, w,
                                                 packing=False),
        "factmem, always packed": lambda w: ours(path, tokenizer, examples, args.epochs, w,
                                                 packing=True),
        "factmem (defaults)": lambda w: ours(path, tokenizer, examples, args.epochs, w),
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        timings = {name: run(Path(tmp) / str(i)) for i, (name, run) in enumerate(variants.items())}
    base = timings["naive (Trainer, LM collator, fp32)"]
    rows = {
        name: {"seconds": round(s, 1), "tokens_per_s": round(tokens / s, 1),
               "speedup_vs_naive": round(base / s, 2)}
        for name, s in timings.items()
    }  # fmt: skip
    summary = {"scenario": args.scenario, "examples": len(examples), "epochs": args.epochs,
               "tokens": tokens, "threads": torch.get_num_threads(), "results": rows}  # fmt: skip
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
