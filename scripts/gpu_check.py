"""factmem on a CUDA GPU in one call (issue 26): `bash scripts/gpu_check.sh`.

Steps, most telling first, each a process of its own, timed, logged, and skipped (with the
reason) once the call's time budget could not fit it:

  1. environment   GPU, driver, torch, the versions factmem runs on
  2. cuda tests    the tests marked `cuda` (tests/test_cuda.py)
  3. default run   `factmem run default` on the GPU (wall time; every stage's device read
                   back from its training.json: a CPU fallback fails the step)
  4. throughput    benchmarks/bench_step_profile.py --no-profile: naive Trainer vs factmem,
                   KVR and mixed stages, tokens/s and the fraction of the bf16 peak
  5. paper cell    configs/grids/gpu-paper.yaml: PopQA -> LAMA at the paper's fact count,
                   No Mixing, -/Generic, -/Random, seed 0, its three runs as parallel processes
                   once their shared stage 1 is trained; then `factmem report`
  6. regime row    configs/grids/regime-map.yaml's 512-fact row (issue 25: 2-3 hours a run on
                   the CPU), its three learning rates as parallel processes; then its report.
                   Last, so a first call spends its budget on 1-5; a second call runs it
                   alone: `bash scripts/gpu_check.sh --steps regime-row`
`--steps` picks steps (the environment always runs).
Everything worth keeping goes under --out (the device's $OUT): gpu_check.log, summary.json,
and results.tar.gz (weight-free archives, reports, benchmark JSON), within what one call
brings back (8 files, 16 MiB each).

On the GPU machine the wheels, the embedded model and the data come from .gpu_bundle
(scripts/gpu_bundle.py); its work folder .gpu_work is git-ignored, so a second call while
the machine is warm resumes the grid where the first stopped. `--smoke` runs every step on
the CPU with a tiny random model and the data under --data-dir (tests/test_gpu_check.py),
so that the command cannot rot between GPU sessions.

Standard library only at import: nothing else is installed when it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_bundle  # noqa: E402  (standard library only, beside this file)

PAPER_FACTS = 2000
RESULT_LIMIT = 16 * 2**20  # one file back from the device
STEPS = ("cuda-tests", "default-run", "throughput", "paper-cell", "regime-row")


class Check:
    """Runs the steps against one deadline, logging to the console and gpu_check.log."""

    def __init__(self, out: Path, work: Path, env: dict, budget_s: float):
        self.out, self.work, self.env = out, work, env
        self.deadline = time.monotonic() + budget_s
        self.summary: dict = {"steps": {}}
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        self.log_file = (out / "gpu_check.log").open("a")

    def log(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, step: str, command: list[str], needs_s: float, **extra) -> bool:
        """One step as a process, cut at the deadline; its output goes to the log."""
        if self.left() < needs_s:
            self.summary["steps"][step] = {"status": "skipped", "why": f"{self.left():.0f} s "
                                           f"left of the budget, needs ~{needs_s:.0f} s"}
            self.log(f"[{step}] skipped: {self.summary['steps'][step]['why']}")
            return False
        self.log(f"[{step}] {' '.join(command)}")
        start = time.monotonic()
        try:
            proc = subprocess.run(command, cwd=ROOT, env=self.env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=max(self.left(), 1))  # fmt: skip
            output, rc = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as err:
            output, rc = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) \
                else (err.stdout or ""), "timeout"  # fmt: skip
        seconds = round(time.monotonic() - start, 1)
        self.log_file.write(output)
        self.log_file.flush()
        print(output[-4000:], flush=True)
        ok = rc == 0
        self.summary["steps"][step] = {"status": "ok" if ok else f"failed ({rc})",
                                       "seconds": seconds, **extra}  # fmt: skip
        self.log(f"[{step}] {'ok' if ok else f'FAILED ({rc})'} in {seconds} s")
        return ok

    def side_by_side(self, commands: dict[str, list[str]]) -> None:
        """Steps as processes at once on the one device, each cut at the deadline."""
        start = time.monotonic()
        procs = {step: subprocess.Popen(command, cwd=ROOT, env=self.env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for step, command in commands.items()}  # fmt: skip
        for step, proc in procs.items():
            try:
                output, _ = proc.communicate(timeout=max(self.left(), 1))
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                proc.kill()
                output, rc = proc.communicate()[0], "timeout"
            self.log_file.write(output)
            self.summary["steps"][step] = {"status": "ok" if rc == 0 else f"failed ({rc})",
                                           "seconds": round(time.monotonic() - start, 1)}
            self.log(f"[{step}] {'ok' if rc == 0 else f'FAILED ({rc})'}")

    def python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def factmem(self, *args: str) -> list[str]:
        return self.python("-m", "factmem", *args)


def install_bundle(bundle: Path, into: Path) -> tuple[Path, Path]:
    """The bundle's parts checked and unpacked, its wheels installed into `into/site`:
    (site-packages folder, data folder)."""
    unpacked = gpu_bundle.reassemble(bundle, into / "bundle")
    site = into / "site"
    wheels = sorted(str(p) for p in (unpacked / "wheels").glob("*.whl"))
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
               "--no-compile", "--upgrade", "--target", str(site), *wheels]  # fmt: skip
    if subprocess.run(command).returncode:
        raise SystemExit("gpu_check: pip could not install the bundle's wheels")
    return site, unpacked / "data"


def unfamiliar_popqa(check: Check, data_dir: Path, model: str) -> int | None:
    """How many PopQA facts of the local file the base model does not know (the familiarity
    filter, judged once; the grid's stage 1 reuses its cache)."""
    counted = check.work / "popqa_unfamiliar.json"
    popqa = str(data_dir / "popqa" / "popqa_2000.json")
    code = ("import json, sys; from factmem.familiarity import split_by_familiarity as s; "
            f"known, unknown = s({model!r}, 'popqa', path={popqa!r}, progress=False); "
            f"open({str(counted)!r}, 'w').write(json.dumps({{'known': len(known), "
            "'unknown': len(unknown)}))")  # fmt: skip
    if not check.run("familiarity", check.python("-c", code), needs_s=20):
        return None
    counts = json.loads(counted.read_text())
    check.summary["steps"]["familiarity"] |= counts
    return counts["unknown"]


def default_run(check: Check, model_args: list[str]) -> None:
    runs = check.work / "default-runs"
    ok = check.run("default run", check.factmem("run", "default", "--set",
                                                f"output_dir={runs}", *model_args),
                   needs_s=30)  # fmt: skip
    if not ok:
        return
    devices = sorted({json.loads(p.read_text()).get("device", "?")
                      for p in runs.rglob("training.json")})  # fmt: skip
    check.summary["steps"]["default run"]["devices"] = devices
    check.log(f"[default run] trained on: {devices}")
    wanted = "cuda" if check.summary["cuda"] else "cpu"
    if not devices or any(not d.startswith(wanted) for d in devices):
        check.summary["steps"]["default run"]["status"] = f"failed (not on {wanted}: {devices})"
        check.log(f"[default run] FAILED: a stage did not train on {wanted}")


def throughput(check: Check, model: str, epochs: int, facts: int) -> None:
    for scenario in ("kvr", "mixed"):
        target = check.work / f"throughput_{scenario}.json"
        check.run(f"throughput {scenario}", check.python(
            "benchmarks/bench_step_profile.py", "--scenario", scenario, "--no-profile",
            "--variants", "naive", "now", "--epochs", str(epochs), "--model", model,
            "--facts", str(facts),
            "--json", str(target)), needs_s=40)  # fmt: skip
        if target.is_file():
            check.summary["steps"][f"throughput {scenario}"]["results"] = json.loads(
                target.read_text())["results"]


def paper_cell(check: Check, data_dir: Path, facts: int, extra: list[str]) -> None:
    """The gpu-paper grid: one process trains the shared stage 1 (No Mixing's run), then the
    other strategies' stage 2 run beside it as parallel processes on the one GPU."""
    archive = check.work / "archive"
    sizes = ["--set", f"stages[0].size={facts}", "--set", f"stages[1].size={facts}"]
    base = ["grid", "gpu-paper", "--data-dir", str(data_dir), "--archive", str(archive),
            "--set", f"output_dir={check.work / 'runs'}", *sizes, *extra, "--quiet"]  # fmt: skip
    if not check.run("paper cell: stage 1 + No Mixing",
                     check.factmem(*base, "--only", "strategy=No Mixing"), needs_s=60,
                     facts=facts):  # fmt: skip
        return
    if check.left() < 60:
        check.run("paper cell: -/Generic, -/Random", [], needs_s=60)
        return
    check.log("[paper cell] -/Generic and -/Random as two processes on the one device")
    check.side_by_side({f"paper cell: {s}": check.factmem(*base, "--only", f"strategy={s}")
                        for s in ("-/Generic", "-/Random")})  # fmt: skip
    if (archive / "gpu-paper").is_dir():
        check.run("report", check.factmem("report", str(archive / "gpu-paper"), "--paper",
                                          "remix", "--out", str(check.work / "report")),
                  needs_s=10)  # fmt: skip


REGIME_ROW_RATES = ("0.0003", "0.0001", "5e-05")  # the map's learning-rate labels


def regime_row(check: Check, data_dir: Path, extra: list[str]) -> None:
    """The regime map's 512-fact row: one process per learning rate (each runs the three
    pairs, the two KVR pairs sharing their stage 1), side by side on the one device, into
    the same archive as the paper cell; then the map's report of what came back."""
    archive = check.work / "archive"
    base = ["grid", "regime-map", "--only", "facts=512", "--data-dir", str(data_dir),
            "--archive", str(archive), "--set", f"output_dir={check.work / 'runs'}", *extra,
            "--quiet"]  # fmt: skip
    if check.left() < 120:
        check.run("regime row", [], needs_s=120)
        return
    check.log("[regime row] learning rates " + ", ".join(REGIME_ROW_RATES) + " as processes")
    check.side_by_side({f"regime row: lr {rate}": check.factmem(
        *base, "--only", f"training.learning_rate={rate}") for rate in REGIME_ROW_RATES})
    if (archive / "regime-map").is_dir():
        check.run("regime row report", check.factmem(
            "report", str(archive / "regime-map"), "--paper", "remix", "--out",
            str(check.work / "regime-report")), needs_s=10)  # fmt: skip


def pack(check: Check) -> None:
    """results.tar.gz: archives, report, benchmark JSON (no weights), under one device file."""
    target = check.out / "results.tar.gz"
    with tarfile.open(target, "w:gz") as tar:
        for name in ("archive", "report", "regime-report"):
            if (check.work / name).is_dir():
                tar.add(check.work / name, arcname=name)
        for file in sorted(check.work.glob("*.json")):
            tar.add(file, arcname=file.name)
    size = target.stat().st_size
    check.summary["results_bytes"] = size
    if size > RESULT_LIMIT:
        check.log(f"results.tar.gz is {size / 2**20:.1f} MiB: over what one file brings back")


def environment(check: Check) -> None:
    code = ("import json, torch, transformers, platform; print(json.dumps({"
            "'python': platform.python_version(), 'torch': torch.__version__, "
            "'transformers': transformers.__version__, 'cuda': torch.cuda.is_available(), "
            "'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None}))")
    out = subprocess.run([sys.executable, "-c", code], env=check.env, text=True,
                         capture_output=True)  # fmt: skip
    if out.returncode:
        raise SystemExit(f"gpu_check: cannot import torch/transformers:\n{out.stderr[-2000:]}")
    check.summary |= json.loads(out.stdout.strip().splitlines()[-1])
    check.log(f"[environment] {json.dumps({k: check.summary[k] for k in ('python', 'torch', 'transformers', 'cuda', 'gpu')})}")  # noqa: E501
    smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True) \
        if check.summary["cuda"] else None  # fmt: skip
    if smi is not None:
        check.log(f"[environment] {smi.stdout.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    parser.add_argument("--work", type=Path, default=ROOT / ".gpu_work")
    parser.add_argument("--bundle", type=Path, default=gpu_bundle.BUNDLE)
    parser.add_argument("--budget-s", type=float, default=540,
                        help="stop starting steps past this (a device call allows 600 s)")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU, tiny random model, data from --data-dir (the test suite)")
    parser.add_argument("--data-dir", type=Path, help="with --smoke: the data folder")
    parser.add_argument("--facts", type=int, default=PAPER_FACTS)
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS),
                        help="which steps to run (default: all, in this order)")
    args = parser.parse_args(argv)
    started = time.monotonic()  # the budget counts the unpacking and installing too
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1", FACTMEM_CACHE=str(args.work / "cache"))  # fmt: skip
    paths = [str(ROOT / "src")]
    if args.smoke:
        if args.data_dir is None:
            parser.error("--smoke needs --data-dir")
        data_dir = args.data_dir.resolve()
    else:
        site, data_dir = install_bundle(args.bundle, args.work)
        paths.insert(0, str(site))
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    check = Check(args.out, args.work, env, args.budget_s - (time.monotonic() - started))
    environment(check)
    if not args.smoke and not check.summary["cuda"]:
        raise SystemExit("gpu_check: torch sees no CUDA device here; --smoke checks the CPU")
    model, model_args, extra, epochs = "smollm2-135m", [], [], 6
    if args.smoke:  # every step as on the GPU, at a size that runs in seconds
        tiny = args.work / "tiny-model"
        check.run("tiny model", check.python("-c", "from factmem.testing import "
                                             f"build_tiny_model as b; b({str(tiny)!r})"), 1)
        model, epochs = str(tiny), 1
        quick = ["--set", f"model={tiny}", "--set", "evaluation.max_new_tokens=8",
                 "--set", "training.bf16=false"]  # fmt: skip
        model_args = [*quick, "--set", "stages[0].size=8", "--set", "stages[1].size=8",
                      "--set", "stages[0].stop.epochs=2", "--set", "stages[1].stop.epochs=1"]
        extra = [*quick, "--set", "stages[0].stop.max_epochs=2",
                 "--set", "stages[1].stop.max_epochs=1"]  # fmt: skip
    steps = set(args.steps)
    if "cuda-tests" in steps:
        check.run("cuda tests", check.python("-m", "pytest", "-q", "-p", "no:cacheprovider",
                                             "-rs", "-m", "cuda", "tests/test_cuda.py"),
                  needs_s=20)  # fmt: skip
    if "default-run" in steps:
        default_run(check, model_args)
    if "throughput" in steps:
        throughput(check, model, epochs, 8 if args.smoke else 32)
    unknown = unfamiliar_popqa(check, data_dir, model) if "paper-cell" in steps else None
    if unknown:
        # popqa draws from every other fact (popqa_id, the unseen facts of its kind, from
        # the rest): a stage holds at most half of the unfamiliar ones
        facts = min(args.facts, unknown // 2)
        if facts < args.facts:
            check.log(f"[paper cell] {unknown} unfamiliar PopQA facts in the local file, half "
                      f"of them drawable: {facts} per stage instead of {args.facts}")
        paper_cell(check, data_dir, facts, extra)
    if "regime-row" in steps:
        # smoke: the row's 512 facts (and GSM8K's 32/128) cut to the tiny model's size
        sizes = ["--set", "stages[0].size=4", "--set", "stages[1].size=4"] if args.smoke else []
        regime_row(check, data_dir, [*extra, *sizes])
    pack(check)
    failed = [s for s, r in check.summary["steps"].items() if r["status"] != "ok"]
    check.summary["failed_or_skipped"] = failed
    (args.out / "summary.json").write_text(json.dumps(check.summary, indent=1) + "\n")
    check.log(f"done: {len(check.summary['steps']) - len(failed)} steps ok, "
              f"not ok: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
