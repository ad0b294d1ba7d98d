"""Write a small grid on a tiny random Llama that touches most of the pipeline in a few
minutes on a CPU: KVR -> unseen KVR with random-word mixing, replay + model-written generic
passages, L2-SP, EWC, LwF, WiSE-FT and LoRA (alone and with EWC), a shared stage 1. For
checking that a refactor changes no result: run it with the old and the new code and
compare the two grids.

    .venv/bin/python scripts/tiny_grid.py /tmp/tiny        # prints the grid file's path
    .venv/bin/factmem grid /tmp/tiny/grid.yaml
    .venv/bin/python scripts/compare_grids.py /tmp/tiny/runs/tiny /tmp/other/runs/tiny
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from factmem.testing import build_tiny_model


def write_grid(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(folder / "model")
    base = {
        "name": "base", "model": str(model),
        "training": {"learning_rate": 1e-2, "batch_size": 4, "bf16": False, "warmup_ratio": 0.0},
        "evaluation": {"max_new_tokens": 8, "curve_every_steps": 2},
        "stages": [
            {"dataset": "kvr", "size": 8, "stop": {"epochs": 3},
             "options": {"key_length": 3, "value_length": 2},
             "mixing": {"source": "random_words", "words": 4, "ratio": 1.0}},
            {"dataset": "kvr_id", "size": 8, "stop": {"epochs": 2},
             "options": {"key_length": 3, "value_length": 2}},
        ],
    }  # fmt: skip
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    generic = {"source": "generic", "corpus": "model", "prefix_words": 4, "continuation_words": 4,
               "ratio": 1.0}  # fmt: skip
    grid = {
        "name": "tiny", "base": str(folder / "base.yaml"), "output_dir": str(folder / "runs"),
        "axes": {"strategy": {
            "No Mixing": {},
            "Replay/Generic": {"stages[1].replay": {"fraction": 0.5}, "stages[1].mixing": generic},
            "L2": {"stages[1].regularizer": {"method": "l2", "strength": 0.1}},
            "EWC": {"stages[1].regularizer": {"method": "ewc", "strength": 1.0e+4}},
            "LoRA": {"stages[1].lora": {"r": 4}},
            "LoRA/EWC": {"stages[1].lora": {"r": 4},
                         "stages[1].regularizer": {"method": "ewc", "strength": 1.0e+4}},
            "LwF/WiSE": {"stages[1].regularizer": {"method": "lwf", "strength": 0.5},
                         "stages[1].weight_average": 0.5},
        }, "seed": [0]},
    }  # fmt: skip
    (folder / "grid.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    return folder / "grid.yaml"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    print(write_grid(parser.parse_args().folder))
