"""The attention kernel of a training step, chosen by measurement.

transformers picks attention by name (SDPA unless told otherwise). On CPUs with bf16
autocast, the SDPA flash kernel's backward cost 0.63 s of a 4.4 s SmolLM2 step on the short
rows of factoid batches (32 x 36 tokens), and eager attention (two batched matmuls and a
softmax) a few tens of ms; at 512-token packed rows the reverse held (BENCHMARKS.md). So
with `training.attention: auto` each batch shape (rows x width bucket) is timed once per
machine (the choice is kept on disk), for each candidate, and the faster one trains it.
Neither torch nor transformers measures this, hence the code here. The kernels differ
only in float rounding (tests), but that rounding can move a seed's retention by several
points; `auto` is not part of a run's fingerprint, a named kernel is (config/schema.py).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from factmem.atomic import write_json_atomic
from factmem.distributed import world_size

T = TypeVar("T")

log = logging.getLogger(__name__)

# Kernels `auto` chooses between: both take any mask and any layout factmem trains with.
# (flash-attention needs another batch layout, see batching.py, and is chosen by name.)
AUTO_CANDIDATES = ("sdpa", "eager")
# Another kernel replaces the model's own only when at least this much faster: timings of a
# few milliseconds are noisy, and a choice flipping between runs would change their rounding.
MIN_GAIN = 0.10
# Timings further apart than this are decided on one round; closer ones get a second.
CLEAR_GAIN = 1.5

# (machine, device, dtype, shape of the model, batch bucket) -> kernel. Kept on disk
# (FACTMEM_CACHE/attention_kernels.json): a choice is measured once per machine, and every
# later run there trains with the same kernel, so runs of one config stay reproducible to
# the bit instead of following a timing that can flip (a tiny model's timings did).
_chosen: dict[str, str] = {}
_loaded = False


def width_bucket(width: int, smallest: int = 32) -> int:
    """Batch widths (or row counts) timed together: powers of two from `smallest` (factoid
    rows are 30-60 tokens, packed rows up to pack_row_tokens; packed batches of 7, 8 or 9
    rows are one bucket of rows, timed once)."""
    bucket = smallest
    while bucket < width:
        bucket *= 2
    return bucket


def attention_module(model: torch.nn.Module) -> torch.nn.Module | None:
    """The model's first self-attention layer (whose shapes and eager kernel are timed)."""
    for module in model.modules():
        if type(module).__name__.endswith("Attention") and hasattr(module, "head_dim"):
            return module
    return None


def current_attention(model: torch.nn.Module) -> str:
    return getattr(model.config, "_attn_implementation", None) or "eager"


def set_attention(model: torch.nn.Module, name: str) -> None:
    """Switch the model's attention kernel; masks and layers read it on every forward."""
    if current_attention(model) == name:
        return
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:  # older transformers
        model.config._attn_implementation = name


def _attention_function(module: torch.nn.Module, name: str) -> Callable | None:
    if name == "eager":  # each model file defines its own eager kernel
        return getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS.get(name)


def _causal_mask(rows: int, width: int, name: str, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:  # fmt: skip
    """A 4-D causal mask of the kind transformers hands each kernel for a padded or packed
    batch: boolean for SDPA, additive for eager."""
    allowed = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    allowed = allowed.expand(rows, 1, width, width)
    if name == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )
    return allowed


