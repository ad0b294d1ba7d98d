"""Which facts a model already knows: few-shot greedy exact match, cached per fact.

The paper trains on *unfamiliar* facts: those the pretrained model does not answer. A fact
counts as known when, after a few demonstrations, the model's greedy answer (stripped,
lower-cased) equals one of the fact's aliases -- or contains one, for sets scored that way
(WebQuestions). The demonstrations are fixed, general-knowledge questions that no dataset
here asks, shown as earlier chat turns in the same Tulu template used for training, so that
the model sees how short an answer is wanted.

Verdicts are cached per (model, settings) and fact, in an append-only JSONL file: a grid
pays for each fact once, and a killed filter resumes (a torn last line is ignored).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from factmem.atomic import crash_point
from factmem.data.example import Example
from factmem.data.qa import ANSWER_SUFFIX
from factmem.data.registry import REGISTRY, candidates, dataset_spec, draw
from factmem.errors import ConfigError
from factmem.evaluation import MatchMode, exact_match

log = logging.getLogger(__name__)

Judge = Callable[[Sequence[Example]], list[bool]]  # True where the model knows the fact


def filtered_examples(name: str, size: int | None, seed: int, path: str | None,
                      options: dict[str, Any] | None, familiar: bool, judge: Judge
                      ) -> list[Example]:  # fmt: skip
    """`size` facts of set `name` that the judge finds known (`familiar`) or not: the data
    layer's seeded candidates, judged in that order only until enough are kept, then drawn
    as `load_examples` draws (so `<set>_id` stays disjoint from `<set>`)."""
    spec, options = dataset_spec(name, options)
    if not spec.filterable:
        raise ConfigError(f"dataset {name!r}: `familiar` applies to factoid QA sets only "
                          f"({', '.join(filterable_names())})")  # fmt: skip
    want = None if size is None else (2 * size if spec.halves else size)
    kept = keep_familiar(candidates(name, seed, path, options), familiar, judge, want)
    return draw(name, kept, size, " familiar" if familiar else " unfamiliar")


def filterable_names() -> list[str]:
    """The factoid QA sets a familiarity filter applies to."""
    return [name for name, spec in REGISTRY.items() if spec.filterable]


def check_filterable(name: str) -> None:
    """A one-line refusal, before any model is loaded, of a name that is not a factoid QA
    set: an unknown name, or a set (GSM8K, KVR) with no facts a model could already know."""
    choices = ", ".join(filterable_names())
    if name not in REGISTRY:
        raise ConfigError(f"unknown dataset {name!r}; the familiarity filter takes one of "
                          f"{choices}")  # fmt: skip
    if not REGISTRY[name].filterable:
        raise ConfigError(f"dataset {name!r} is not a factoid QA set; the familiarity filter "
                          f"takes one of {choices}")  # fmt: skip


def keep_familiar(ordered: list[Example], familiar: bool, judge: Judge, want: int | None,
                  chunk: int = 64) -> list[Example]:  # fmt: skip
    """Keep facts whose judged familiarity equals `familiar`, in order, until `want` kept."""
    kept: list[Example] = []
    for start in range(0, len(ordered), chunk):
        batch = ordered[start : start + chunk]
        known = judge(batch)
        kept += [replace(e, meta={**e.meta, "familiar": k}) for e, k in zip(batch, known,
                 strict=True) if k == familiar]  # fmt: skip
        if want is not None and len(kept) >= want:
            return kept[:want]
    return kept

DEMONSTRATIONS = (
    ("What is the capital of France?", "Paris"),
    ("Who wrote Romeo and Juliet?", "William Shakespeare"),
    ("What is the largest planet in the Solar System?", "Jupiter"),
    ("In which country is the city of Osaka?", "Japan"),
    ("What language is spoken in Brazil?", "Portuguese"),
)


def few_shot_example(example: Example, shots: int) -> Example:
    """`example` asked after `shots` demonstrations, accepting any of its aliases."""
    suffix = ANSWER_SUFFIX if example.prompt.endswith(ANSWER_SUFFIX) else ""
    history = tuple((q + suffix, a) for q, a in DEMONSTRATIONS[:shots])
    aliases = tuple(example.meta.get("aliases") or example.gold_answers())
    return Example(example.prompt, example.response, aliases, dict(example.meta), history)


class FamiliarityJudge:
    """Callable: facts -> [known?], with a per-fact cache on disk."""

    def __init__(self, model, tokenizer, model_key: str, *, shots: int = 5,
                 mode: MatchMode = "equal", max_new_tokens: int = 32, batch_size: int = 64,
                 cache_root: Path | None = None):  # fmt: skip
        if not 0 <= shots <= len(DEMONSTRATIONS):
            raise ValueError(f"shots must be 0..{len(DEMONSTRATIONS)}")
        self.model, self.tokenizer = model, tokenizer
        self.shots, self.mode = shots, mode
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        settings = json.dumps([model_key, shots, mode, max_new_tokens, DEMONSTRATIONS])
        name = hashlib.sha256(settings.encode()).hexdigest()[:16]
        if cache_root is None:
            from factmem.models import cache_dir

            cache_root = cache_dir()
        self.cache_file = cache_root / "familiarity" / f"{name}.jsonl"
        self.known = self._read_cache()

    @staticmethod
    def fact_key(example: Example) -> str:
        aliases = example.meta.get("aliases") or example.gold_answers()
        text = json.dumps([example.prompt, example.response, list(aliases)])
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def _ends_with_newline(self) -> bool:
        with self.cache_file.open("rb") as handle:
            handle.seek(-1, 2)
            return handle.read(1) == b"\n"

    def _read_cache(self) -> dict[str, bool]:
        known: dict[str, bool] = {}
        if self.cache_file.is_file():
            for line in self.cache_file.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    known[row["key"]] = bool(row["known"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line torn by a kill: judged again
        return known

    def __call__(self, examples: Sequence[Example]) -> list[bool]:
        keys = [self.fact_key(e) for e in examples]
        todo = [i for i, k in enumerate(keys) if k not in self.known]
        if todo:
            asked = [few_shot_example(examples[i], self.shots) for i in todo]
            predictions = exact_match(
                self.model, self.tokenizer, asked, mode=self.mode, batch_size=self.batch_size,
                max_new_tokens=self.max_new_tokens, fast_path=False, progress=False,
            )  # fmt: skip
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            lines = []
            for i, p in zip(todo, predictions, strict=True):
                self.known[keys[i]] = p.correct
                lines.append(json.dumps({"key": keys[i], "known": p.correct,
                                         "prompt": examples[i].prompt,
                                         "output": p.output}) + "\n")  # fmt: skip
            text = "".join(lines)
            with self.cache_file.open("a", encoding="utf-8") as handle:
                if handle.tell() and not self._ends_with_newline():
                    handle.write("\n")  # after a line torn by a kill, start a fresh line
                handle.write(text[: len(text) // 2])
                handle.flush()
                crash_point(self.cache_file)  # the crash tests tear a line here
                handle.write(text[len(text) // 2 :])
        return [self.known[k] for k in keys]


def model_key(path: str) -> str:
    """Identity of a model for the cache: its path and its weight files' sizes and times."""
    folder = Path(path)
    if not folder.is_dir():
        return path  # a hub ID: its revision is pinned by the hub cache
    stats = sorted(
        (p.name, p.stat().st_size, int(p.stat().st_mtime))
        for p in folder.iterdir()
        if p.suffix in (".safetensors", ".bin", ".json")
    )
    return json.dumps([str(folder.resolve()), stats])


def split_by_familiarity(
    model: str,
    dataset: str,
    path: str | None = None,
    options: dict | None = None,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[list[Example], list[Example]]:
    """(known, unknown) facts of a set, judged by `model`: what `factmem filter` prints."""
    import random

    from tqdm.auto import tqdm

    from factmem.data.registry import read_dataset
    from factmem.models import load_model, load_tokenizer, resolve_model

    check_filterable(dataset)
    facts = read_dataset(dataset, path, options)
    random.Random(f"factmem-filter-{seed}").shuffle(facts)
    facts = facts[:limit] if limit else facts
    base = resolve_model(model)
    tokenizer = load_tokenizer(base)
    judge = FamiliarityJudge(load_model(base, tokenizer), tokenizer, model_key(base),
                             mode=REGISTRY[dataset].match, batch_size=batch_size)  # fmt: skip
    known: list[Example] = []
    unknown: list[Example] = []
    chunks = range(0, len(facts), batch_size)
    for start in tqdm(chunks, desc=f"familiarity of {dataset}", disable=not progress):
        chunk = facts[start : start + batch_size]
        for fact, is_known in zip(chunk, judge(chunk), strict=True):
            (known if is_known else unknown).append(fact)
    return known, unknown
