"""What a stage trains on besides its own factoids: replay of earlier sets and REMIX data.

REMIX (the paper) mixes data unrelated to the factoids into a stage, D:D_M = 1:ratio:
  random word sequences   words drawn uniformly from Webster's 2nd (NLTK `words`, the
                          `web2` list of the `english-words` package)
  generic text            "Complete the following partial passage:\\n\\n" + 50 words of a
                          document -> its next 50 words (documents of >= 100 words; a long
                          local document gives several passages, none sharing text)
Replay mixes a fraction r of every earlier stage's set back in.

Every draw is seeded by the run's seed, so the same config gives the same mixture.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import random
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from factmem.config import MixingConfig
from factmem.data.example import Example
from factmem.errors import DataError
from factmem.model_passages import model_documents

log = logging.getLogger(__name__)

PASSAGE_PROMPT = "Complete the following partial passage:\n\n"
MEMORIZE_PROMPT = "Memorize the following random-string passage."

# The hub corpora of the paper: (dataset ID, text field).
HUB_CORPORA = {
    "knowledge_pile": ("Query-of-CC/Knowledge_Pile", "content"),
    "arxiv_pile": ("haritzpuerto/the_pile_arxiv_50k_sample", "text"),
    "fineweb": ("kh4dien/fineweb-100m-sample", "text"),
}


def mixing_count(n_factoids: int, ratio: float) -> int:
    """Mixing examples for a stage of `n_factoids` facts at D:D_M = 1:ratio (halves round up)."""
    return math.floor(n_factoids * ratio + 0.5)


def replay_count(n_earlier: int, fraction: float) -> int:
    """Replayed examples from an earlier set: r * n rounded (halves up), at least one."""
    return max(1, math.floor(n_earlier * fraction + 0.5))


# ------------------------------------------------------------------------ random words


@functools.cache
def word_list(path: str | None = None) -> tuple[str, ...]:
    """The word list, sorted (a set's order would not be reproducible)."""
    if path is None:
        from english_words import get_english_words_set

        return tuple(sorted(get_english_words_set(["web2"], lower=False)))
    file = Path(path)
    if not file.is_file():
        raise DataError(f"mixing.word_list: file not found: {file}")
    if file.suffix == ".zip":  # NLTK's words.zip
        with zipfile.ZipFile(file) as archive:
            text = archive.read("words/en").decode("utf-8")
    else:
        text = file.read_text(encoding="utf-8")
    words = sorted({w.strip() for w in text.splitlines() if w.strip()})
    if not words:
        raise DataError(f"mixing.word_list: {file} holds no words")
    return tuple(words)


def random_word_stream(seed: int | str, cfg: MixingConfig) -> Iterator[Example]:
    """Endless seeded sequences of `cfg.words` uniformly drawn words, as chat pairs.

    format=continue (default): PASSAGE_PROMPT + the first half of the sequence -> the second
    half, the layout of the generic passages (note: `words` is the whole sequence, so
    words=10 gives 5 -> 5 words, where generic prefix/continuation 10 gives 10 -> 10).
    format=memorize: MEMORIZE_PROMPT -> the whole sequence.
    """
    words = word_list(cfg.word_list)
    rng = random.Random(f"factmem-random-words-{seed}")
    for i in itertools.count():
        seq = [rng.choice(words) for _ in range(cfg.words)]
        if cfg.format == "memorize":
            prompt, response = MEMORIZE_PROMPT, " ".join(seq)
        else:
            half = cfg.words // 2
            prompt, response = PASSAGE_PROMPT + " ".join(seq[:half]), " ".join(seq[half:])
        yield Example(prompt, response, meta={"kind": "mixing", "id": f"random-{i}"})


# ------------------------------------------------------------------------ generic text


def document_passages(document: str, prefix: int, continuation: int,
                      limit: int | None = None) -> list[Example]:  # fmt: skip
    """(prompt, continuation) pairs cut from a document's consecutive words: the first
    prefix + continuation words, then the next as many, ... (at most `limit`); none shares
    a word with another. A document shorter than one passage gives none."""
    words = document.split()
    size = prefix + continuation
    count = len(words) // size if limit is None else min(limit, len(words) // size)
    return [
        Example(
            PASSAGE_PROMPT + " ".join(words[i * size : i * size + prefix]),
            " ".join(words[i * size + prefix : (i + 1) * size]),
            meta={"kind": "mixing"},
        )
        for i in range(count)
    ]


def local_documents(path: str, field: str | None) -> Iterator[str]:
    """Documents from a .txt (one), a .zip of .txt files, or .jsonl/.json/.parquet (`field`)."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"mixing.path: file not found: {file}")
    if file.suffix == ".txt":
        yield file.read_text(encoding="utf-8", errors="replace")
    elif file.suffix == ".zip":
        with zipfile.ZipFile(file) as archive:
            for name in sorted(archive.namelist()):
                if name.endswith(".txt"):
                    yield archive.read(name).decode("utf-8", errors="replace")
    elif file.suffix in (".jsonl", ".json", ".parquet"):
        import datasets

        kind = "parquet" if file.suffix == ".parquet" else "json"
        rows = datasets.load_dataset(kind, data_files=str(file), split="train", streaming=True)
        yield from _field_values(rows, field or "text", str(file))
    else:
        raise DataError(f"mixing.path: {file}: expected .txt, .zip, .jsonl, .json or .parquet")


def hub_documents(name: str) -> Iterator[str]:
    """Stream a hub corpus of the paper (needs internet)."""
    import datasets

    repo, field = HUB_CORPORA[name]
    try:
        rows = datasets.load_dataset(repo, split="train", streaming=True)
        yield from _field_values(rows, field, repo)
    except (ConnectionError, OSError, FileNotFoundError) as err:
        raise DataError(
            f"mixing.corpus={name}: cannot stream {repo} from the hub ({err}); offline, use "
            "corpus: model, or corpus: local with a path"
        ) from None


def _field_values(rows: Iterable[dict], field: str, source: str) -> Iterator[str]:
    for number, row in enumerate(rows, start=1):
        if field not in row:
            raise DataError(f"{source}: row {number} has no field {field!r} (set mixing.field)")
        if isinstance(row[field], str):
            yield row[field]


def passage_stream(documents: Iterable[str], seed: int | str, cfg: MixingConfig, source: str,
                   needed: int) -> Iterator[Example]:  # fmt: skip
    """The first `cfg.pool_size` passages of the documents, in a seeded random order.

    The official code takes the first 20,000 documents with >= 100 words and samples from
    them, one passage each; pool_size is that number. A local corpus gives every passage
    that fits in each document unless `passages_per_document` says otherwise.
    """
    per_document = cfg.passages_per_document
    if per_document is None and cfg.corpus != "local":
        per_document = 1
    pool: list[Example] = []
    for document in documents:
        pool += document_passages(document, cfg.prefix_words, cfg.continuation_words,
                                  per_document)  # fmt: skip
        if len(pool) >= cfg.pool_size:
            del pool[cfg.pool_size :]
            break
    if len(pool) < needed:
        each = "one per document" if per_document == 1 else f"up to {per_document or 'all'} " \
            "per document"
        raise DataError(
            f"{source}: only {len(pool)} passages of {cfg.prefix_words} + "
            f"{cfg.continuation_words} words ({each}); the stage needs {needed} (lower "
            "mixing.ratio or the word counts, raise mixing.passages_per_document, or add text)"
        )
    random.Random(f"factmem-generic-{seed}").shuffle(pool)
    for i, e in enumerate(pool):
        yield Example(e.prompt, e.response, meta={"kind": "mixing", "id": f"generic-{i}"})


def generic_stream(count: int, seed: int | str, cfg: MixingConfig, model: str) -> Iterator[Example]:
    if cfg.corpus == "local":
        if not cfg.path:
            raise DataError("mixing.corpus=local needs mixing.path")
        documents: Iterable[str] = local_documents(cfg.path, cfg.field)
        source = cfg.path
    elif cfg.corpus == "model":
        spare = count // 4 if cfg.overlap == "drop" else 0  # room for dropped passages
        documents, source = model_documents(model, count + spare, seed, cfg), f"{model} passages"
    else:
        documents, source = hub_documents(cfg.corpus), cfg.corpus
    return passage_stream(documents, seed, cfg, source, count)


# ------------------------------------------------------------------------ overlap check


def overlaps(example: Example, answers: set[str], ngrams: set[tuple[str, ...]], n: int) -> str:
    """Why a mixing example overlaps the factoids ('' if it does not)."""
    text = f"{example.prompt} {example.response}".lower()
    words = re.findall(r"\w+", text)
    for answer in answers:
        if re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text):
            return f"answer {answer!r}"
    for i in range(len(words) - n + 1):
        if tuple(words[i : i + n]) in ngrams:
            return f"{n}-gram {' '.join(words[i : i + n])!r}"
    return ""


def factoid_index(factoids: Iterable[Example], n: int) -> tuple[set[str], set[tuple[str, ...]]]:
    """Answer strings (>= 3 characters) and word n-grams of a run's factoids."""
    answers, ngrams = set(), set()
    for e in factoids:
        answers.update(a.strip().lower() for a in e.gold_answers() if len(a.strip()) >= 3)
        words = re.findall(r"\w+", f"{e.prompt} {e.response}".lower())
        ngrams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return answers, ngrams


# ------------------------------------------------------------------------ one stage's mixture


@dataclass(frozen=True)
class MixingSource:
    """One kind of REMIX data, all that the rest of factmem asks of it: its name in the
    paper's strategy labels (Random/-, -/Generic), its examples, the words one example holds
    (what a cost estimate counts), and the length a mixing-length ablation varies. A new
    source is one entry in SOURCES (and its name in MixingConfig.source): a test checks
    that every name the config accepts has one."""

    label: str
    examples: Callable[[MixingConfig, int, str, str], Iterator[Example]]  # cfg, count, seed, model
    words: Callable[[MixingConfig], int]
    ablated_length: Callable[[MixingConfig], int]
    describe: Callable[[MixingConfig], str]


SOURCES: dict[str, MixingSource] = {
    "random_words": MixingSource(
        label="Random",
        # random words never run out: look at a bounded number, so that an overlap filter
        # that rejects nearly everything stops with an error instead of looping forever
        examples=lambda cfg, count, seed, model: itertools.islice(
            random_word_stream(seed, cfg), 100 * count + 1000),
        words=lambda cfg: cfg.words,
        ablated_length=lambda cfg: cfg.words,
        describe=lambda cfg: "random_words",
    ),
    "generic": MixingSource(
        label="Generic",
        examples=lambda cfg, count, seed, model: generic_stream(count, seed, cfg, model),
        words=lambda cfg: cfg.prefix_words + cfg.continuation_words,
        ablated_length=lambda cfg: cfg.prefix_words,
        describe=lambda cfg: f"generic:{cfg.corpus}",
    ),
}  # fmt: skip


def mixing_source(cfg: MixingConfig) -> MixingSource:
    try:
        return SOURCES[cfg.source]
    except KeyError:
        raise DataError(f"mixing.source={cfg.source!r} has no entry in factmem.mixing.SOURCES; "
                        f"known: {', '.join(SOURCES)}") from None


def build_mixing(
    cfg: MixingConfig, n_factoids: int, seed: int | str, model: str, factoids: Iterable[Example]
) -> tuple[list[Example], dict]:
    """The stage's mixing examples (exactly mixing_count: ratio x n_factoids, halves rounded
    up) and a report."""
    count = mixing_count(n_factoids, cfg.ratio)
    if count == 0:
        raise DataError(
            f"mixing.ratio={cfg.ratio} x {n_factoids} examples rounds to 0 mixing examples: "
            "raise mixing.ratio, or leave mixing out of this stage"
        )
    stream = mixing_source(cfg).examples(cfg, count, seed, model)
    chosen: list[Example] = []
    flagged: list[dict] = []
    if cfg.overlap == "off":
        chosen = list(itertools.islice(stream, count))
    else:
        answers, ngrams = factoid_index(factoids, cfg.overlap_ngram)
        for example in stream:
            why = overlaps(example, answers, ngrams, cfg.overlap_ngram)
            if why:
                flagged.append({"id": example.meta["id"], "why": why})
                if cfg.overlap == "drop":
                    continue
            chosen.append(example)
            if len(chosen) == count:
                break
    if len(chosen) < count:
        why = f" (the rest overlap the factoids, e.g. {flagged[0]['why']})" if flagged else ""
        raise DataError(
            f"mixing: only {len(chosen)} of the {count} examples needed are usable{why}"
        )
    report = {
        "source": mixing_source(cfg).describe(cfg),
        "ratio": cfg.ratio,
        "examples": len(chosen),
        "overlap_check": cfg.overlap,
        "overlapping": len(flagged),
        "dropped": len(flagged) if cfg.overlap == "drop" else 0,
        "overlap_examples": flagged[:20],
    }
    if flagged:
        log.warning(
            "mixing: %d examples overlap the factoids (%s)",
            len(flagged),
            "dropped" if cfg.overlap == "drop" else "kept; overlap: drop removes them",
        )
    return chosen, report


def replay_examples(earlier: list[list[Example]], fraction: float, seed: int,
                    names: list[str]) -> tuple[list[Example], dict]:  # fmt: skip
    """round(r * n) (at least 1) seeded examples from each earlier stage's set."""
    chosen, report = [], {}
    for name, examples in zip(names, earlier, strict=True):
        k = replay_count(len(examples), fraction)
        sample = random.Random(f"factmem-replay-{name}-{seed}").sample(examples, k)
        chosen += [Example(e.prompt, e.response, e.answers, {**e.meta, "kind": "replay",
                                                              "replayed_from": name})
                   for e in sample]  # fmt: skip
        report[name] = k
    return chosen, report
