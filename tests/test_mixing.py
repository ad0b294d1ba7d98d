"""REMIX and replay: exact counts, seeded mixtures, documented formats, no leaks, overlap check."""

import json
import zipfile

import pytest

from factmem.config import MixingConfig, load_config
from factmem.data.example import Example
from factmem.data.factoid import key_value_recall
from factmem.errors import DataError
from factmem.mixing import (
    MEMORIZE_PROMPT,
    PASSAGE_PROMPT,
    build_mixing,
    mixing_count,
    replay_count,
)
from factmem.pipeline import stage_mixture

FACTS = key_value_recall(10, 0)


def _doc(i: int, n: int = 120) -> str:
    return " ".join(f"w{i}x{j}" for j in range(n))


def test_counts_follow_the_ratio_exactly():
    assert mixing_count(64, 2.0) == 128 and mixing_count(7, 1.5) == 11
    assert mixing_count(5, 0.5) == 3  # halves round up
    assert replay_count(64, 0.1) == 6 and replay_count(64, 0.01) == 1
    assert replay_count(10, 0.05) == 1
    for ratio in (1.0, 2.0, 3.0, 4.0):
        cfg = MixingConfig(source="random_words", ratio=ratio, words=6)
        examples, report = build_mixing(cfg, len(FACTS), "s", "unused", FACTS)
        assert len(examples) == report["examples"] == mixing_count(len(FACTS), ratio)


def test_random_words_formats_and_seeding():
    from factmem.mixing import word_list

    words = set(word_list())
    assert len(words) > 200_000 and "zythum" in words
    cfg = MixingConfig(source="random_words", words=7)
    a, _ = build_mixing(cfg, 4, "seed-1", "unused", FACTS)
    assert a == build_mixing(cfg, 4, "seed-1", "unused", FACTS)[0]
    assert a != build_mixing(cfg, 4, "seed-2", "unused", FACTS)[0]
    for e in a:
        assert e.prompt.startswith(PASSAGE_PROMPT)
        prefix = e.prompt[len(PASSAGE_PROMPT) :].split(" ")
        assert len(prefix) == 3 and len(e.response.split(" ")) == 4
        assert set(prefix + e.response.split(" ")) <= words
        assert e.meta["kind"] == "mixing"
    memorize = MixingConfig(source="random_words", words=5, format="memorize")
    for e in build_mixing(memorize, 4, "s", "unused", FACTS)[0]:
        assert e.prompt == MEMORIZE_PROMPT and len(e.response.split(" ")) == 5


@pytest.mark.parametrize("kind", ["txt-zip", "jsonl"])
def test_generic_passages_from_local_files(tmp_path, kind):
    docs = [_doc(i) for i in range(12)] + ["too short to use"] * 5
    if kind == "jsonl":
        path = tmp_path / "c.jsonl"
        path.write_text("".join(json.dumps({"content": d}) + "\n" for d in docs))
        cfg = MixingConfig(source="generic", corpus="local", path=str(path), field="content")
    else:
        path = tmp_path / "c.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for i, d in enumerate(docs):
                archive.writestr(f"doc{i}.txt", d)
        cfg = MixingConfig(source="generic", corpus="local", path=str(path))
    examples, report = build_mixing(cfg, 5, "s", "unused", FACTS)
    assert len(examples) == 10 and report["source"] == "generic:local"
    for e in examples:
        i = e.prompt.split("x")[0].removeprefix(PASSAGE_PROMPT + "w")
        words = _doc(int(i)).split()
        assert e.prompt == PASSAGE_PROMPT + " ".join(words[:50])
        assert e.response == " ".join(words[50:100])
    assert examples == build_mixing(cfg, 5, "s", "unused", FACTS)[0]
    with pytest.raises(DataError, match=r"only 12 passages of 50 \+ 50 words"):
        build_mixing(cfg, 7, "s", "unused", FACTS)


