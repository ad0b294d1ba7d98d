"""Settings of one stage: its set, its mixing (REMIX sources), replay and continual-learning
methods (StageConfig and the models it holds)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from factmem.config.training_schema import StopRule, StrictModel


class MixingConfig(StrictModel):
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


class ReplayConfig(StrictModel):
    """Replay: a fraction of every earlier stage's set mixed into this stage."""

    fraction: float = Field(
        gt=0,
        le=1,
        description="r: round(r * n) examples (at least 1) from each earlier set "
        "(paper: 0.01, 0.05, 0.1).",
    )


class RegularizerConfig(StrictModel):
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


class LoraSettings(StrictModel):
    """Train this stage through LoRA adapters (peft) instead of all weights."""

    r: int = Field(16, gt=0, description="Adapter rank.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha (scaling alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | str = Field(
        "all-linear", description="Modules that get adapters (peft's target_modules)."
    )


class StageConfig(StrictModel):
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
