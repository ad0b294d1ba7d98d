"""Peak memory and time of training steps on long answers: the model's own loss against
`training.loss_chunk_tokens` (the head and cross-entropy on answer tokens, chunk by chunk)
and against gradient checkpointing (`training.trainer_args.gradient_checkpointing`).

Found when KVR -> EvolCode stages were OOM-killed on a 24 GB machine: a batch of 32 EvolCode
answers reached 23 GB (seed 0) or more (seeds 1-2) in one step. Each variant runs in its
own process (peak RSS = the process's VmHWM): the embedded SmolLM2-135M, factmem's
train_stage with its defaults (bf16 autocast where the CPU has it, packed rows), the same
EvolCode examples from ../shared/data, 2 optimizer steps of the batch size given.

    .venv/bin/python benchmarks/bench_chunked_loss.py --data-dir ../shared/data --examples 16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {  # label -> TrainingConfig settings
    "model's own loss": {},
    "loss_chunk_tokens: 1024": {"loss_chunk_tokens": 1024},
    "gradient checkpointing": {"trainer_args": {"gradient_checkpointing": True}},
}


def workload(data_dir: str, examples: int, label: str) -> None:
    from factmem.config import StopRule, TrainingConfig
    from factmem.data.registry import load_examples
    from factmem.models import load_model, load_tokenizer, resolve_model
    from factmem.training import StagePlan, train_stage

    path = resolve_model("smollm2-135m")
    tokenizer = load_tokenizer(path)
    model = load_model(path, tokenizer)
    data = load_examples("evolcode", examples, 1, path=f"{data_dir}/evolcode")
    cfg = TrainingConfig(batch_size=examples, checkpoint_every_epochs=0, **VARIANTS[label])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        plan = StagePlan(data, cfg, StopRule(epochs=2), Path(work), seed=0)
        out = train_stage(model, tokenizer, plan, progress=False)
    seconds = time.perf_counter() - start
    status = Path("/proc/self/status").read_text().splitlines()
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    print(json.dumps({"peak_gb": peak / 2**20, "seconds": seconds, "tokens": out.train_tokens,
                      "losses": [h["loss"] for h in out.loss_curve]}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--examples", type=int, default=16, help="EvolCode answers a batch")
    args = parser.parse_args()
    rows = []
    for label in VARIANTS:
        command = [sys.executable, __file__, "--workload", args.data_dir, str(args.examples),
                   label]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append((label, json.loads(out.stdout.strip().splitlines()[-1])))
        result = rows[-1][1]
        print(f"{label:26} peak RSS {result['peak_gb']:5.2f} GB  {result['seconds']:6.1f} s  "
              f"{result['tokens'] / result['seconds']:6.1f} tokens/s  losses "
              + " ".join(f"{x:.4f}" for x in result["losses"]), flush=True)  # fmt: skip
    base = rows[0][1]
    for label, result in rows[1:]:
        print(f"{label}: {result['peak_gb'] / base['peak_gb']:.2f}x the peak memory, "
              f"{base['seconds'] / result['seconds']:.2f}x the speed")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--workload":
        workload(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
