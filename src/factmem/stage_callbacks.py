"""What a stage's training loop does between steps, as Trainer callbacks: the stop rule,
checkpoints every N epochs (apart from the rule, which only says when to stop), forgetting-
curve probes, training time kept across resumes, memory handed back to the OS, the loss
on the progress bar, and a progress file for other processes to read. train_stage
(training.py) puts them on its Trainer.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from factmem.atomic import write_json_atomic
from factmem.config import StopRule

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS, Windows)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


def release_freed_memory() -> bool:
    """Hand the memory malloc keeps after frees back to the OS; True if any was released.

    Written by hand because neither torch nor transformers offers it: on the CPU, torch
    allocates tensors with malloc, and glibc raises its mmap threshold after large frees, so
    when batch lengths vary from step to step freed activations stay in the process and RSS
    grows by GBs a stage (BENCHMARKS.md). One trim per micro-batch returns them, without
    `MALLOC_TRIM_THRESHOLD_=0`'s cost of trimming on every free.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def trims_memory(setting: str | bool) -> bool:
    """`training.trim_memory` resolved: auto trims when training runs on the CPU."""
    if setting == "auto":
        return not torch.cuda.is_available() and _malloc_trim() is not None
    if setting and _malloc_trim() is None:
        log.warning("training.trim_memory: this C library has no malloc_trim; nothing trimmed")
    return bool(setting)


class TrimMemoryCallback(TrainerCallback):
    """Returns freed memory to the OS after every micro-batch (`training.trim_memory`): with
    gradient accumulation, the micro-batches of one step differ in length too."""

    def on_substep_end(self, args, state, control, **kwargs):
        release_freed_memory()

    def on_step_end(self, args, state, control, **kwargs):
        release_freed_memory()


TRAIN_TIME_FILE = "factmem_train_time.json"


class TrainTimeCallback(TrainerCallback):
    """Keeps the stage's training seconds so far in each checkpoint it saves, so that a
    stage resumed after a kill records its whole training time, not the last process's part
    (the time between the last checkpoint and the kill was redone, and is counted once)."""

    def __init__(self, before: float):
        self.before, self.start = before, time.perf_counter()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.start

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir() and state.is_world_process_zero:
            write_json_atomic(folder / TRAIN_TIME_FILE, {"train_time_s": self.seconds()})


def train_time_before(checkpoint: str | None) -> float:
    """Training seconds a resumed checkpoint had behind it (0 for a fresh stage)."""
    file = Path(checkpoint) / TRAIN_TIME_FILE if checkpoint else None
    if file is None or not file.is_file():
        return 0.0
    try:
        return float(json.loads(file.read_text())["train_time_s"])
    except (ValueError, KeyError, TypeError):
        return 0.0  # a checkpoint from before the file existed, or damaged: count from here


class ProgressFileCallback(TrainerCallback):
    """Writes where training is (step, the most steps it may take, loss, seconds so far) to
    a small file, at most every `every_s` seconds and at every checkpoint, so that `factmem
    grid --status` can say how far a run in another process has come (the progress bar
    lives in that process's log)."""

    def __init__(self, path: Path, timer: TrainTimeCallback, every_s: float = 5.0):
        self.path, self.timer, self.every_s = path, timer, every_s
        self.written, self.last = -math.inf, None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and state.is_world_process_zero:
            self.last = {"step": state.global_step, "max_steps": state.max_steps,
                         "epoch": state.epoch, "loss": logs["loss"]}  # fmt: skip
            if time.monotonic() - self.written >= self.every_s:
                self._write()

    def on_save(self, args, state, control, **kwargs):
        if self.last is not None and state.is_world_process_zero:
            self._write()

    def _write(self) -> None:
        self.written = time.monotonic()
        write_json_atomic(self.path, self.last | {"train_time_s": self.timer.seconds(),
                                                  "updated": time.time()})  # fmt: skip


class LossInProgressBar(ProgressCallback):
    """Trainer's progress bar, with the loss shown on the bar instead of a dict printed per step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}", epoch=f"{state.epoch:.1f}")


class StopRuleCallback(TrainerCallback):
    """Ends the stage when its stop rule is met (checked after every log and epoch)."""

    def __init__(self, rule: StopRule, epoch_check: Callable[[], float | tuple[float, str]] | None):
        self.rule, self.epoch_check = rule, epoch_check
        self.met = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.rule.loss_below is None or self.rule.loss_measure != "steps":
            return
        below = sum(
            1 for h in state.log_history if "loss" in h and h["loss"] < self.rule.loss_below
        )
        if below >= self.rule.loss_patience:
            self.met = control.should_training_stop = True

    def on_epoch_end(self, args, state, control, **kwargs):
        epoch = round(state.epoch or 0)
        start = time.perf_counter()
        check = self._check(state, epoch)
        if check is not None:  # with its cost: a stage-1 check can take a third of an epoch
            check["check_s"] = round(time.perf_counter() - start, 3)
            state.log_history.append({"epoch": epoch, "step": state.global_step, **check})
            log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4g}" for k, v in check.items()))
        if self.met:
            control.should_training_stop = True

    def _check(self, state, epoch: int) -> dict | None:
        rule = self.rule
        if rule.exact_match_at_least is not None:
            # (value, kind) from exact_match_reaches: a bound when the rule was settled
            # before every fact was generated (kind at_least / at_most), else exact
            value, kind = _with_kind(self.epoch_check())
            self.met = value >= rule.exact_match_at_least
            return {"check_exact_match" if kind == "exact" else f"check_exact_match_{kind}": value}
        if rule.loss_below is not None and rule.loss_measure == "epoch_mean":
            losses = [
                h["loss"]
                for h in state.log_history
                if "loss" in h and epoch - 1 < h.get("epoch", 0) <= epoch
            ]
            value = sum(losses) / len(losses) if losses else math.inf
            self.met = value < rule.loss_below
            return {"check_epoch_mean_loss": value}
        if rule.loss_below is not None and rule.loss_measure == "full_pass":
            value = self.epoch_check()
            self.met = value < rule.loss_below
            return {"check_full_pass_loss": value}
        return None


def _with_kind(result: float | tuple[float, str]) -> tuple[float, str]:
    return result if isinstance(result, tuple) else (result, "exact")


class CheckpointCallback(TrainerCallback):
    """Saves a resumable checkpoint every `every` epochs (0: never), except after the epoch
    that met the stop rule: the stage ends there and its model is saved whole instead. Runs
    after the stop rule's callback, whose verdict it reads."""

    def __init__(self, every: int, stop: StopRuleCallback):
        self.every, self.stop = every, stop

    def on_epoch_end(self, args, state, control, **kwargs):
        epoch = round(state.epoch or 0)
        control.should_save = bool(self.every and epoch % self.every == 0 and not self.stop.met)


class ProbeCallback(TrainerCallback):
    """Scores `probe(model)` before training and every `every` optimizer steps (forgetting
    curves). Results go into the trainer's log history, so a resumed stage keeps them."""

    def __init__(self, probe: Callable[[], dict[str, float]], every: int):
        self.probe, self.every = probe, every

    def _record(self, state) -> None:
        if any(h.get("step") == state.global_step and "probe" in h for h in state.log_history):
            return  # a resumed stage: this step was scored before the kill
        scores = self.probe()
        state.log_history.append({"step": state.global_step, "epoch": state.epoch or 0.0,
                                  "probe": scores})  # fmt: skip

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self._record(state)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._record(state)
