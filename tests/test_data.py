"""KVR generation and local files: deterministic, disjoint, and loud about bad rows."""

import json

import pytest

from factmem.data.factoid import KVR_ALPHABET, key_value_recall
from factmem.data.registry import load_examples
from factmem.errors import ConfigError, DataError


def test_kvr_shape_and_determinism():
    a = key_value_recall(50, seed=1)
    assert len(a) == 50
    assert a == key_value_recall(50, seed=1)
    assert a != key_value_recall(50, seed=2)
    for e in a:
        key = e.meta["key"]
        assert e.prompt == f"The value of key {key} is?"
        assert len(key) == 8 and len(e.response) == 8
        assert set(key + e.response) <= set(KVR_ALPHABET)
    assert len({e.meta["key"] for e in a}) == 50


def test_kvr_unseen_is_disjoint_whatever_the_sizes():
    seen = {e.meta["key"] for e in key_value_recall(100, seed=0)}
    unseen = key_value_recall(30, seed=0, unseen=True)
    assert not seen & {e.meta["key"] for e in unseen}
    # a larger D_A shares its prefix with a smaller one: sizes never reshuffle the facts
    assert key_value_recall(30, seed=0) == key_value_recall(100, seed=0)[:30]


def test_registry_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown option"):
        load_examples("kvr", 4, 0, options={"colour": 1})
    with pytest.raises(ConfigError, match="needs `path:`"):
        load_examples("local", 4, 0)
    with pytest.raises(ConfigError, match="synthetic"):
        load_examples("kvr", None, 0)


def test_local_file_rows_and_errors(tmp_path):
    good = tmp_path / "facts.jsonl"
    good.write_text(
        json.dumps({"prompt": "Q1?", "response": "A1"})
        + "\n"
        + json.dumps({"input_text": "Q2?", "target_text": "A2"})
        + "\n"
    )
    examples = load_examples("local", None, 0, path=str(good))
    assert [(e.prompt, e.response) for e in examples] == [("Q1?", "A1"), ("Q2?", "A2")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"prompt": "Q1?", "response": "A1"})
        + "\n"
        + json.dumps({"prompt": "Q2?", "response": ""})
        + "\n"
    )
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'response' is missing or empty"):
        load_examples("local", None, 0, path=str(bad))
    kept = load_examples("local", None, 0, path=str(bad), options={"skip_bad_rows": True})
    assert len(kept) == 1
    with pytest.raises(DataError, match="not found"):
        load_examples("local", None, 0, path=str(tmp_path / "missing.jsonl"))
