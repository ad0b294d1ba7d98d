"""Dataset names a config can use, and how each becomes a list of Examples.

A named set is read from local files in its upstream schema (`path:`) or, without a path,
from the Hugging Face hub; each row goes through the set's reader (data/qa.py,
data/instruct.py). Then a seeded permutation (`candidates`) and `size` examples of it
(`draw`). `<set>_id` takes the odd positions of the same permutation where `<set>` takes
the even ones: unseen facts of the same kind, disjoint whatever the two sizes are. Loading
needs no model: the familiarity filter is a step of its own (familiarity.py) between the two.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from factmem.data import instruct, qa
from factmem.data.example import Example
from factmem.data.factoid import key_value_recall
from factmem.data.local import local_factoids
from factmem.data.sources import SKIP_HINT, BadRow, BadRows, Row, hub_rows, local_rows
from factmem.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Kind = Literal["factoid", "nonfactoid"]


@dataclass(frozen=True)
class DatasetSpec:
    """How to build a dataset, and how its answers are scored."""

    description: str
    read: Callable[..., Example | None] | None = None  # one upstream row -> Example
    build: Callable[..., list[Example]] | None = None  # whole-set builders (kvr, local)
    hub: tuple[str, str | None, str] | None = None  # (id, config, split)
    match: Literal["equal", "contains"] = "equal"
    kind: Kind = "factoid"
    needs_path: bool = False
    generates: bool = False  # synthetic: `size` is passed to the generator itself
    halves: Literal["even", "odd"] | None = None  # `<set>` / `<set>_id` share one permutation
    filterable: bool = False  # the familiarity filter applies (factoid QA)
    unfamiliar_by_default: bool = False  # stage-1 sets: unfamiliar facts only, unless told
    tsv_fields: tuple[str, ...] = ()
    options: tuple[str, ...] = ()  # names accepted under a stage's `options:`
    layouts: str = ""  # the local upstream layouts read, named in errors about a first row


ROW_OPTIONS = ("split", "hub_config", "skip_bad_rows")
KVR_OPTIONS = ("key_length", "value_length", "alphabet")


def _qa_pair(name: str, read, hub, description: str, **extra: Any) -> dict[str, DatasetSpec]:
    """`<name>` and `<name>_id` (unseen examples of the same set)."""
    common = dict(read=read, hub=hub, filterable=True, unfamiliar_by_default=True,
                  options=ROW_OPTIONS, **extra)  # fmt: skip
    return {
        name: DatasetSpec(description=description, halves="even", **common),
        f"{name}_id": DatasetSpec(
            description=f"Unseen {name} facts, disjoint from `{name}` (paper: ID).",
            halves="odd",
            **common,
        ),
    }


def _nonfactoid(read, hub, description: str, layouts: str,
                options: tuple[str, ...] = ()) -> DatasetSpec:  # fmt: skip
    return DatasetSpec(description=f"{description} (non-factoid)", read=read, hub=hub,
                       kind="nonfactoid", options=(*ROW_OPTIONS, *options),
                       layouts=layouts)  # fmt: skip


REGISTRY: dict[str, DatasetSpec] = {
    "kvr": DatasetSpec(
        build=lambda size, seed, **o: key_value_recall(size, seed, **o),
        description="Key-Value Recall: random 8-character keys and values (synthetic).",
        generates=True,
        options=KVR_OPTIONS,
    ),
    "kvr_id": DatasetSpec(
        build=lambda size, seed, **o: key_value_recall(size, seed, unseen=True, **o),
        description="Unseen KVR pairs, disjoint from `kvr` with the same seed (paper: ID).",
        generates=True,
        options=KVR_OPTIONS,
    ),
    **_qa_pair(
        "popqa",
        qa.popqa_example,
        ("akariasai/PopQA", None, "test"),
        "PopQA: question + '\\nThe answer is: ' -> first answer (hub, local JSON or TSV).",
        layouts="the release's popQA.tsv (columns question, possible_answers, ...), or JSON "
        "{dev: [...], test: [...]} of {input, output} rows",
    ),
    **_qa_pair(
        "triviaqa",
        qa.triviaqa_example,
        ("mandarjoshi/trivia_qa", "rc.nocontext", "train"),
        "TriviaQA: question + '\\nThe answer is: ' -> answer (hub, or DPR's .tsv).",
        tsv_fields=("question", "answers"),
        layouts="DPR's TSV question<TAB>['alias', ...] (anserini's topics.dpr.trivia.*.txt), "
        "or jsonl/JSON rows shaped like the hub's {question, answer: {value, aliases}}",
    ),
    "lama": DatasetSpec(
        read=qa.lama_example,
        filterable=True,
        hub=("facebook/lama", "trex", "train"),
        description="LAMA T-REx or Google-RE as questions ('Where was [X] born?') -> object.",
        options=(*ROW_OPTIONS, "templates", "form", "relations"),
        layouts="a folder of T-REx P*.jsonl {sub_label, obj_label}, or of Google-RE "
        "*_test.jsonl {pred, sub_label, obj_label, masked_sentences, judgments}",
    ),
    "entityquestions": DatasetSpec(
        read=qa.entityquestions_example,
        filterable=True,
        description="EntityQuestions: question -> first answer (local folder of P*.json).",
        needs_path=True,
        options=ROW_OPTIONS,
        layouts="a folder of P*.<split>.json [{question, answers}], or the release's "
        "dataset/ folder (train/, dev/, test/ inside; `split` picks one, default train)",
    ),
    "webquestions": DatasetSpec(
        read=qa.webquestions_example,
        filterable=True,
        hub=("Stanford/web_questions", None, "train"),
        description="WebQuestions: question -> first answer; scored by gold-in-output.",
        match="contains",
        options=ROW_OPTIONS,
        layouts="JSON [{qText, answers}] (or {question, answers}) files, or a folder of them",
    ),
    "gsm8k": _nonfactoid(
        instruct.gsm8k_example,
        ("openai/gsm8k", "main", "train"),
        "GSM8K: question -> worked answer.",
        "jsonl {question, answer}",
    ),
    "math": _nonfactoid(
        instruct.math_example,
        ("EleutherAI/hendrycks_math", None, "train"),
        "MATH: problem -> solution (hub: every subject).",
        "jsonl {problem, solution}, or the release's folders of one problem per file "
        "(MATH/test/<subject>/<n>.json; MATH/ reads train/ unless `split` says test)",
        ("subjects",),
    ),
    "evolcode": _nonfactoid(
        instruct.evolcode_example,
        ("nickrosh/Evol-Instruct-Code-80k-v1", None, "train"),
        "Evol-Instruct code: instruction -> output.",
        "JSON [{instruction, output}]",
    ),
    "apps": _nonfactoid(
        instruct.apps_example,
        ("codeparrot/apps", "all", "train"),
        "APPS: problem -> first reference solution.",
        "jsonl {question, solutions, starter_code}",
    ),
    "ultrachat": _nonfactoid(
        instruct.ultrachat_example,
        ("stingning/ultrachat", None, "train"),
        "UltraChat dialogues, trained on every assistant turn.",
        "jsonl {data: [user, assistant, ...]}",
    ),
    "local": DatasetSpec(
        build=lambda path, **o: local_factoids(path, **o),
        description="A local .json/.jsonl of {prompt, response[, answers]} or the authors' "
        "{input_text, target_text} records (needs `path`).",
        needs_path=True,
        options=("skip_bad_rows",),
    ),
}

MATH_SUBJECTS = (
    "algebra", "counting_and_probability", "geometry", "intermediate_algebra",
    "number_theory", "prealgebra", "precalculus",
)  # fmt: skip


def dataset_names() -> list[str]:
    return list(REGISTRY)


def _rows(name: str, spec: DatasetSpec, path: str | None, options: dict,
          skip: BadRows | None) -> Iterator[Row]:  # fmt: skip
    split = options.get("split")
    if path:
        return local_rows(path, spec.tsv_fields, split, skip)
    if spec.hub is None:
        raise ConfigError(f"dataset {name!r} is not on the hub: give `path:` (a local file)")
    hub_id, config, default_split = spec.hub
    config = options.get("hub_config", config)
    if name == "math" and config is None:  # one hub config per subject
        subjects = options.get("subjects") or MATH_SUBJECTS
        return (r for s in subjects for r in hub_rows(hub_id, s, split or default_split))
    return hub_rows(hub_id, config, split or default_split)


def read_dataset(name: str, path: str | None = None, options: dict | None = None) -> list[Example]:
    """Every usable row of a named set, in file order. A row that cannot be read stops the
    load with file, line and field (and the option that skips it); under `skip_bad_rows`
    it is left out, and the count logged."""
    spec, options = dataset_spec(name, options)
    read = spec.read
    if name == "lama":
        templates = _lama_templates(options.get("templates"))
        read = partial(qa.lama_example, templates=templates, form=options.get("form", "question"))
    skip = BadRows() if options.get("skip_bad_rows") else None
    examples: list[Example] = []
    unusable = 0
    try:
        for label, row in _rows(name, spec, path, options, skip):
            try:
                example = read(row, label)
            except DataError as err:
                if skip is None:
                    layouts = f"; {name} reads {spec.layouts}" if path and not examples else ""
                    raise BadRow(f"{err}{layouts}") from None
                skip.add(str(err))
                continue
            if example is None:
                unusable += 1
            else:
                examples.append(example)
    except BadRow as err:
        raise DataError(f"{err}{SKIP_HINT}") from None
    if name == "lama" and options.get("relations"):
        wanted = set(options["relations"])
        examples = [e for e in examples if e.meta.get("relation") in wanted]
    if skip is not None:
        skip.report(name)
    if unusable:
        log.info("%s: %d rows have nothing to train on (e.g. no solution), left out", name,
                 unusable)  # fmt: skip
    if not examples:
        where = path or spec.hub[0]
        raise DataError(f"dataset {name!r}: no usable rows in {where}"
                        + (f" ({name} reads {spec.layouts})" if path and spec.layouts else ""))
    for i, e in enumerate(examples):
        e.meta.setdefault("id", f"{name.removesuffix('_id')}-{i}")
    return examples


def _lama_templates(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    templates = {}
    for label, row in local_rows(path):
        if "relation" not in row or "template" not in row:
            raise DataError(f"{label}: a templates row needs fields 'relation' and 'template'")
        templates[row["relation"]] = row["template"]
    return templates


def load_examples(
    name: str,
    size: int | None,
    seed: int,
    path: str | None = None,
    options: dict[str, Any] | None = None,
) -> list[Example]:
    """Build dataset `name` and draw `size` examples with `seed` (every example: size None)."""
    spec, options = dataset_spec(name, options)
    if spec.generates:
        if size is None:
            raise ConfigError(f"dataset {name!r} is synthetic: give a `size`")
        return spec.build(size, seed, **options)
    if spec.needs_path and not path:
        raise ConfigError(f"dataset {name!r} needs `path:` (a local file or folder)")
    if spec.build is not None:
        return _sample(spec.build(path=path, **options), size, seed, name)
    return draw(name, candidates(name, seed, path, options), size)


def candidates(name: str, seed: int, path: str | None = None,
               options: dict[str, Any] | None = None) -> list[Example]:  # fmt: skip
    """Every example of a QA or instruction set, in the seeded order that `draw` takes them
    from: a filter (familiarity.py) may walk this order and stop once it has enough."""
    spec, options = dataset_spec(name, options)
    if spec.build is not None or spec.generates:
        raise ConfigError(f"dataset {name!r} is built whole: it has no seeded candidate order")
    pool = read_dataset(name, path, options)
    order = list(range(len(pool)))
    random.Random(f"factmem-sample-{name.removesuffix('_id')}-{seed}").shuffle(order)
    return [pool[i] for i in order]


def draw(name: str, ordered: list[Example], size: int | None, what: str = "") -> list[Example]:
    """`size` examples of `ordered` (all: size None); a `<set>_id` variant takes the odd
    positions where `<set>` takes the even ones. `what` names a filter in the error."""
    halves = REGISTRY[name].halves
    if halves:
        ordered = ordered[0::2] if halves == "even" else ordered[1::2]
    if size is None:
        return ordered
    if size > len(ordered):
        half = " (half of the set: the other half is for the _id variant)" if halves else ""
        raise ConfigError(
            f"dataset {name!r} has {len(ordered)}{what} examples{half}; size={size} asks for more"
        )
    return ordered[:size]


def dataset_spec(name: str, options: dict[str, Any] | None) -> tuple[DatasetSpec, dict[str, Any]]:
    """The dataset's spec, and its options if it accepts every one of them."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(sorted(REGISTRY))}")
    spec, options = REGISTRY[name], dict(options or {})
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ConfigError(
            f"dataset {name!r}: unknown option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(spec.options) or 'none'}"
        )
    return spec, options


def _sample(examples: list[Example], size: int | None, seed: int, name: str) -> list[Example]:
    """A seeded sample of `size` examples (all of them, in file order, when size is None)."""
    if size is None:
        return examples
    if size > len(examples):
        raise ConfigError(
            f"dataset {name!r} has {len(examples)} examples; size={size} asks for more"
        )
    return random.Random(f"factmem-sample-{name}-{seed}").sample(examples, size)
