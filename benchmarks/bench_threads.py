"""Stages side by side: two stages one after the other with all cores, against the same two
stages at once, one process each with an equal share of the cores (issue 39).

A grid trains distinct stages; this runs two of them (the same stage config under seeds 0 and
1, so two different stages of one kind) as `factmem run` processes, whole (model load,
training, scoring, saving), in three arrangements on one machine, one after the other:

  serial        seed 0, then seed 1, each with --threads torch threads (default: all cores)
  side by side  seed 0 and seed 1 at once, each with threads / 2
  (check)       seed 0 alone with threads / 2: its losses are those of the side-by-side seed 0
                unless running beside another process changes them (it should not)

and prints, per scenario: each stage's training time, the wall time of the pair, the pair's
throughput (stages an hour) and the ratio side by side / serial; user and system CPU time of
the processes (system time is what the per-step malloc trim costs, if anything: `--no-trim`
adds a serial run without it); and whether the losses at threads / 2 equal those at `threads`
bit for bit (step by step, from training.json) and whether the exact-match verdicts do.

Scenarios (each a one-stage config on the embedded SmolLM2, `--data-dir` the shared samples):
  popqa     128 PopQA facts, 2 epochs (8 steps of ~36-token rows)
  mixed50   64 PopQA facts + 128 generic passages of 50 -> 50 words (1:2), 1 epoch (6 steps)
  gsm8k     128 GSM8K examples, 1 epoch (4 steps of ~150-300-token rows)

    .venv/bin/python benchmarks/bench_threads.py --data-dir ../shared/data
    .venv/bin/python benchmarks/bench_threads.py --data-dir ../shared/data --scenario popqa
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SCENARIOS = {
    "popqa": {"dataset": "popqa", "path": "{d}/popqa/popqa_2000.json", "size": 128,
              "stop": {"epochs": 2}},
    "mixed50": {"dataset": "popqa", "path": "{d}/popqa/popqa_2000.json", "size": 64,
                "stop": {"epochs": 1},
                "mixing": {"source": "generic", "corpus": "local",
                           "path": "{d}/nltk/state_union.zip", "prefix_words": 50,
                           "continuation_words": 50}},
    "gsm8k": {"dataset": "gsm8k", "path": "{d}/gsm8k/train.jsonl", "size": 128,
              "stop": {"epochs": 1}},
}  # fmt: skip


def config_file(work: Path, scenario: str, seed: int, data_dir: str, extra: dict) -> Path:
    stage = json.loads(json.dumps(SCENARIOS[scenario]).replace("{d}", data_dir))
    config = {
        "name": f"{scenario}_seed{seed}",
        "model": "smollm2-135m",
        "seed": seed,
        "share_stages": False,
        "training": {"learning_rate": 5e-5, "attention": "sdpa",
                     "checkpoint_every_epochs": 0} | extra,
        "stages": [{"name": "D_A", **stage}],
    }  # fmt: skip
    path = work / f"{scenario}_seed{seed}_{len(list(work.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(config: Path, out: Path, threads: int) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "factmem", "run", str(config), "--output-dir", str(out),
               "--quiet"]  # fmt: skip
    return subprocess.Popen(command, env=env)


def finish(procs: list[subprocess.Popen]) -> tuple[float, float]:
    """Wait for the processes; the user and system CPU seconds they used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"a run failed (rc {proc.returncode})")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def stage_record(out: Path, scenario: str, seed: int) -> dict:
    stage = out / f"{scenario}_seed{seed}" / "stage1"
    training = json.loads((stage / "training.json").read_text())
    predictions = stage / "predictions" / "D_A.jsonl"
    verdicts = ([json.loads(line)["correct"] for line in predictions.read_text().splitlines()]
                if predictions.is_file() else [])  # fmt: skip
    return {"losses": [p["loss"] for p in training["loss_curve"]], "verdicts": verdicts,
            "train_s": training["wall_time_s"], "threads": training.get("threads"),
            "tokens": training["train_tokens"]}  # fmt: skip