def test_long_local_documents_give_many_passages_that_share_no_text(tmp_path):
    """A corpus of a few long texts (like NLTK's state_union) feeds a whole stage."""
    path = tmp_path / "speeches.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(3):
            archive.writestr(f"speech{i}.txt", _doc(i, n=1030))  # 10 passages each, 30 left over
    cfg = MixingConfig(source="generic", corpus="local", path=str(path))
    examples, _ = build_mixing(cfg, 15, "s", "unused", FACTS)
    assert len(examples) == 30
    seen: set[str] = set()
    for e in examples:
        words = e.prompt.removeprefix(PASSAGE_PROMPT).split() + e.response.split()
        assert len(words) == 100 and not seen & set(words)  # no word of another passage
        seen |= set(words)
        doc, first = words[0].removeprefix("w").split("x")
        assert int(first) % 100 == 0  # consecutive words from a passage boundary
        assert words == [f"w{doc}x{j}" for j in range(int(first), int(first) + 100)]
    one_each = MixingConfig(source="generic", corpus="local", path=str(path),
                            passages_per_document=1)  # fmt: skip
    with pytest.raises(DataError, match=r"only 3 passages .*\(one per document\)"):
        build_mixing(one_each, 2, "s", "unused", FACTS)


def test_hub_corpora_take_one_passage_per_document_as_the_official_code():
    from factmem.mixing import passage_stream

    cfg = MixingConfig(source="generic", corpus="fineweb")
    docs = [_doc(i, n=1000) for i in range(4)]
    passages = list(passage_stream(docs, "s", cfg, "fineweb", 4))
    starts = sorted(e.prompt.removeprefix(PASSAGE_PROMPT).split()[0] for e in passages)
    assert starts == ["w0x0", "w1x0", "w2x0", "w3x0"]


def test_overlap_is_reported_or_dropped(tmp_path):
    facts = [Example("Who wrote Hamlet?", "William Shakespeare")]
    docs = [_doc(i) for i in range(6)]
    docs[2] = docs[2].replace("w2x60", "William Shakespeare")
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    base = dict(source="generic", corpus="local", path=str(path), ratio=5.0)
    kept, report = build_mixing(MixingConfig(**base), 1, "s", "unused", facts)
    assert report["overlapping"] == 1 and report["dropped"] == 0
    assert any("William Shakespeare" in e.response for e in kept)
    dropped, report = build_mixing(MixingConfig(**base, overlap="drop"), 1, "s", "unused", facts)
    assert report["dropped"] == 1 and len(dropped) == 5
    assert not any("Shakespeare" in e.response for e in dropped)


def test_a_mixture_that_cannot_be_built_is_an_error_not_a_hang():
    # ratio x facts rounds to 0: nothing to mix (this used to loop over the endless words)
    with pytest.raises(DataError, match=r"mixing.ratio=0.01 x 32 examples rounds to 0"):
        build_mixing(MixingConfig(source="random_words", ratio=0.01), 32, "s", "unused", FACTS)
    # an answer that is a word of the fixed prompt flags every random sequence
    facts = [Example("What do you do with a partial passage?", "Complete")]
    drop = MixingConfig(source="random_words", words=6, overlap="drop")
    with pytest.raises(DataError, match=r"only 0 of the 2 .* overlap the factoids.*complete"):
        build_mixing(drop, 1, "s", "unused", facts)


def _two_stage(tmp_path, **stage2):
    return load_config(
        {
            "model": "unused",
            "stages": [
                {
                    "dataset": "kvr",
                    "size": 20,
                    "stop": {"epochs": 1},
                    "mixing": {"source": "random_words", "words": 4},
                },
                {"dataset": "kvr_id", "size": 20, "stop": {"epochs": 1}, **stage2},
            ],
        }
    )


def test_no_leak_of_earlier_sets_unless_replay(tmp_path):
    config = _two_stage(tmp_path, mixing={"source": "random_words", "words": 4})
    sets = [key_value_recall(20, 0), key_value_recall(20, 0, unseen=True)]
    train, report = stage_mixture(config, 1, sets)
    d_a = {e.prompt for e in sets[0]}
    assert not d_a & {e.prompt for e in train}
    assert report == {"factoids": 20, "mixing": report["mixing"]} and len(train) == 60
    stage1 = stage_mixture(config, 0, sets)[0]
    stage1_mix = {e.response for e in stage1 if e.meta["kind"] == "mixing"}
    assert not stage1_mix & {e.response for e in train}  # each stage draws its own mixing data
    config = _two_stage(tmp_path, replay={"fraction": 0.1})
    train, report = stage_mixture(config, 1, sets)
    replayed = [e for e in train if e.meta["kind"] == "replay"]
    assert report["replay"] == {"stage1": 2} and len(replayed) == 2
    assert {e.prompt for e in replayed} <= d_a


