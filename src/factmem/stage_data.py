"""What a stage trains on: its own set (familiarity-filtered by the base model where the
dataset asks), and the mixture the stage is trained on (its facts, replay of earlier sets,
REMIX data), counted in tokens by kind. The pipeline calls these; tests call them without
training anything."""

from __future__ import annotations

import logging
from dataclasses import replace

from factmem.config import ExperimentConfig
from factmem.data.example import Example, encode_example
from factmem.data.registry import REGISTRY, load_examples
from factmem.errors import ConfigError
from factmem.familiarity import (
    FamiliarityJudge,
    Judge,
    filtered_examples,
    model_key,
)
from factmem.mixing import build_mixing, replay_examples
from factmem.models import load_model
from factmem.records import (
    replayed_fact_keys,
)

log = logging.getLogger(__name__)


def stage_examples(config: ExperimentConfig, index: int, judge: Judge | None = None
                   ) -> list[Example]:  # fmt: skip
    """Stage `index`'s own set (its familiarity filter judged by the base model)."""
    stage = config.stages[index]
    familiar = stage_familiar(config, index)
    if familiar is None:
        return load_examples(stage.dataset, stage.size, config.seed, stage.path, stage.options)
    if judge is None:
        raise ConfigError(f"dataset {stage.dataset!r}: `familiar` needs a model to judge with")
    return filtered_examples(stage.dataset, stage.size, config.seed, stage.path, stage.options,
                             familiar, judge)  # fmt: skip


def stage_familiar(config: ExperimentConfig, index: int) -> bool | None:
    """The stage's familiarity filter: its setting, else the dataset's default."""
    stage = config.stages[index]
    if stage.familiar == "any":
        return None
    if stage.familiar is None:
        return False if REGISTRY[stage.dataset].unfamiliar_by_default else None
    return stage.familiar


class BaseModelJudge:
    """The familiarity judge of the experiment's base model, loaded on first use."""

    def __init__(self, base_path: str, tokenizer, config: ExperimentConfig):
        self.base_path, self.tokenizer, self.config = base_path, tokenizer, config
        self.judges: dict[str, FamiliarityJudge] = {}
        self.model = None

    def for_dataset(self, dataset: str) -> Judge:
        def judge(examples):
            if self.model is None:
                log.info("judging familiarity with the base model %s", self.base_path)
                self.model = load_model(self.base_path, self.tokenizer)
            mode = REGISTRY[dataset].match
            if mode not in self.judges:
                self.judges[mode] = FamiliarityJudge(
                    self.model, self.tokenizer, model_key(self.base_path), mode=mode,
                    batch_size=self.config.evaluation.batch_size,
                )  # fmt: skip
            return self.judges[mode](examples)

        return judge


def stage_mixture(
    config: ExperimentConfig, index: int, stage_sets: list[list[Example]]
) -> tuple[list[Example], dict]:
    """Stage `index`'s training set: its factoids, replay of earlier sets, REMIX data."""
    stage = config.stages[index]
    factoids = [replace(e, meta={**e.meta, "kind": "factoid"}) for e in stage_sets[index]]
    examples, report = list(factoids), {"factoids": len(factoids)}
    stage_seed = f"{config.seed}-stage{index + 1}"  # stages draw different mixing data
    if stage.replay is not None:
        names = [config.stage_name(j) for j in range(index)]
        replayed, report["replay"] = replay_examples(
            stage_sets[:index], stage.replay.fraction, config.seed, names
        )
        report["replayed_facts"] = replayed_fact_keys((e.prompt, e.meta) for e in replayed)
        examples += replayed
    if stage.mixing is not None:
        every_factoid = [e for s in stage_sets for e in s]
        mixed, report["mixing"] = build_mixing(
            stage.mixing, len(factoids), stage_seed, config.model, every_factoid
        )
        examples += mixed
    return examples, report


def tokens_by_kind(tokenizer, examples: list[Example]) -> dict[str, int]:
    """Tokens per epoch of each kind of example (factoid, replay, mixing)."""
    counts: dict[str, int] = {}
    for e in examples:
        kind = e.meta.get("kind", "factoid")
        counts[kind] = counts.get(kind, 0) + len(encode_example(tokenizer, e)["input_ids"])
    return counts
