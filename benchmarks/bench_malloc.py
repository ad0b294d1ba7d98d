"""Resident memory of CPU training when batch lengths vary: glibc's default malloc
settings, `MALLOC_TRIM_THRESHOLD_=0`, and factmem's `training.trim_memory` (one
`malloc_trim(0)` after each optimizer step).

Found when a grid process training KVR -> EvolCode with replay (two batches an epoch of
different lengths) grew from 9 to 23 GB in one stage and was killed by the kernel's OOM
killer, twice. glibc raises its mmap threshold after large frees, so later large tensors
come from the heap and freed memory stays with the process. Each variant runs in its own
process (glibc reads the setting at start): the embedded SmolLM2-135M, 14 AdamW steps on
random token batches of 8 rows, bf16 autocast as `training.bf16: auto` would choose here,
lengths drawn from 100-700 (seeded) or fixed at 400. Prints RSS after the last step and
the wall time; compare ratios from one run of this script.

    .venv/bin/python benchmarks/bench_malloc.py
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

STEPS = 14
VARIANTS = (  # label, environment, malloc_trim(0) after each step
    ("glibc default", {}, False),
    ("MALLOC_TRIM_THRESHOLD_=0", {"MALLOC_TRIM_THRESHOLD_": "0"}, False),
    ("malloc_trim after each step", {}, True),
)


def workload(vary: bool, trim: bool) -> None:
    import torch

    from factmem.models import load_model, load_tokenizer, resolve_model
    from factmem.training import bf16_supported, release_freed_memory

    path = resolve_model("smollm2-135m")
    tokenizer = load_tokenizer(path)
    model = load_model(path, tokenizer)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(STEPS):
        length = rng.randint(100, 700) if vary else 400
        ids = torch.randint(0, tokenizer.vocab_size, (8, length), generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_supported()):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if trim:
            release_freed_memory()
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    print(f"{pages * os.sysconf('SC_PAGE_SIZE') / 2**30:.2f} {time.perf_counter() - start:.1f}")


def clean_env() -> dict[str, str]:
    """This environment without malloc tuning, so that "glibc default" is the default."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}


def measure(vary: bool, env: dict[str, str], trim: bool) -> tuple[float, float]:
    command = [sys.executable, __file__, "--workload", "vary" if vary else "fixed"]
    out = subprocess.run(command + (["trim"] if trim else []), env={**clean_env(), **env},
                         capture_output=True, text=True, check=True)  # fmt: skip
    rss, seconds = out.stdout.split()[-2:]
    return float(rss), float(seconds)


def main() -> None:
    rows = []
    for vary in (True, False):
        for label, env, trim in VARIANTS:
            rss, seconds = measure(vary, env, trim)
            rows.append((("varying" if vary else "fixed") + " lengths", label, rss, seconds))
            print(f"{rows[-1][0]:16} {label:30} RSS {rss:5.2f} GB  {seconds:6.1f} s", flush=True)


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--workload":
        workload(sys.argv[2] == "vary", sys.argv[3:] == ["trim"])
    else:
        main()
