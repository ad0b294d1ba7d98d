"""Continual-learning baselines beside REMIX, as plugins of the one training loop.

A plugin adds a penalty to the stage's loss (Avalanche's style: methods hook into one loop,
they do not fork it):
  L2      L2-SP: strength/2 * sum (theta - theta_prev)^2, theta_prev = the stage's start
  EWC     strength/2 * sum F * (theta - theta_prev)^2, F = diagonal empirical Fisher of the
          previous stage's set at theta_prev (Kirkpatrick et al. 2017), cached on disk
  LwF     strength * T^2 * KL(teacher_T || student_T) on the answer tokens of each batch,
          teacher = the frozen model at the stage's start (Li & Hoiem 2017)
Besides penalties: weight averaging (WiSE-FT, Wortsman et al. 2022) after a stage, and LoRA
(peft) as the way a stage trains. Penalties are computed in fp32 and do not enter the
logged loss, so stop rules see the task loss only.

Each method the config can name (lora, l2, ewc, lwf, wise) is a `Method` in `METHODS` (at
the end): hooks before, around and after the stage's training, and the label reports use.
The pipeline and the report hold no per-method branch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from factmem.atomic import write_dir_atomic
from factmem.batching import answer_targets
from factmem.data.example import IGNORE_INDEX, Example, encode_example
from factmem.distributed import is_main
from factmem.sharding import flat_shards, local_slice

log = logging.getLogger(__name__)


class Plugin:
    """A method's hooks: `step_penalty` once per optimizer step, `batch_penalty` per batch."""

    def step_penalty(self, model: PreTrainedModel) -> torch.Tensor | None:
        return None

    def batch_penalty(self, model: PreTrainedModel, inputs: dict, outputs) -> torch.Tensor | None:
        return None


class WeightAnchor(Plugin):
    """L2 (weights=None) or EWC (weights=Fisher diagonal) pull towards the stage's start."""

    def __init__(self, model: PreTrainedModel, strength: float,
                 weights: dict[str, torch.Tensor] | None = None):  # fmt: skip
        self.strength, self.weights = strength, weights
        self.anchor = {n: p.detach().float().clone() for n, p in _trainable(model)}
        self.shards: list | None = None  # under FSDP: (flat shard, its anchor, its weights)

    def step_penalty(self, model: PreTrainedModel) -> torch.Tensor:
        if self.shards is None:  # the first step: is the training model sharded?
            self.shards = self._cut_to_shards(model)
        if self.shards:
            return self._sharded_penalty()
        total = torch.zeros((), device=model.device)
        for name, param in _trainable(model):
            diff = (param.float() - self.anchor[name]) ** 2
            if self.weights is not None:
                diff = diff * self.weights[name]
            total = total + diff.sum()
        return self.strength / 2 * total

    def _cut_to_shards(self, model) -> list:
        """Under FSDP, the whole copies cut to this rank's slices (then dropped); else []."""
        shards = [
            (flat, local_slice(flat, pieces, self.anchor),
             None if self.weights is None else local_slice(flat, pieces, self.weights))
            for flat, pieces in flat_shards(model)
        ]  # fmt: skip
        if shards:
            self.anchor, self.weights = {}, None
        return shards

    def _sharded_penalty(self) -> torch.Tensor:
        """FSDP: each rank holds a slice of the weights, so it adds the penalty's gradient,
        strength * F * (theta - theta_prev), to its slice of the (already reduced) gradient
        itself, and the ranks sum their parts of the penalty's value."""
        total = torch.zeros((), dtype=torch.float32, device=self.shards[0][1].device)
        with torch.no_grad():
            for flat, anchor, weights in self.shards:
                diff = flat.float() - anchor
                pulled = diff if weights is None else diff * weights
                total += (pulled * diff).sum()
                if flat.grad is not None:
                    flat.grad.add_((self.strength * pulled).to(flat.grad.dtype))
        torch.distributed.all_reduce(total)
        return self.strength / 2 * total  # no graph: the trainer only logs it


class AdapterAnchor(Plugin):
    """L2 or EWC for a LoRA stage: the penalty is on each adapted layer's effective weight
    change, delta W = scaling * B @ A (zero at the stage's start), weighted by the Fisher of
    that layer's base weight for EWC; the frozen weights never move."""

    def __init__(self, model, strength: float, weights: dict[str, torch.Tensor] | None = None):
        from peft.tuners.lora import LoraLayer

        self.strength, self.layers = strength, []
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer) and "default" in module.lora_A:
                base = name.removeprefix("base_model.model.") + ".weight"
                fisher = None if weights is None else weights[base]
                self.layers.append((module, fisher))

    def step_penalty(self, model: PreTrainedModel) -> torch.Tensor:
        total = torch.zeros((), device=model.device)
        for module, fisher in self.layers:
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            delta = (b.float() @ a.float()) * module.scaling["default"]
            total = total + ((delta**2) * fisher if fisher is not None else delta**2).sum()
        return self.strength / 2 * total