def time_attention(module: torch.nn.Module, name: str, rows: int, width: int, dtype: torch.dtype,
                   device: torch.device, warm_up: bool = True) -> float:  # fmt: skip
    """Seconds of a model's worth of attention calls at this shape (one per layer, all kept
    for one backward, as a step keeps them) under the step's autocast, after one call to
    warm up; inf when the kernel is unavailable or fails.

    One call alone misleads: timed hot in cache, eager attention looked 10-25% faster than
    SDPA at 512-token rows, but a model saves a rows x heads x width x width matrix per layer
    for backward, and there eager made a whole step slower (BENCHMARKS.md)."""
    function = _attention_function(module, name)
    if function is None:
        return float("inf")
    config = module.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    layers = getattr(config, "num_hidden_layers", 1) or 1
    generator = torch.Generator(device=device).manual_seed(0)

    def qkv(n_heads: int) -> torch.Tensor:
        return torch.randn(rows, n_heads, width, module.head_dim, dtype=dtype, device=device,
                           generator=generator).requires_grad_()  # fmt: skip

    query, key, value = qkv(heads), qkv(kv_heads), qkv(kv_heads)
    # the model builds its masks in its weights' dtype (fp32 under autocast), as here
    mask = _causal_mask(rows, width, name, next(module.parameters()).dtype, device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def run(calls: int) -> float:
        start = time.perf_counter()
        with autocast:
            outputs = [function(module, query, key, value, mask, scaling=module.scaling,
                                dropout=0.0)[0] for _ in range(calls)]  # fmt: skip
        torch.stack(outputs).float().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    try:
        if warm_up:
            run(1)
        return run(layers)
    except Exception as err:  # a kernel this torch build or device lacks: not a candidate
        log.debug("attention %s unavailable at %dx%d: %s", name, rows, width, err)
        return float("inf")


def choose_attention(model: torch.nn.Module, default: str, rows: int, width: int,
                     dtype: torch.dtype) -> str:  # fmt: skip
    """The faster of AUTO_CANDIDATES for a batch of `rows` x `width` tokens, timed once per
    machine and shape bucket; `default` (the model's own) unless another is MIN_GAIN faster.
    Costs seconds for 32 x 64-token batches of SmolLM2 on 2 CPU cores, ~15 s per row bucket
    of 512-token rows (BENCHMARKS.md), once per machine."""
    module = attention_module(model)
    if module is None or default not in AUTO_CANDIDATES:
        return default
    device = next(model.parameters()).device
    bucket, rows = width_bucket(width), width_bucket(rows, smallest=1)
    key = json.dumps([_machine(device), str(dtype), type(module).__qualname__,
                      module.config.num_attention_heads, module.head_dim,
                      getattr(module.config, "num_hidden_layers", 1), rows, bucket, default])
    _load_choices()
    if key not in _chosen:
        times = {name: time_attention(module, name, rows, bucket, dtype, device)
                 for name in AUTO_CANDIDATES}  # fmt: skip
        if max(times.values()) < CLEAR_GAIN * min(times.values()):  # close: time again
            times = {name: min(seconds, time_attention(module, name, rows, bucket, dtype, device,
                                                       warm_up=False))
                     for name, seconds in times.items()}  # fmt: skip
        best = min(times, key=times.__getitem__)
        chosen = best if times[best] < (1 - MIN_GAIN) * times[default] else default
        _chosen[key] = chosen
        _save_choice(key, chosen)
        log.info("attention for %d x %d-token batches (%s, %s): %s (%s)", rows, bucket,
                 device.type, str(dtype).removeprefix("torch."), chosen,
                 ", ".join(f"{n} {t * 1e3:.1f} ms" for n, t in times.items()))  # fmt: skip
    return _chosen[key]


def _choices_file() -> Path:
    from factmem.models import cache_dir

    return cache_dir() / "attention_kernels.json"


@functools.cache
def _machine(device: torch.device) -> str:
    """What the timings depend on: the processor (or GPU), the CPU's core count, the torch
    build."""
    from factmem.models import device_name

    cores = "" if device.type == "cuda" else f" x{os.cpu_count()}"
    return f"{device_name(device)}{cores}, torch {torch.__version__}"


def _load_choices() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    with contextlib.suppress(OSError, ValueError):  # none yet, or unreadable: measured anew
        _chosen.update(json.loads(_choices_file().read_text()))


def _save_choice(key: str, name: str) -> None:
    try:
        saved = json.loads(_choices_file().read_text())
    except (OSError, ValueError):
        saved = {}
    saved[key] = name
    try:
        write_json_atomic(_choices_file(), saved)
    except OSError as err:  # a read-only cache: the choice holds for this process only
        log.warning("could not keep the attention kernel choice in %s: %s", _choices_file(), err)


class AttentionSwitch:
    """Sets the attention kernel of each training batch, by name or by measurement (`auto`),
    and counts the batches each kernel trained (the stage's record keeps the counts)."""

    def __init__(self, model: torch.nn.Module, setting: str, dtype: torch.dtype):
        if setting == "auto" and world_size() > 1:
            # ranks see batches of other shapes and would time them apart: their choices
            # could differ, and agreeing would need a collective per new shape. Multi-process
            # launches keep the model's own kernel (or the one named).
            setting = current_attention(model)
        self.model, self.setting, self.dtype = model, setting, dtype
        self.original = current_attention(model)
        self.counts: dict[str, int] = {}
        self._by_shape: dict[tuple[int, int], str] = {}  # batches of a shape seen before
        if setting != "auto":
            set_attention(model, setting)

    def before_batch(self, inputs: dict) -> None:
        name = self.setting
        if name == "auto":  # choose_attention walks the model and keys by machine: once a shape
            shape = tuple(inputs["input_ids"].shape[:2])
            if shape not in self._by_shape:
                self._by_shape[shape] = choose_attention(self.model, self.original, *shape,
                                                         self.dtype)  # fmt: skip
            name = self._by_shape[shape]
        set_attention(self.model, name)  # again after a probe scored with the model's own
        self.counts[name] = self.counts.get(name, 0) + 1

    def scoring(self, score: Callable[[], T]) -> Callable[[], T]:
        """`score` run with the model's own kernel (probes and stop-rule checks during the
        stage score as after it); the next batch sets the training kernel again."""

        def run() -> T:
            set_attention(self.model, self.original)
            return score()

        return run

    def restore(self) -> None:
        """Give the model back with its own kernel: scoring after the stage is unchanged."""
        set_attention(self.model, self.original)
