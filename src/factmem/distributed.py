"""Multi-process runs (`accelerate launch` / `torchrun`): every rank trains, rank 0 writes.

transformers' Trainer already spreads a stage over the ranks (DDP, FSDP, DeepSpeed); around
it, the pipeline must write each file once and score once. These helpers say which rank
this is and let the others wait until rank 0 has written what they read next.
"""

from __future__ import annotations

import os

import torch


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process or before the group exists)."""
    if world_size() > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
