"""Kill anywhere, any number of times: a grid killed inside each kind of write it makes, and
resumed after each kill, ends bitwise where an uninterrupted grid ends (issue 14, item 1).

The kills are not left to luck: FACTMEM_CRASH_AT (factmem.atomic.crash_point) makes the process
SIGKILL itself halfway through the first write whose path contains a given text, with the
file half written or the folder filled but not yet renamed. Every target below lies ahead of
the previous one in the grid's order of writes, so each attempt dies exactly there.
"""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from test_datasets import popqa_rows

from factmem.records import RunResults

# (text of the path written when the process is killed, the (run, stage) whose training the
# kill interrupts: that stage may start training again, from its last whole checkpoint).
# A kill after the model is saved but before its record is (training.json) resumes from the
# stage's final checkpoint: a training that runs no step, which the identical loss curves
# at the end show.
TARGETS = [
    ("familiarity/", None),  # the familiarity cache: a line torn
    ("no-mixing_seed0/stage1/data.jsonl", None),  # before training starts
    # the second checkpoint half saved (model written, optimizer not): resumed from the first
    ("no-mixing_seed0/stage1/trainer/checkpoint-6/", ("no-mixing_seed0", 1)),
    ("no-mixing_seed0/stage1/model", ("no-mixing_seed0", 1)),  # the model folder
    ("no-mixing_seed0/stage1/training.json", ("no-mixing_seed0", 1)),
    ("no-mixing_seed0/stage1/predictions/", None),
    ("no-mixing_seed0/stage1/stage.json", None),
    ("no-mixing_seed0/results.json", None),
    ("no-mixing_seed0/stage2/model", ("no-mixing_seed0", 2)),
    ("no-mixing_seed0/stage2/stage.json", None),
    ("replay-0.5_seed0/stage1/model", None),  # hard-linking the shared stage
    ("generic/", None),  # the cache of model-written generic passages (REMIX -/Generic)
    ("replay-0.5_seed0/stage2/training.json", ("replay-0.5_seed0", 2)),
    ("replay-0.5_seed0/results.json", None),
]


# generic passages written by the (tiny) model itself, cached in FACTMEM_CACHE/generic/
GENERIC = {"source": "generic", "corpus": "model", "prefix_words": 4, "continuation_words": 4,
           "ratio": 1.0}  # fmt: skip


def _grid(tmp_path: Path, model_dir: Path) -> Path:
    popqa = tmp_path / "popqa.json"
    popqa.write_text(json.dumps({"dev": popqa_rows(16), "test": []}))
    base = {
        "name": "base", "model": str(model_dir),
        # attention named: `auto` is timed anew under each FACTMEM_CACHE, and a choice that
        # flips between the two (a loaded machine) would change losses in the last digits
        "training": {"learning_rate": 1e-2, "batch_size": 4, "bf16": False,
                     "warmup_ratio": 0.0, "checkpoint_every_epochs": 1, "attention": "sdpa"},
        "evaluation": {"max_new_tokens": 8},
        "stages": [
            {"dataset": "popqa", "path": str(popqa), "size": 6, "stop": {"epochs": 3},
             "mixing": {"source": "random_words", "words": 4, "ratio": 1.0}},
            {"dataset": "kvr_id", "size": 6, "stop": {"epochs": 2},
             "options": {"key_length": 3, "value_length": 2}},
        ],
    }  # fmt: skip
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    grid = {"name": "g", "base": str(tmp_path / "base.yaml"),
            "output_dir": str(tmp_path / "runs"),
            "axes": {"strategy": {"No Mixing": {},
                                  "Replay 0.5": {"stages[1].replay": {"fraction": 0.5},
                                                 "stages[1].mixing": GENERIC}},
                     "seed": [0]}}  # fmt: skip
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    return tmp_path / "grid.yaml"


def _factmem(args: list[str], cache: Path, crash_at: str | None = None):
    env = os.environ | {"FACTMEM_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "false"}
    env.pop("FACTMEM_CRASH_AT", None)
    if crash_at:
        env["FACTMEM_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "factmem.cli", *args], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def _trainings(log: str) -> list[tuple[str, int]]:
    """(run, stage) of every stage training a grid's log shows, in order."""
    run, out = None, []
    for line in log.splitlines():
        started = re.search(r"run \d+/\d+: (\S+)", line)
        if started:
            run = started.group(1)
        trained = re.search(r"stage (\d+): training on \d+ examples", line)
        if trained:
            out.append((run, int(trained.group(1))))
    return out


def _science(root: Path) -> dict:
    out = {}
    for results in sorted(root.glob("*/results.json")):
        data = RunResults.read(results)
        predictions = {p.relative_to(results.parent).as_posix(): p.read_text()
                       for p in sorted(results.parent.glob("stage*/predictions/*.jsonl"))}
        out[results.parent.name] = (
            [(s.accuracy, [h["loss"] for h in s.loss_curve]) for s in data.stages],
            predictions,
        )  # fmt: skip
    return out


def test_a_grid_killed_inside_every_kind_of_write_resumes_bitwise(tiny_model_dir, tmp_path):
    reference_dir, crashed_dir = tmp_path / "reference", tmp_path / "crashed"
    for folder in (reference_dir, crashed_dir):
        folder.mkdir()
    done = _factmem(["grid", str(_grid(reference_dir, tiny_model_dir))], reference_dir / "cache")
    assert done.returncode == 0, done.stderr
    reference_trainings = _trainings(done.stderr)
    assert sorted(reference_trainings) == [("no-mixing_seed0", 1), ("no-mixing_seed0", 2),
                                           ("replay-0.5_seed0", 2)]  # fmt: skip
    assert _factmem(["report", str(reference_dir / "runs" / "g")], reference_dir).returncode == 0

    grid, cache = _grid(crashed_dir, tiny_model_dir), crashed_dir / "cache"
    trainings, allowed = [], {key: 1 for key in reference_trainings}
    for target, working_on in TARGETS:
        attempt = _factmem(["grid", str(grid)], cache, crash_at=target)
        assert attempt.returncode == -signal.SIGKILL, (target, attempt.returncode,
                                                       attempt.stderr[-2000:])  # fmt: skip
        trainings += _trainings(attempt.stderr)
        if working_on:  # a stage killed while it trains may start its training again
            allowed[working_on] += 1
    final = _factmem(["grid", str(grid)], cache)
    assert final.returncode == 0, final.stderr[-3000:]
    trainings += _trainings(final.stderr)
    for key, count in allowed.items():
        assert trainings.count(key) <= count, (key, trainings)
    assert set(trainings) == set(reference_trainings)  # nothing else was ever trained
    assert _science(crashed_dir / "runs" / "g") == _science(reference_dir / "runs" / "g")

    report = ["report", str(crashed_dir / "runs" / "g")]
    killed = _factmem(report, cache, crash_at="report/da_after_stage1.csv")
    assert killed.returncode == -signal.SIGKILL
    assert _factmem(report, cache).returncode == 0
    for table in sorted((reference_dir / "runs" / "g" / "report").glob("*.csv")):
        if table.name != "runs.csv":  # holds the run folders' paths
            rebuilt = crashed_dir / "runs" / "g" / "report" / table.name
            assert rebuilt.read_text() == table.read_text(), table.name
