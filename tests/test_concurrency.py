"""Two processes on one folder: each stage is trained once, nothing is corrupted (issue 14)."""

import os
import subprocess
import sys

import yaml
from test_integrity import _science
from test_pipeline import _config

from factmem.records import RunResults


def test_two_runs_of_one_config_on_one_folder_train_each_stage_once(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    command = [sys.executable, "-m", "factmem.cli", "run", str(path)]
    # whichever process takes stage 1's lock first holds it for 20 s while it writes the
    # stage's training data, so the other (it needs a few seconds to import) meets it
    # mid-stage whatever the machine's speed; the other then skips, writing no data
    paused = os.environ | {"FACTMEM_PAUSE_AT": "stage1/data.jsonl:20"}
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=paused)
    second = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=paused)
    logs = [p.communicate(timeout=600)[1] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], logs
    for stage in (1, 2):
        trained = sum(f"stage {stage} (stage{stage}): training on" in log for log in logs)
        skipped = sum(f"stage {stage} (stage{stage}): finished earlier, skipping" in log
                      for log in logs)  # fmt: skip
        assert (trained, skipped) == (1, 1), logs
    assert any("another process is working on this stage" in log for log in logs)
    results = RunResults.read(tmp_path / "runs" / "tiny" / "results.json")
    alone = _config(tiny_model_dir, tmp_path / "alone")
    from factmem.pipeline import run_experiment

    assert _science(results) == _science(run_experiment(alone, progress=False))
