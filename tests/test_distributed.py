"""A run launched on 2 processes (torchrun, gloo on CPU): every rank trains, rank 0 writes."""

import subprocess
import sys

import yaml

from factmem.records import RunResults
from factmem.testing import tiny_config_data


def test_two_process_launch_trains_with_the_global_batch(tiny_model_dir, tmp_path):
    # warmup as by default: this test's numbers were made with it
    config = tiny_config_data(tiny_model_dir, tmp_path / "runs", name="ddp", epochs=(2, 2),
                              max_new_tokens=6, warmup_ratio=0.05)  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "-m", "factmem.cli", "run", str(path), "--quiet"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("ddp: exact match") == 1  # rank 0 reports, once
    results = RunResults.read(tmp_path / "runs" / "ddp" / "results.json")
    assert results.finished
    # batch_size is global: 8 facts / 4 per step = 2 steps an epoch, as in one process
    assert [s.steps for s in results.stages] == [4, 4]
    assert all(len(s.loss_curve) == 4 for s in results.stages)
    for k in (1, 2):
        stage = tmp_path / "runs" / "ddp" / f"stage{k}"
        assert (stage / "model" / "model.safetensors").is_file()
        assert not (stage / "trainer").exists()
        assert len((stage / "data.jsonl").read_text().splitlines()) == 8