class Distillation(Plugin):
    """LwF: KL from the frozen start-of-stage model's answer distribution, per batch."""

    def __init__(self, model: PreTrainedModel, strength: float, temperature: float):
        self.strength, self.temperature = strength, temperature
        self.teacher = copy.deepcopy(model).eval()
        for param in self.teacher.parameters():
            param.requires_grad_(False)

    def batch_penalty(self, model: PreTrainedModel, inputs: dict, outputs) -> torch.Tensor:
        model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels")}
        with torch.no_grad():
            teacher_logits = self.teacher(**model_inputs).logits
        return self.strength * distillation_loss(outputs.logits, teacher_logits,
                                                 answer_mask(inputs), self.temperature)  # fmt: skip


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
                      temperature: float) -> torch.Tensor:  # fmt: skip
    """T^2 * mean over masked positions of KL(softmax(teacher/T) || softmax(student/T))."""
    t = temperature
    log_student = F.log_softmax(student.float() / t, dim=-1)
    log_teacher = F.log_softmax(teacher.float() / t, dim=-1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(-1)
    return t * t * kl[mask].mean() if mask.any() else kl.sum() * 0.0


def answer_mask(inputs: dict) -> torch.Tensor:
    """Positions of the logits that predict an answer token (as the batch lays them out)."""
    return answer_targets(inputs) != IGNORE_INDEX


def _trainable(model: PreTrainedModel):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


# ---------------------------------------------------------------- EWC's Fisher, cached


def fisher_diagonal(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    examples: Sequence[Example]) -> dict[str, torch.Tensor]:  # fmt: skip
    """Empirical Fisher diagonal: the mean over examples of each example's squared gradient
    of its (token-mean) answer log-likelihood. One backward pass per example."""
    was_training = model.training
    model.eval()
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in _trainable(model)}
    try:
        for example in examples:
            encoded = encode_example(tokenizer, example)
            ids = torch.tensor([encoded["input_ids"]], device=model.device)
            labels = torch.tensor([encoded["labels"]], device=model.device)
            model.zero_grad(set_to_none=True)
            logits = model(input_ids=ids).logits.float()
            loss = F.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=IGNORE_INDEX)
            loss.backward()
            for name, param in _trainable(model):
                if param.grad is not None:
                    fisher[name] += param.grad.detach().float() ** 2 / len(examples)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return fisher


def cached_fisher(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    folder: Path,
) -> dict[str, torch.Tensor]:
    """The Fisher of `examples` at `model`, computed once and kept in `folder` (beside the
    previous stage's checkpoint), keyed by the examples."""
    key = hashlib.sha256(json.dumps([[e.prompt, e.response] for e in examples]).encode())
    path = folder / f"fisher-{key.hexdigest()[:12]}.safetensors"
    if path.is_file():
        log.info("EWC: reusing the Fisher diagonal in %s", path)
        return load_file(str(path), device=str(model.device))
    log.info("EWC: computing the Fisher diagonal on %d examples -> %s", len(examples), path)
    fisher = fisher_diagonal(model, tokenizer, examples)
    if not is_main():  # every rank of a launch computes it; one writes it
        return fisher
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous().cpu() for k, v in fisher.items()}, str(tmp))
    tmp.replace(path)
    return fisher


# ---------------------------------------------------------------- after a stage, LoRA


def average_weights(model: PreTrainedModel, previous: PreTrainedModel, alpha: float) -> None:
    """WiSE-FT: theta <- (1 - alpha) * theta_previous + alpha * theta (alpha = 1: unchanged)."""
    before = dict(previous.named_parameters())
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_((1 - alpha) * before[name].to(param.dtype) + alpha * param)


