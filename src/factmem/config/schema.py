"""Experiment settings: one pydantic model per concern, documented where defined.

A config is YAML (loader.py reads it). Every field has a default that follows the paper's
authors (Chen et al., "Continual Memorization of Factoids in Language Models") unless the
field says otherwise. Unknown fields are errors, and every error names the field and its
line in the file, so a typo can never silently fall back to a default.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from factmem.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainingConfig(_Strict):
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
        "(sdpa, eager, flash_attention_2, ...). Scoring uses the model's own kernel. Not part "
        "of a run's fingerprint: kernels differ only in float rounding.",
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


class StopRule(_Strict):
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


class MixingConfig(_Strict):
    """REMIX: data unrelated to the factoids mixed into a stage, D:D_M = 1:ratio."""

    source: Literal["random_words", "generic"] = Field(
        description="random_words: uniformly drawn English words; generic: passages of text."
    )
    ratio: float = Field(
        2.0, gt=0, description="Mixing examples per factoid of the stage (paper: 1:2 -> 2.0)."
    )
    words: int = Field(
        50, ge=2, description="random_words: words per sequence (paper: 50, ablated)."
    )
    format: Literal["continue", "memorize"] = Field(
        "continue",
        description="random_words: continue = 'Complete the following partial passage:' + the "
        "first half -> the second half (the generic-text shape); memorize = 'Memorize the "
        "following random-string passage.' -> the whole sequence.",
    )
    word_list: str | None = Field(
        None,
        description="random_words: a word-per-line file or NLTK's words.zip. Default: the "
        "`english-words` package's web2 (Webster's 2nd, 235,970 words; NLTK's `words/en` is "
        "made from it and differs by ~90 entries: give NLTK's words.zip to use it exactly).",
    )
    corpus: Literal["model", "local", "knowledge_pile", "arxiv_pile", "fineweb"] = Field(
        "model",
        description="generic: model = passages written by the experiment's own base model "
        "(new, not in the paper; needs no corpus or internet; cached); local = `path`; the "
        "others stream the paper's hub corpora (needs internet).",
    )
    path: str | None = Field(
        None, description="generic, corpus=local: .txt, .zip of .txt, .jsonl/.json/.parquet."
    )
    field: str | None = Field(None, description="Text field of jsonl/parquet rows (default text).")
    prefix_words: int = Field(50, gt=0, description="generic: words in the prompt (paper: 50).")
    continuation_words: int = Field(
        50, gt=0, description="generic: words in the response (paper: 50)."
    )
    pool_size: int = Field(
        20000,
        gt=0,
        description="generic: sample from the first N passages (official: 20000 documents).",
    )
    passages_per_document: int | None = Field(
        None,
        ge=1,
        description="generic: passages cut from one document, each from its own consecutive "
        "words (no two share text). Default: 1 for the hub corpora and model passages (the "
        "official code takes each document's start); every one that fits for corpus=local, "
        "so a few long texts (e.g. NLTK's state_union) can feed a stage.",
    )
    overlap: Literal["report", "drop", "off"] = Field(
        "report",
        description="Check mixing examples for a factoid answer string or a shared word n-gram: "
        "report the count, or drop them (and draw others), or skip the check.",
    )
    overlap_ngram: int = Field(8, ge=2, description="n of the shared-n-gram check, in words.")

    @model_validator(mode="after")
    def _fields_of_its_source(self) -> MixingConfig:
        """A field of another source set away from its default is a mistake (it would be
        ignored): name it. At its default it is what every saved config.yaml holds (a full
        dump), and harmless. The config stays one flat model so that every run's
        fingerprint (that full dump) is unchanged."""
        defaults = type(self).model_fields
        wrong = sorted(name for name in self.model_fields_set
                       if SOURCE_FIELDS.get(name, self.source) != self.source
                       and getattr(self, name) != defaults[name].default)  # fmt: skip
        if wrong:
            owners = ", ".join(f"{n} ({SOURCE_FIELDS[n]})" for n in wrong)
            raise ValueError(f"source={self.source} does not use {owners}")
        return self


# The fields that belong to one mixing source (the others apply to all): mixing.SOURCES has
# one entry per source, tests/test_mixing.py checks the two agree.
SOURCE_FIELDS = {
    **dict.fromkeys(("words", "format", "word_list"), "random_words"),
    **dict.fromkeys(("corpus", "path", "field", "prefix_words", "continuation_words",
                     "pool_size", "passages_per_document"), "generic"),
}  # fmt: skip


class ReplayConfig(_Strict):
    """Replay: a fraction of every earlier stage's set mixed into this stage."""

    fraction: float = Field(
        gt=0,
        le=1,
        description="r: round(r * n) examples (at least 1) from each earlier set "
        "(paper: 0.01, 0.05, 0.1).",
    )


