"""Train one stage with transformers' Trainer: response-only loss, padding-free batches, stop rules.

Trainer is kept (not a hand-written loop) so that accelerate, FSDP/DeepSpeed (via
`training.trainer_args`), `report_to` loggers and resumable checkpoints work unchanged.
What factmem adds is small: a collator choice, exact per-step losses (Trainer's logged loss
is rounded to 4 decimals, too coarse for a 1e-4 threshold), and the stop rules.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import get_last_checkpoint

from factmem.atomic import crash_point
from factmem.batching import make_collator
from factmem.chunked_loss import chunked_answer_loss
from factmem.config import StopRule, TrainingConfig
from factmem.data.example import IGNORE_INDEX, Example, encode_example
from factmem.distributed import world_size
from factmem.errors import ConfigError, FactmemError
from factmem.integrity import checkpoint_problem
from factmem.kernels import AttentionSwitch
from factmem.methods import Plugin
from factmem.models import compute_device, device_name
from factmem.records import StageOutcome
from factmem.sharding import (
    cpu_fsdp_plugin,
    fsdp_launch,
    gathered_state_dict,
)
from factmem.stage_callbacks import (  # noqa: F401  (some kept importable from here)
    TRAIN_TIME_FILE,
    CheckpointCallback,
    LossInProgressBar,
    ProbeCallback,
    ProgressFileCallback,
    StopRuleCallback,
    TrainTimeCallback,
    TrimMemoryCallback,
    release_freed_memory,
    train_time_before,
    trims_memory,
)

log = logging.getLogger(__name__)


def bf16_supported() -> bool:
    """bf16 autocast pays off: a GPU with bf16 (Ampere and later), or a CPU with AVX-512
    BF16 / AMX; decided for the device factmem computes on (models.compute_device)."""
    device = compute_device()
    if device.type == "cuda":
        try:  # emulated bf16 (pre-Ampere) is slower than fp32: not "supported" here
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.4 has no such argument and reports native bf16 only
            return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(setting: str | bool) -> bool:
    return bf16_supported() if setting == "auto" else bool(setting)


def device_text(device: torch.device, bf16: bool) -> str:
    """Where a stage trained, for its record: `cuda:0 (NVIDIA H200), bf16` / `cpu (Intel(R)
    Xeon(R) Processor), bf16`; a GPU run that fell back to the CPU shows in every
    training.json, and two CPUs, whose bf16 kernels give slightly different models from one
    seed, are told apart in the archive."""
    name = device_name(device)
    return f"{device}{f' ({name})' if name else ''}, {'bf16' if bf16 else 'fp32'}"


class _StageTrainer(Trainer):
    """Trainer that logs the exact (unrounded) mean task loss of every optimizer step and
    adds the penalties of continual-learning plugins (src/factmem/methods.py)."""

    def __init__(self, *args, plugins: Sequence[Plugin] = (), loss_chunk_tokens: int | None = None,
                 attention: AttentionSwitch | None = None, **kwargs):  # fmt: skip
        super().__init__(*args, **kwargs)
        self.plugins = list(plugins)
        self.attention = attention
        self.loss_chunk_tokens = loss_chunk_tokens
        self._step_loss = self._step_penalty = self._batch_penalty = 0.0
        self._micro_batches = 0

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        self.fsdp_on_cpu = fsdp_launch() and not self.is_fsdp_enabled
        if self.fsdp_on_cpu:
            _fsdp_on_cpu(self)

    def _issue_warnings_after_load(self, load_result) -> None:
        # A checkpoint stores a tied head once, under the embedding's name, so every resume
        # of a tied model (SmolLM2, the test models) lacks "lm_head.weight" and Trainer warns
        # "missing keys" unless the model class lists it in _keys_to_ignore_on_save (Llama
        # does not). Such a key was restored through the tensor it shares: say nothing. A key
        # missing that no restored name shares would stay at the stage's starting weights,
        # a silently wrong resume: refuse.
        missing = untied_missing_keys(self.model, load_result.missing_keys)
        if missing:
            raise FactmemError(
                f"the checkpoint being resumed from lacks weights the model has and shares "
                f"with no other: {', '.join(missing[:5])}; resuming would leave them at the "
                f"stage's starting values. Remove the checkpoint-* folders under "
                f"{self.args.output_dir} to train the stage again from its start"
            )
        super()._issue_warnings_after_load(load_result._replace(missing_keys=[]))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if not self.fsdp_on_cpu:
            return super().save_model(output_dir, _internal_call)
        # Trainer's FSDP path gathers with accelerate's get_state_dict, which offloads to
        # the CPU unconditionally (a segfault on CPUs, see sharding.cpu_fsdp_plugin)
        state_dict = gathered_state_dict(self.model)
        if self.args.should_save:
            self._save(output_dir or self.args.output_dir, state_dict=state_dict)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.attention is not None:
            self.attention.before_batch(inputs)
        if self.loss_chunk_tokens and not return_outputs:  # plugins are refused with it
            with self.accelerator.autocast():
                return chunked_answer_loss(model, inputs, self.loss_chunk_tokens,
                                           num_items_in_batch)  # fmt: skip
        if not self.plugins:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        penalties = [p.batch_penalty(model, inputs, outputs) for p in self.plugins]
        penalties = [p for p in penalties if p is not None]
        if penalties:
            extra = sum(penalties)
            # Trainer divides the loss by the accumulation steps afterwards unless the model
            # normalised it by the step's token count; either way each micro-batch's penalty
            # must end up weighted 1/accumulation steps, like the task loss.
            steps = self.current_gradient_accumulation_steps
            divided_later = (not self.model_accepts_loss_kwargs or num_items_in_batch is None
                             ) and self.compute_loss_func is None  # fmt: skip
            contribution = extra if divided_later else extra / steps
            self._batch_penalty += extra.detach().item() / steps
            loss = loss + contribution
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Trainer returns each micro-batch's share; their sum over a step is the step's loss.
        self._step_loss += loss.item() - self._batch_penalty
        self._step_penalty += self._batch_penalty
        self._batch_penalty = 0.0
        first_of_step = self._micro_batches % self.args.gradient_accumulation_steps == 0
        self._micro_batches += 1
        if first_of_step:  # weight penalties: once per optimizer step
            for plugin in self.plugins:
                penalty = plugin.step_penalty(model)
                if penalty is not None:
                    if penalty.requires_grad:  # else the plugin set its gradient itself
                        self.accelerator.backward(penalty)
                    self._step_penalty += penalty.detach().item()
        return loss

    def _save_optimizer_and_scheduler(self, output_dir):
        crash_point(Path(output_dir) / "optimizer.pt")  # tests kill a checkpoint half saved
        super()._save_optimizer_and_scheduler(output_dir)

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:  # logging_steps=1, so this covers exactly one optimizer step
            step = torch.tensor([self._step_loss, self._step_penalty], device=self.args.device)
            if self.args.world_size > 1:  # every rank must see the same loss (stop rules)
                step = self.accelerator.reduce(step, reduction="mean")
            logs["loss"] = step[0].item()
            if self.plugins:
                logs["penalty"] = step[1].item()
            self._step_loss = self._step_penalty = 0.0
        super().log(logs, *args, **kwargs)


def _fsdp_on_cpu(trainer: Trainer) -> None:
    """Turn on the FSDP that `trainer_args.fsdp` asks for when the ranks are CPU processes.

    accelerate (1.15) enables FSDP only for GPU-like devices and otherwise falls back to DDP
    without a word, although torch's FSDP runs on CPUs over gloo. So that a CPU launch does
    what its config says (and the FSDP path can be tested without GPUs), the accelerator's
    shared state is switched to FSDP here, with the plugin accelerate would build from the
    same settings (TrainingArguments exported them as FSDP_* variables); the Trainer's and
    accelerate's own FSDP code then wraps, shards and saves as on GPUs."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    plugin = cpu_fsdp_plugin()
    for option in ("limit_all_gathers", "activation_checkpointing"):
        setattr(plugin, option, trainer.args.fsdp_config.get(option, getattr(plugin, option)))
    # The accelerator's state copies the process state's fields whenever it is built again
    # (Trainer builds it more than once), so both are switched. The device is "cpu", not
    # accelerate's "cpu:0", which FSDP finds inconsistent with its compute device.
    switched = {"distributed_type": DistributedType.FSDP, "device": torch.device("cpu")}
    PartialState._shared_state.update(switched)
    trainer.accelerator.state.__dict__.update(switched, fsdp_plugin=plugin)
    trainer.is_fsdp_enabled = True
    log.info("FSDP on %d CPU processes (%s)", world_size(), plugin.sharding_strategy)


