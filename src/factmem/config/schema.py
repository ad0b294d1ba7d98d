"""Experiment settings: one pydantic model per concern, documented where defined (stage and
training settings in stage_schema.py and training_schema.py; this module holds the
experiment, its evaluation and the fingerprint, and re-exports them all).

A config is YAML (loader.py reads it). Every field has a default that follows the paper's
authors (Chen et al., "Continual Memorization of Factoids in Language Models") unless the
field says otherwise. Unknown fields are errors, and every error names the field and its
line in the file, so a typo can never silently fall back to a default.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from factmem.config.stage_schema import (  # noqa: F401  (every model importable from here)
    SOURCE_FIELDS,
    LoraSettings,
    MixingConfig,
    RegularizerConfig,
    ReplayConfig,
    StageConfig,
)
from factmem.config.training_schema import StopRule, StrictModel, TrainingConfig  # noqa: F401
from factmem.errors import ConfigError


class EvaluationConfig(StrictModel):
    """How exact match is scored after each stage."""

    batch_size: int = Field(64, gt=0, description="Examples per forward / generate call.")
    max_new_tokens: int = Field(
        1000,
        gt=0,
        description="Greedy generation cap (the official code's 1000). Generation also stops "
        "as soon as the verdict can no longer change, which never alters a verdict.",
    )
    fast_path: Literal["auto", True, False] = Field(
        "auto",
        description="Certify correct answers with one teacher-forced forward pass over the gold "
        "and generate only for the rest; verdicts are identical to greedy generate either way. "
        "auto: when the set's answers average 16+ tokens, where it measured faster, and "
        "evaluation is fp32.",
    )
    tie_margin: float = Field(
        1e-3,
        gt=0,
        description="A teacher-forced step whose top-2 logits are closer than this is not "
        "trusted (numerics may differ from generate there); such examples are generated.",
    )
    bf16: bool = Field(False, description="bf16 autocast during evaluation (default fp32).")
    fact_scores: bool = Field(
        True,
        description="Beside each exact-match verdict, record whether the gold is in the "
        "output, its teacher-forced mean log-prob and first-token rank, and its Logit Lens "
        "layer of first occurrence (src/factmem/fact_scores.py); the report counts D_A facts "
        "kept / hidden / lost. One teacher-forced pass per scored set, plus generating on "
        "the wrong answers exact match's early stop cut short (for `contains`).",
    )
    contains_max_new_tokens: int = Field(
        128,
        gt=0,
        description="Fact scores' `contains` reads a wrong answer exact match cut short "
        "generated on to the gold, EOS or this many tokens (at most max_new_tokens): a "
        "passage-long answer (50 words, ~70 tokens) fits; the full 1000 took minutes a set "
        "where a model runs on (KVR after GSM8K).",
    )
    curve_every_steps: int = Field(
        0,
        ge=0,
        description="Forgetting curves: during training, score every earlier stage's set (and "
        "the stage's own) every N optimizer steps and at step 0 (0: off). Stored per stage as "
        "`curve` in results.json; does not change training.",
    )
    curve_size: int = Field(
        32, gt=0, description="Examples per set scored for the curves (the first N of each set)."
    )

    @model_validator(mode="after")
    def _fast_path_needs_fp32(self) -> EvaluationConfig:
        if self.fast_path is True and self.bf16:
            raise ValueError(
                "fast_path: true needs fp32 evaluation (bf16: false): under bf16 a forward "
                "pass and generate differ by more than tie_margin"
            )
        return self


def check_folder_name(name: str) -> str:
    """One plain folder name: letters, digits, `.`, `_`, `-`; not `.` or `..`, no `/`."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or set(name) == {"."}:
        raise ValueError(f"{name!r} is not a plain folder name (letters, digits, '.', '_', '-'; "
                         "no '/' or '..'): run folders stay inside output_dir")  # fmt: skip
    return name


# Bump when a setting's default value changes: fingerprints leave defaults out.
FINGERPRINT_VERSION = 1
# training settings that change how a stage runs, not what it computes: a run fingerprinted
# before one of them existed, or with another value, is the same run. `attention` is not
# among them: the kernels differ only in float rounding, but that rounding moved one seed's
# retention by ~10 points (issue 43), so a named kernel is part of the fingerprint; `auto`,
# the default, is left out as every default is, so archived runs keep their fingerprints.
NOT_IN_FINGERPRINT = {"report_to", "checkpoint_every_epochs", "trim_memory"}