class RegularizerConfig(_Strict):
    """A continual-learning penalty during this stage (src/factmem/methods.py)."""

    method: Literal["l2", "ewc", "lwf"] = Field(
        description="l2: L2-SP, strength/2 * ||theta - theta_prev||^2 to the stage's starting "
        "weights; ewc: the same weighted by the diagonal Fisher of the previous stage's set; "
        "lwf: strength * T^2 * KL(start-of-stage model || model) on each batch's answer tokens. "
        "With lora, l2/ewc act on each adapted layer's weight change scaling * B @ A."
    )
    strength: float = Field(
        ge=0,
        description="Penalty weight (0 gives exactly the plain run). Scale differs by method: "
        "sum over all weights for l2/ewc, a per-token mean for lwf.",
    )
    fisher_examples: int = Field(
        64, gt=0, description="ewc: examples of the previous stage's set the Fisher averages."
    )
    temperature: float = Field(2.0, gt=0, description="lwf: softmax temperature T.")


class LoraSettings(_Strict):
    """Train this stage through LoRA adapters (peft) instead of all weights."""

    r: int = Field(16, gt=0, description="Adapter rank.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha (scaling alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | str = Field(
        "all-linear", description="Modules that get adapters (peft's target_modules)."
    )


class StageConfig(_Strict):
    """One training stage: a dataset, how much of it, and when to stop."""

    # The fields that switch a continual-learning method on (methods.METHODS): a stage with
    # none set uses no method, which the report can tell without importing methods (torch).
    METHOD_FIELDS: ClassVar[tuple[str, ...]] = ("lora", "regularizer", "weight_average")

    name: str | None = Field(None, description="Label in tables. Default: stage<k>.")
    dataset: str = Field(description="Dataset name (see `factmem datasets`), e.g. kvr, kvr_id.")
    size: int | None = Field(
        None, gt=0, description="Number of examples drawn (seeded). Default: the whole set."
    )
    path: str | None = Field(None, description="Local file for datasets read from disk.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Dataset-specific options (see its docstring)."
    )
    stop: StopRule | None = Field(None, description="When the stage ends; required (see StopRule).")
    mixing: MixingConfig | None = Field(None, description="REMIX data for this stage.")
    replay: ReplayConfig | None = Field(
        None, description="Replay of earlier stages' sets into this one."
    )
    training: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the experiment's training settings for this stage only.",
    )
    familiar: Literal[True, False, "any"] | None = Field(
        None,
        description="Factoid QA sets: false = only facts the base model does not know (few-shot "
        "greedy exact match, see `factmem filter`), true = only facts it knows, any = no "
        "filter. Default: false for popqa/triviaqa (the paper's), any for the others.",
    )
    few_shot: int = Field(
        0,
        ge=0,
        le=5,
        description="Score this set as the familiarity filter asks: after k demonstrations, "
        "any alias counting (e.g. known facts that were never trained in the template).",
    )
    train: bool = Field(
        True,
        description="false: no training; the stage only scores its set with the previous "
        "model (e.g. familiar facts before stage 2).",
    )
    regularizer: RegularizerConfig | None = Field(
        None, description="A continual-learning penalty: l2, ewc or lwf (see below)."
    )
    weight_average: float | None = Field(
        None,
        gt=0,
        le=1,
        description="WiSE-FT: after training, weights = (1 - a) * previous stage's + a * this "
        "stage's (1: unchanged).",
    )
    lora: LoraSettings | None = Field(
        None,
        description="Train through LoRA adapters; the adapter is saved in stage<k>/adapter and "
        "merged into stage<k>/model, which later stages start from.",
    )

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from factmem.data.registry import dataset_names

        if value not in dataset_names():
            raise ValueError(
                f"unknown dataset {value!r}; known: {', '.join(sorted(dataset_names()))}"
            )
        return value

    @model_validator(mode="after")
    def _has_stop(self) -> StageConfig:
        if self.stop is None and self.train:
            raise ValueError("a stage needs a stop rule, e.g. `stop: {epochs: 20}`")
        if not self.train and (self.mixing or self.replay or self.regularizer or self.lora
                               or self.weight_average):  # fmt: skip
            raise ValueError("a stage with `train: false` trains nothing: remove mixing, replay, "
                             "regularizer, lora and weight_average")  # fmt: skip

        return self

    @model_validator(mode="after")
    def _familiarity_applies(self) -> StageConfig:
        from factmem.data.registry import REGISTRY

        spec = REGISTRY[self.dataset]
        if self.familiar in (True, False) and not spec.filterable:
            raise ValueError(f"`familiar` applies to factoid QA sets, not {self.dataset!r}")
        if self.few_shot and spec.kind != "factoid":
            raise ValueError(f"`few_shot` applies to factoid sets, not {self.dataset!r}")
        return self


class EvaluationConfig(_Strict):
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
        "kept / hidden / lost. Two forward passes per scored set.",
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
# training settings that change how a stage runs, not what it computes (attention: the
# kernels differ in float rounding only, as two CPUs do): a run fingerprinted before one of
# them existed, or with another value, is the same run
NOT_IN_FINGERPRINT = {"report_to", "checkpoint_every_epochs", "trim_memory", "attention"}


class ExperimentConfig(_Strict):
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