def untied_missing_keys(model: torch.nn.Module, missing: Sequence[str]) -> list[str]:
    """The missing names of a loaded state dict that no loaded name shares a tensor with
    (a tied head missing is no loss: it is the input embedding, loaded under its own name)."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    gone = set(missing)
    shared_by = {name: group for group in names.values() for name in group}
    return [name for name in missing
            if all(other in gone for other in shared_by.get(name, [name]))]  # fmt: skip


def last_whole_checkpoint(work_dir: Path) -> str | None:
    """The newest trainer checkpoint that is whole. Trainer's own choice (the newest folder)
    fails with a traceback on a save cut short by a kill; such folders are removed (by every
    rank of a multi-process launch at once: each sees the same folders, so whichever removes
    a file first, all end with the same checkpoint)."""
    while work_dir.is_dir():
        last = get_last_checkpoint(str(work_dir))
        if last is None:
            return None
        problem = checkpoint_problem(Path(last))
        if problem is None:
            return last
        log.warning("%s; removing that incomplete checkpoint", problem)
        shutil.rmtree(last, ignore_errors=True)
    return None


def training_arguments(
    cfg: TrainingConfig, rule: StopRule, output_dir: Path, seed: int, progress: bool = True
) -> TrainingArguments:
    ranks = world_size()  # under accelerate launch / torchrun, batch_size is the global batch
    if cfg.batch_size % ranks:
        raise ConfigError(f"training.batch_size={cfg.batch_size} does not split over {ranks} "
                          "processes")  # fmt: skip
    per_rank = cfg.batch_size // ranks
    micro = min(cfg.micro_batch_size or per_rank, per_rank)
    if per_rank % micro:
        raise ConfigError(
            f"training.batch_size={cfg.batch_size} ({per_rank} per process) is not a multiple "
            f"of training.micro_batch_size={micro}"
        )
    args = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=per_rank // micro,
        learning_rate=cfg.learning_rate,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_epsilon=cfg.adam_epsilon,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_ratio=cfg.warmup_ratio,
        num_train_epochs=rule.epoch_budget,
        bf16=use_bf16(cfg.bf16),
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="epoch",
        save_total_limit=1,
        save_safetensors=True,
        eval_strategy="no",
        seed=seed,
        data_seed=seed,
        report_to=cfg.report_to or "none",
        remove_unused_columns=False,
        dataloader_drop_last=False,
        optim="adamw_torch_fused",  # measured faster on CPU too (BENCHMARKS.md)
        use_cpu=compute_device().type == "cpu",
        disable_tqdm=not progress,
    )
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    unknown = sorted(set(cfg.trainer_args) - known)
    if unknown:
        raise ConfigError(f"training.trainer_args: not TrainingArguments fields: {unknown}")
    args.update(cfg.trainer_args)
    try:
        return TrainingArguments(**args)
    except ValueError as err:
        raise ConfigError(f"training: transformers rejects these settings: {err}") from None


@dataclasses.dataclass
class StagePlan:
    """What one stage trains on, how, until when and where it keeps its checkpoints, and the
    hooks the pipeline adds: everything train_stage needs besides the model."""

    examples: list[Example]
    training: TrainingConfig
    stop: StopRule
    work_dir: Path  # resumable checkpoints; a killed stage resumes from the last one here
    seed: int
    # after each epoch, for the exact-match and full-pass rules
    epoch_check: Callable[[PreTrainedModel], float | tuple[float, str]] | None = None
    # at step 0 and every probe_every_steps steps (forgetting curves)
    probe: Callable[[PreTrainedModel], dict[str, float]] | None = None
    probe_every_steps: int = 0
    plugins: Sequence[Plugin] = ()  # continual-learning methods' loss terms
    progress_file: Path | None = None  # where training is, for other processes to read


def train_stage(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, plan: StagePlan,
                progress: bool = True) -> StageOutcome:  # fmt: skip
    """Train `model` in place on the plan's examples until its stop rule says stop; a killed
    stage resumes from the last checkpoint in `plan.work_dir` when called again."""
    examples, cfg, rule, work_dir, seed = (plan.examples, plan.training, plan.stop,
                                           plan.work_dir, plan.seed)  # fmt: skip
    epoch_check, probe, plugins = plan.epoch_check, plan.probe, plan.plugins
    encoded = [encode_example(tokenizer, e, cfg.max_length) for e in examples]
    args = training_arguments(cfg, rule, work_dir, seed, progress)

    needs_check = rule.exact_match_at_least is not None or (
        rule.loss_below is not None and rule.loss_measure == "full_pass"
    )
    if needs_check and epoch_check is None:
        raise ValueError(f"the stop rule ({rule.describe()}) needs an epoch_check")
    if cfg.loss_chunk_tokens and plugins:
        raise ConfigError("training.loss_chunk_tokens does not combine with a regularizer "
                          "(l2 / ewc / lwf) yet: they hook into the model's own loss")  # fmt: skip
    sharded = fsdp_launch()
    if sharded and (needs_check or probe):
        raise ConfigError(
            f"under FSDP the stop rule ({rule.describe()}) or forgetting curves would score "
            "the weights before they are gathered; use a rule on epochs or the training loss, "
            "and no evaluation.curve_every_steps"
        )
    # FSDP shards the model it trains in place and leaves it sharded: it trains a copy, and
    # `model` (moved off the accelerator meanwhile) receives the gathered weights afterwards.
    trained, device = model, model.device
    if sharded:  # the copy is made on the CPU: never two whole models on an accelerator
        trained = copy.deepcopy(model.to("cpu")).to(device)
    # set before the collator is made: flash-attention asks for another batch layout
    attention = AttentionSwitch(trained, cfg.attention,
                                torch.bfloat16 if args.bf16 else torch.float32)  # fmt: skip
    last = last_whole_checkpoint(work_dir)
    timer = TrainTimeCallback(train_time_before(last))
    callback = StopRuleCallback(
        rule, attention.scoring(lambda: epoch_check(model)) if epoch_check else None
    )
    trainer = _StageTrainer(
        model=trained,
        args=args,
        train_dataset=encoded,
        data_collator=make_collator(tokenizer, cfg.packing, trained, cfg.pack_row_tokens),
        callbacks=[timer]  # first: its file is in every checkpoint; the progress file at each too
        + ([ProgressFileCallback(plan.progress_file, timer)] if plan.progress_file else [])
        + [callback, CheckpointCallback(cfg.checkpoint_every_epochs, callback)]
        + ([ProbeCallback(attention.scoring(lambda: probe(model)), plan.probe_every_steps)]
           if probe else [])
        + ([TrimMemoryCallback()] if trims_memory(cfg.trim_memory) else []),
        plugins=plugins,
        loss_chunk_tokens=cfg.loss_chunk_tokens,
        attention=attention,
    )
    trainer.pop_callback(PrinterCallback)  # prints a dict per step; the bar shows the loss
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(LossInProgressBar)
    if last:
        log.info("resuming stage training from %s", last)
    timer.start = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=last)
    finally:
        attention.restore()
    wall = timer.seconds()
    # mixed precision replaced model.forward with an autocast-wrapped one; give the model
    # back as it came, or everything after the stage (scoring, Fisher, the next stage's
    # teacher) would run in bf16 without being asked to
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    if sharded:
        model.load_state_dict(gathered_state_dict(trainer.model_wrapped))
        model.to(device)
    history = trainer.state.log_history
    epochs = float(trainer.state.epoch or 0)
    if rule.epochs is not None:
        reason, met = f"{rule.epochs} epochs", True
    elif callback.met:
        reason, met = f"rule met: {rule.describe()}", True
    else:
        reason, met = (
            f"max_epochs={rule.max_epochs} reached without meeting: {rule.describe()}",
            False,
        )
        log.warning("stage stopped at its cap: %s", reason)
    tokens_per_epoch = sum(len(e["input_ids"]) for e in encoded)
    response_per_epoch = sum(sum(1 for t in e["labels"] if t != IGNORE_INDEX) for e in encoded)
    return StageOutcome(
        epochs=epochs,
        steps=trainer.state.global_step,
        device=device_text(trainer.args.device, args.bf16),
        stop_reason=reason,
        rule_met=met,
        wall_time_s=wall,
        train_tokens=round(tokens_per_epoch * epochs),
        response_tokens=round(response_per_epoch * epochs),
        loss_curve=[
            {
                "step": h["step"],
                "epoch": h["epoch"],
                "loss": h["loss"],
                "learning_rate": h.get("learning_rate"),
                **({"penalty": h["penalty"]} if "penalty" in h else {}),
            }
            for h in history
            if "loss" in h
        ],
        epoch_checks=[h for h in history if any(k.startswith("check_") for k in h)],
        probe_curve=[h for h in history if "probe" in h],
        attention=attention.counts,
        threads=torch.get_num_threads(),
    )