class ExperimentConfig(StrictModel):
    """A continual-memorization experiment: a model and a sequence of stages."""

    name: str = Field("experiment", description="Run directory name under output_dir.")
    model: str = Field(
        "smollm2-135m",
        description="`smollm2-135m` (the embedded SmolLM2-135M-Instruct), a local folder, or a "
        "hub ID loadable by AutoModelForCausalLM.",
    )
    seed: int = Field(0, description="Fixes data sampling, shuffling and initialisation.")
    output_dir: str = Field("runs", description="Where run directories are created.")
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="Labels for reports, e.g. {strategy: Random/Generic}; `factmem grid` sets "
        "one per axis. Not part of any fingerprint.",
    )
    share_stages: bool = Field(
        True,
        description="Reuse a finished stage with the same fingerprint (same model, seed, data, "
        "mixing and training up to that stage) from a sibling run directory instead of "
        "training it again; e.g. No Mixing and Replay share stage 1.",
    )
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, description="Training settings for every stage."
    )
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig, description="Exact-match scoring settings."
    )
    stages: list[StageConfig] = Field(min_length=1, description="Training stages, in order.")

    @field_validator("name")
    @classmethod
    def _name_is_one_folder(cls, name: str) -> str:
        """A run name becomes a folder under output_dir: it must not reach outside it."""
        return check_folder_name(name)

    @field_validator("stages")
    @classmethod
    def _first_stage_has_nothing_to_replay(cls, stages: list[StageConfig]) -> list[StageConfig]:
        if stages and stages[0].replay is not None:
            raise ValueError("stage 1 has no earlier set to replay; remove its `replay`")
        if stages and stages[0].regularizer and stages[0].regularizer.method == "ewc":
            raise ValueError("stage 1 has no earlier set for ewc's Fisher; use l2 or lwf")
        return stages

    @model_validator(mode="after")
    def _no_adapter_penalty_under_fsdp(self) -> ExperimentConfig:
        """l2 / ewc on a LoRA stage penalise each layer's weight change B @ A, which needs
        the whole of A and B; under FSDP a rank holds slices of them, so the three together
        are refused here rather than failing inside the training loop (without LoRA, or
        with lwf, FSDP works: src/factmem/sharding.py)."""
        for i, stage in enumerate(self.stages):
            fsdp = (self.training.trainer_args | stage.training.get("trainer_args", {})).get("fsdp")
            regularizer = stage.regularizer
            if fsdp and stage.lora and regularizer and regularizer.method in ("l2", "ewc"):
                raise ValueError(f"stages.{i}.regularizer ({regularizer.method}) on a LoRA stage "
                                 "does not work with trainer_args.fsdp yet; train that stage "
                                 "without FSDP (DDP works), without LoRA, or with lwf")  # fmt: skip
        return self

    def stage_training(self, index: int) -> TrainingConfig:
        """The experiment's training settings with stage `index`'s overrides applied."""
        merged = self.training.model_dump() | self.stages[index].training
        try:
            return TrainingConfig.model_validate(merged)
        except ValidationError as err:
            raise ConfigError(format_errors(err, prefix=("stages", index, "training"))) from None

    def stage_name(self, index: int) -> str:
        return self.stages[index].name or f"stage{index + 1}"

    def fingerprint(self, upto: int) -> str:
        """Hash of all that determines stage `upto`'s checkpoint (model, seed, stages 0..upto)."""
        payload = {
            "version": FINGERPRINT_VERSION,
            "model": self.model,
            "seed": self.seed,
            "stages": [
                {  # defaults left out: a new setting (at its default) keeps old fingerprints
                    "stage": self.stages[i].model_dump(exclude={"name"}, exclude_defaults=True),
                    "training": self.stage_training(i).model_dump(
                        exclude=NOT_IN_FINGERPRINT, exclude_defaults=True
                    ),
                }
                for i in range(upto + 1)
            ],
        }
        if any(
            s.mixing is not None and s.mixing.overlap == "drop" for s in self.stages[: upto + 1]
        ):
            # dropping overlaps looks at every stage's factoids, later ones included
            payload["all_sets"] = [
                s.model_dump(include={"dataset", "size", "path", "options"}) for s in self.stages
            ]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def format_errors(
    err: ValidationError, source: str = "", lines: dict | None = None, prefix: tuple = (),
    title: str = "invalid config",
    unknown: str = "unknown field (check the spelling; `factmem fields` lists them all)",
) -> str:
    """A pydantic error as lines `file:line: field: message` (line when known)."""
    messages = []
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        field = ".".join(str(p) for p in loc) or "(top level)"
        where = ""
        if lines is not None:
            for cut in range(len(loc), -1, -1):
                if loc[:cut] in lines:
                    where = f"{source}:{lines[loc[:cut]]}: "
                    break
        elif source:
            where = f"{source}: "
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = unknown
        messages.append(f"{where}{field}: {msg}")
    return f"{title}:\n  " + "\n  ".join(messages)