def test_first_stage_cannot_replay():
    with pytest.raises(Exception, match="stage 1 has no earlier set to replay"):
        load_config(
            {
                "stages": [
                    {
                        "dataset": "kvr",
                        "size": 2,
                        "stop": {"epochs": 1},
                        "replay": {"fraction": 0.1},
                    }
                ]
            }
        )


def test_model_written_passages_are_cached(tiny_model_dir, tmp_path, monkeypatch):
    import factmem.models as models
    from factmem.mixing import model_documents

    monkeypatch.setenv("FACTMEM_CACHE", str(tmp_path / "cache"))
    cfg = MixingConfig(source="generic", corpus="model", prefix_words=3, continuation_words=3)
    first = model_documents(str(tiny_model_dir), 4, "s", cfg)
    assert len(first) == 4 and all(len(d.split()) >= 6 for d in first)
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("not cached"))
    assert model_documents(str(tiny_model_dir), 4, "s", cfg) == first
    examples, report = build_mixing(cfg, 2, "s", str(tiny_model_dir), FACTS)
    assert len(examples) == 4 and report["source"] == "generic:model"


def test_hub_corpora_stream_through_datasets(tmp_path, monkeypatch):
    """The hub path, on a local file shaped like Knowledge Pile's rows (no internet here)."""
    import datasets

    from factmem.mixing import HUB_CORPORA

    path = tmp_path / "kp.jsonl"
    path.write_text("".join(json.dumps({"content": _doc(i), "id": i}) + "\n" for i in range(8)))
    real = datasets.load_dataset
    calls = []

    def fake(repo, split, streaming):
        calls.append((repo, split, streaming))
        return real("json", data_files=str(path), split=split, streaming=streaming)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    cfg = MixingConfig(source="generic", corpus="knowledge_pile", ratio=1.0)
    examples, report = build_mixing(cfg, 4, "s", "unused", FACTS)
    assert calls == [(HUB_CORPORA["knowledge_pile"][0], "train", True)]
    assert len(examples) == 4 and report["source"] == "generic:knowledge_pile"
    assert all(e.prompt.startswith(PASSAGE_PROMPT) for e in examples)


def test_unreachable_hub_corpus_is_a_clear_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no internet")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    cfg = MixingConfig(source="generic", corpus="fineweb")
    with pytest.raises(DataError, match="cannot stream kh4dien/fineweb-100m-sample"):
        build_mixing(cfg, 2, "s", "unused", FACTS)


def test_every_source_the_config_accepts_has_an_entry_in_the_sources_table():
    """A new mixing source is one entry in SOURCES: a name the config accepts without one
    would otherwise fail only at report time, or give a wrong cost estimate."""
    import typing

    from factmem.config.schema import SOURCE_FIELDS
    from factmem.mixing import SOURCES

    accepted = set(typing.get_args(MixingConfig.model_fields["source"].annotation))
    assert accepted == set(SOURCES) and set(SOURCE_FIELDS.values()) <= accepted
    random = MixingConfig(source="random_words", words=7)
    generic = MixingConfig(source="generic", prefix_words=3, continuation_words=4)
    assert SOURCES["random_words"].words(random) == 7 and SOURCES["generic"].words(generic) == 7
    assert {s.label for s in SOURCES.values()} == {"Random", "Generic"}


def test_a_field_of_the_other_source_is_a_config_error_naming_it(tmp_path):
    from factmem.config import load_config
    from factmem.errors import ConfigError

    config = tmp_path / "c.yaml"
    config.write_text("stages:\n  - {dataset: kvr, size: 4, stop: {epochs: 1}}\n"
                      "  - dataset: kvr_id\n    size: 4\n    stop: {epochs: 1}\n"
                      "    mixing: {source: random_words, prefix_words: 10}\n")  # fmt: skip
    wrong = r"c.yaml:6: stages.1.mixing: .*does not use prefix_words \(generic\)"
    with pytest.raises(ConfigError, match=wrong):
        load_config(config)