def with_lora(model: PreTrainedModel, settings) -> PreTrainedModel:
    """The model wrapped in fresh LoRA adapters (peft); only the adapters train."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.target_modules, task_type="CAUSAL_LM")  # fmt: skip
    return get_peft_model(model, config)


# ---------------------------------------------------------------- the methods a config names


@dataclass
class StageContext:
    """What a method may need of its stage besides the model: set by the pipeline."""

    stage: Any  # config.StageConfig (not imported: config imports nothing from here)
    tokenizer: PreTrainedTokenizerBase
    previous_set: list[Example]  # the previous stage's own set (EWC's Fisher)
    previous_dir: Path  # where the previous stage was trained (EWC's Fisher cache)
    previous_model: str  # the stage's start model (WiSE-FT averages with it)
    adapter_dir: Path  # where a LoRA stage keeps its adapter
    load_model: Callable[[str], PreTrainedModel]
    save: bool = True  # False on ranks > 0 of a multi-process launch: they write nothing


class Method:
    """A continual-learning method, keyed by its name in the config, as hooks around the one
    training loop (Avalanche's plugins): every hook defaults to doing nothing.

    The pipeline calls, for the stage's methods in registry order: `before_training` on the
    start model, `wrap` (the model that trains), `penalty` (a training-loop Plugin), then
    after training `after_training` (the model the stage saves)."""

    name = ""

    def __init__(self, context: StageContext):
        self.context = context

    @staticmethod
    def active(stage) -> bool:
        return False

    @staticmethod
    def label(stage) -> str:
        return ""

    def before_training(self, model: PreTrainedModel) -> None:
        return None

    def wrap(self, model: PreTrainedModel) -> PreTrainedModel:
        return model

    def penalty(self, model: PreTrainedModel) -> Plugin | None:
        return None

    def after_training(self, model: PreTrainedModel) -> PreTrainedModel:
        return model


class LoRA(Method):
    """The stage trains fresh LoRA adapters (peft); the adapter is kept, the stage continues
    with the merged weights."""

    name = "lora"

    @staticmethod
    def active(stage) -> bool:
        return stage.lora is not None

    @staticmethod
    def label(stage) -> str:
        return f"LoRA r{stage.lora.r}"

    def wrap(self, model):
        return with_lora(model, self.context.stage.lora)

    def after_training(self, model):
        if self.context.save:
            write_dir_atomic(self.context.adapter_dir, lambda tmp: model.save_pretrained(tmp))
        return model.merge_and_unload()


class _Penalty(Method):
    """l2 / ewc / lwf: the stage's `regularizer`."""

    @classmethod
    def active(cls, stage) -> bool:
        return stage.regularizer is not None and stage.regularizer.method == cls.name

    @classmethod
    def label(cls, stage) -> str:
        return f"{cls.title} {stage.regularizer.strength:g}"

    title = ""


class L2(_Penalty):
    """L2-SP: on the weights, or with LoRA on each adapted layer's weight change."""

    name, title = "l2", "L2"

    def before_training(self, model):
        self.fisher = None

    def penalty(self, model):
        strength = self.context.stage.regularizer.strength
        if self.context.stage.lora is not None:
            return AdapterAnchor(model, strength, self.fisher)
        return WeightAnchor(model, strength, self.fisher)


class EWC(L2):
    """L2 weighted by the Fisher diagonal of the previous stage's set at the start model
    (computed before LoRA wraps the model, on its base weights)."""

    name, title = "ewc", "EWC"

    def before_training(self, model):
        ctx = self.context
        examples = ctx.previous_set[: ctx.stage.regularizer.fisher_examples]
        self.fisher = cached_fisher(model, ctx.tokenizer, examples, ctx.previous_dir)


class LwF(_Penalty):
    """Distillation from the frozen start model (copied before LoRA wraps the model)."""

    name, title = "lwf", "LwF"

    def before_training(self, model):
        settings = self.context.stage.regularizer
        self.plugin = Distillation(model, settings.strength, settings.temperature)

    def penalty(self, model):
        return self.plugin


class WiSE(Method):
    """WiSE-FT after the stage: weights = alpha * new + (1 - alpha) * the stage's start."""

    name = "wise"

    @staticmethod
    def active(stage) -> bool:
        return stage.weight_average is not None

    @staticmethod
    def label(stage) -> str:
        return f"WiSE {stage.weight_average:g}"

    def after_training(self, model):
        alpha = self.context.stage.weight_average
        log.info("weights = %.3g * new + %.3g * previous (WiSE-FT)", alpha, 1 - alpha)
        average_weights(model, self.context.load_model(self.context.previous_model), alpha)
        return model


# In the order they act: LoRA wraps before a penalty is built on the training model, and
# merges before WiSE-FT averages.
METHODS: dict[str, type[Method]] = {m.name: m for m in (LoRA, L2, EWC, LwF, WiSE)}


def stage_methods(context: StageContext) -> list[Method]:
    """The methods the stage's config turns on, ready to hook into its training."""
    return [method(context) for method in METHODS.values() if method.active(context.stage)]


def method_labels(stage) -> list[str]:
    """How a report names the stage's methods ("LoRA r8", "EWC 100", "WiSE 0.5")."""
    return [method.label(stage) for method in METHODS.values() if method.active(stage)]