def arrangement(work: Path, name: str, scenario: str, data_dir: str, runs: list[tuple],
                extra: dict | None = None) -> dict:
    """Run (seed, threads) pairs; `together` ones at once, else one after the other."""
    out = work / name
    start_time = time.perf_counter()
    user = system = 0.0
    for group in runs:
        procs = [start(config_file(work, scenario, seed, data_dir, extra or {}), out, threads)
                 for seed, threads in group]  # fmt: skip
        u, s = finish(procs)
        user, system = user + u, system + s
    wall = time.perf_counter() - start_time
    stages = {seed: stage_record(out, scenario, seed) for group in runs for seed, _ in group}
    return {"wall_s": wall, "user_s": user, "sys_s": system, "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="the shared samples (../shared/data)")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--no-trim", action="store_true",
                        help="also a serial pair with training.trim_memory: false")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    full, half = args.threads, max(1, args.threads // 2)
    summary = {}
    for scenario in args.scenario or list(SCENARIOS):
        work = Path(tempfile.mkdtemp(prefix=f"bench-threads-{scenario}-"))
        serial = arrangement(work, "serial", scenario, data_dir, [[(0, full)], [(1, full)]])
        side = arrangement(work, "side", scenario, data_dir, [[(0, half), (1, half)]])
        alone = arrangement(work, "alone", scenario, data_dir, [[(0, half)]])
        result = {"serial": serial, "side_by_side": side, "alone_half": alone}
        if args.no_trim:
            result["serial_no_trim"] = arrangement(work, "notrim", scenario, data_dir,
                                                   [[(0, full)], [(1, full)]],
                                                   {"trim_memory": False})  # fmt: skip
        s0, h0, a0 = serial["stages"][0], side["stages"][0], alone["stages"][0]
        result["same_losses_threads"] = s0["losses"] == h0["losses"]
        result["same_verdicts_threads"] = s0["verdicts"] == h0["verdicts"]
        result["same_losses_beside"] = a0["losses"] == h0["losses"]
        result["max_loss_diff_threads"] = max(
            (abs(a - b) for a, b in zip(s0["losses"], h0["losses"], strict=True)), default=0.0)
        result["speedup"] = serial["wall_s"] / side["wall_s"]
        summary[scenario] = result
        print(f"\n{scenario}: {s0['tokens']} tokens a stage")
        print("| arrangement | stage train s (seed 0, 1) | pair wall s | stages / h | user s "
              "| sys s (share) |")
        print("|---|---|---|---|---|---|")
        for key, label in (("serial", f"serial, {full} threads"),
                           ("serial_no_trim", f"serial, {full} threads, no trim"),
                           ("side_by_side", f"side by side, {half} thread(s) each")):  # fmt: skip
            if key not in result:
                continue
            r = result[key]
            trains = ", ".join(f"{st['train_s']:.0f}" for st in r["stages"].values())
            cpu = r["user_s"] + r["sys_s"]
            print(f"| {label} | {trains} | {r['wall_s']:.0f} | {2 * 3600 / r['wall_s']:.1f} "
                  f"| {r['user_s']:.0f} | {r['sys_s']:.0f} ({r['sys_s'] / cpu:.0%}) |")
        print(f"side by side / serial throughput: {result['speedup']:.2f}x; losses at {half} vs "
              f"{full} threads identical: {result['same_losses_threads']} (max step difference "
              f"{result['max_loss_diff_threads']:.2e}), verdicts identical: "
              f"{result['same_verdicts_threads']}; {half}-thread losses alone = beside another "
              f"process: {result['same_losses_beside']}")
    if args.json:
        for r in summary.values():
            for key in ("serial", "side_by_side", "alone_half", "serial_no_trim"):
                for st in r.get(key, {}).get("stages", {}).values():
                    st.pop("verdicts", None)
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
