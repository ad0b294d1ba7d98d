"""Dataset names a config can use, and how each becomes a list of Examples."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from factmem.data.example import Example
from factmem.data.factoid import key_value_recall
from factmem.data.local import local_factoids
from factmem.errors import ConfigError


@dataclass(frozen=True)
class DatasetSpec:
    """How to build a dataset, and how its answers are scored."""

    build: Callable[..., list[Example]]
    description: str
    match: Literal["equal", "contains"] = "equal"
    needs_path: bool = False
    generates: bool = False  # synthetic: `size` is passed to the generator itself
    options: tuple[str, ...] = ()  # names accepted under a stage's `options:`


def _sample(examples: list[Example], size: int | None, seed: int, name: str) -> list[Example]:
    """A seeded sample of `size` examples (all of them, in file order, when size is None)."""
    if size is None:
        return examples
    if size > len(examples):
        raise ConfigError(
            f"dataset {name!r} has {len(examples)} examples; size={size} asks for more"
        )
    return random.Random(f"factmem-sample-{name}-{seed}").sample(examples, size)


REGISTRY: dict[str, DatasetSpec] = {
    "kvr": DatasetSpec(
        build=lambda size, seed, **o: key_value_recall(size, seed, **o),
        description="Key-Value Recall: random 8-character keys and values (synthetic).",
        generates=True,
        options=("key_length", "value_length", "alphabet"),
    ),
    "kvr_id": DatasetSpec(
        build=lambda size, seed, **o: key_value_recall(size, seed, unseen=True, **o),
        description="Unseen KVR pairs, disjoint from `kvr` with the same seed (paper: ID).",
        generates=True,
        options=("key_length", "value_length", "alphabet"),
    ),
    "local": DatasetSpec(
        build=lambda path, **o: local_factoids(path, **o),
        description="A local .json/.jsonl of {prompt, response[, answers]} or the authors' "
        "{input_text, target_text} records (needs `path`).",
        needs_path=True,
        options=("skip_bad_rows",),
    ),
}


def dataset_names() -> list[str]:
    return list(REGISTRY)


def load_examples(
    name: str,
    size: int | None,
    seed: int,
    path: str | None = None,
    options: dict[str, Any] | None = None,
) -> list[Example]:
    """Build dataset `name` and draw `size` examples with `seed`."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(sorted(REGISTRY))}")
    spec, options = REGISTRY[name], dict(options or {})
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ConfigError(
            f"dataset {name!r}: unknown option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(spec.options) or 'none'}"
        )
    if spec.generates:
        if size is None:
            raise ConfigError(f"dataset {name!r} is synthetic: give a `size`")
        return spec.build(size, seed, **options)
    if spec.needs_path and not path:
        raise ConfigError(f"dataset {name!r} needs `path:` (a local file)")
    return _sample(spec.build(path=path, **options), size, seed, name)
