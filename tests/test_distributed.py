"""A run launched on 2 processes (torchrun, gloo on CPU): every rank trains, rank 0 writes."""

import subprocess
import sys

import pytest
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


FSDP = {"fsdp": "full_shard auto_wrap",
        "fsdp_config": {"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
                        "sync_module_states": False}}  # fmt: skip  # CPU: no device to sync on


def test_fsdp_over_two_cpu_processes_trains_as_one_process(tiny_model_dir, tmp_path):
    """The documented FSDP settings (docs/scale.md), full sharding over gloo: the same losses
    as one process, and a saved model that is whole (its state dict gathered on save)."""
    from safetensors.torch import load_file

    from factmem.config import load_config
    from factmem.pipeline import run_experiment

    data = tiny_config_data(tiny_model_dir, tmp_path / "runs", name="fsdp", epochs=(2, 2),
                            max_new_tokens=6)  # fmt: skip
    path = tmp_path / "fsdp.yaml"
    path.write_text(yaml.safe_dump(data | {"training": data["training"] | {"trainer_args": FSDP}}))
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "-m", "factmem.cli", "run", str(path), "--quiet"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    sharded = RunResults.read(tmp_path / "runs" / "fsdp" / "results.json")
    alone = run_experiment(load_config(data | {"name": "alone"}), progress=False)
    for a, b in zip(sharded.stages, alone.stages, strict=True):
        assert [h["loss"] for h in a.loss_curve] == pytest.approx(
            [h["loss"] for h in b.loss_curve], rel=1e-4)
        assert a.accuracy == b.accuracy
    for k in (1, 2):
        ours = load_file(tmp_path / "runs" / "fsdp" / f"stage{k}" / "model" / "model.safetensors")
        ref = load_file(tmp_path / "runs" / "alone" / f"stage{k}" / "model" / "model.safetensors")
        assert ours.keys() == ref.keys()
        for name, tensor in ref.items():
            assert ours[name].shape == tensor.shape  # whole, not a shard
            assert (ours[name] - tensor).abs().max() < 1e-2, name
