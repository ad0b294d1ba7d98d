"""Settings of how a stage trains (TrainingConfig) and when it stops (StopRule); the strict
base every config model shares: unknown fields are errors."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainingConfig(StrictModel):
    """How one stage is optimised. Set under `training:` (all stages) or a stage's `training:`."""

    learning_rate: float = Field(
        3e-4,
        gt=0,
        description="Peak learning rate. The paper used 5e-5 for 8B models; 3e-4 memorises 64 "
        "KVR pairs in 20 epochs on the embedded SmolLM2-135M (README).",
    )
    batch_size: int = Field(32, gt=0, description="Examples per optimizer step (paper: 32).")
    micro_batch_size: int | None = Field(
        None,
        gt=0,
        description="Examples per forward pass; gradient accumulation makes up "
        "batch_size. Default: batch_size.",
    )
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1 (paper: 0.9).")
    adam_beta2: float = Field(0.95, ge=0, lt=1, description="AdamW beta2 (paper: 0.95).")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon (paper: 1e-8).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (paper: 0).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm (paper: 1.0).")
    lr_scheduler: str = Field(
        "cosine", description="Any transformers scheduler name (paper: cosine)."
    )

    @field_validator("lr_scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        from transformers import SchedulerType

        names = [s.value for s in SchedulerType]
        if value not in names:
            raise ValueError(f"unknown scheduler {value!r}; known: {', '.join(names)}")
        return value

    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Warmup fraction (paper: 0.05).")
    bf16: Literal["auto", True, False] = Field(
        "auto",
        description="bf16 autocast (weights stay fp32). auto: on when the CPU has AVX-512 BF16 "
        "or AMX, or the GPU supports bf16.",
    )
    packing: Literal["auto", True, False] = Field(
        "auto",
        description="How batches are laid out (src/factmem/batching.py). auto: with flash-"
        "attention, one padding-free row; otherwise, per batch, right-padded rows or examples "
        "packed into rows of <= pack_row_tokens, whichever has fewer token slots. true: always "
        "packed rows; false: always padded. Loss and gradients are the same in every layout.",
    )
    attention: str = Field(
        "auto",
        description="Attention kernel for training (transformers' attn_implementation). auto: "
        "per batch shape, the faster of sdpa and eager, timed once per machine and kept in "
        "FACTMEM_CACHE/attention_kernels.json, so reruns train with the same kernel "
        "(src/factmem/kernels.py; on CPUs with bf16, eager for short factoid rows; under a "
        "multi-process launch, the model's own); or a name "
        "(sdpa, eager, flash_attention_2, ...). Scoring uses the model's own kernel. A named "
        "kernel is part of a run's fingerprint (its rounding moves results: a grid that must "
        "reproduce names one); auto is not, so a rerun may time a shape the other way.",
    )

    @field_validator("attention")
    @classmethod
    def _known_attention(cls, value: str) -> str:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        names = ["auto", "eager", *ALL_ATTENTION_FUNCTIONS.keys()]
        if value not in names:
            raise ValueError(f"unknown attention kernel {value!r}; known: {', '.join(names)}")
        return value

    pack_row_tokens: int = Field(
        512,
        gt=0,
        description="Row length for packed rows (longer rows cost quadratic "
        "attention with dense masks).",
    )
    max_length: int = Field(
        2048, gt=0, description="Examples longer than this (in tokens) are an error."
    )
    checkpoint_every_epochs: int = Field(
        5,
        ge=0,
        description="Save a resumable trainer checkpoint every N epochs (0: never). A killed "
        "stage resumes from the latest one.",
    )
    loss_chunk_tokens: int | None = Field(
        None,
        gt=0,
        description="Compute the loss on answer tokens only, N at a time, each chunk's output "
        "head recomputed in backward (src/factmem/chunked_loss.py): a batch never holds all "
        "its logits, a large share of a step's memory with long answers (GSM8K, EvolCode). "
        "The same loss and gradients up to float rounding. Default: the model's own loss.",
    )
    trim_memory: Literal["auto", True, False] = Field(
        "auto",
        description="Return the memory glibc's malloc keeps after frees to the OS after every "
        "micro-batch (malloc_trim). Batches of varying length otherwise grow a CPU run's "
        "RSS by many GB (BENCHMARKS.md). auto: on when training on the CPU. Results do not "
        "depend on it.",
    )
    report_to: list[str] = Field(
        default_factory=list,
        description="transformers report_to integrations (e.g. [wandb], [tensorboard]).",
    )
    trainer_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra transformers.TrainingArguments (e.g. fsdp, deepspeed, "
        "gradient_checkpointing), passed through unchanged.",
    )


class StopRule(StrictModel):
    """When a stage ends. Exactly one of epochs / loss_below / exact_match_at_least."""

    epochs: int | None = Field(
        None, gt=0, description="Train exactly this many epochs (the paper's KVR: 20)."
    )
    loss_below: float | None = Field(
        None,
        gt=0,
        description="Stop after the first epoch whose loss is below this (the paper's other "
        "sets: 1e-4). Which loss: see loss_measure.",
    )
    loss_measure: Literal["steps", "epoch_mean", "full_pass"] = Field(
        "steps",
        description="steps: the official code's rule, stop once `loss_patience` optimizer steps "
        "(in total, not in a row) had a loss below the threshold; epoch_mean: the mean training "
        "loss of an epoch; full_pass: a fresh eval-mode pass over the stage set after each epoch "
        "(strictest: the loss of the model that is kept). Losses exclude prompt and padding.",
    )
    loss_patience: int = Field(
        10,
        gt=0,
        description="For loss_measure=steps: how many steps below the threshold stop "
        "the stage (official code: 10).",
    )
    exact_match_at_least: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Stop after the first epoch whose exact match on the stage's own set is at "
        "least this fraction (1.0 = 100%).",
    )
    max_epochs: int | None = Field(
        None,
        gt=0,
        description="Cap for loss_below / exact_match_at_least (required with them). The "
        "learning-rate schedule is laid out over max_epochs.",
    )

    @model_validator(mode="after")
    def _one_rule(self) -> StopRule:
        chosen = [n for n in ("epochs", "loss_below", "exact_match_at_least") if getattr(self, n)]
        if len(chosen) != 1:
            raise ValueError(
                "give exactly one of epochs, loss_below, exact_match_at_least "
                f"(got {', '.join(chosen) or 'none'})"
            )
        if chosen[0] != "epochs" and self.max_epochs is None:
            raise ValueError(f"{chosen[0]} needs max_epochs as a cap")
        if chosen[0] == "epochs" and self.max_epochs is not None:
            raise ValueError("epochs is already fixed; max_epochs is only for the other rules")
        return self

    @property
    def epoch_budget(self) -> int:
        """Epochs the schedule is laid out over."""
        return self.epochs if self.epochs is not None else int(self.max_epochs or 0)

    def describe(self) -> str:
        if self.epochs is not None:
            return f"{self.epochs} epochs"
        if self.loss_below is not None:
            return f"loss ({self.loss_measure}) < {self.loss_below:g}, max {self.max_epochs} epochs"
        return f"exact match >= {self.exact_match_at_least:.0%}, max {self.max_epochs} epochs"
