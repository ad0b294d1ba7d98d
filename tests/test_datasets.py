"""The paper's datasets: upstream schemas (local and hub-shaped) -> well-formed pairs.

Fixture rows are written here, in each upstream schema (../shared/data/README.md); a check
against the real sample files runs when ../shared/data is present.
"""

import json
from pathlib import Path

import pytest

from factmem.data.example import Example
from factmem.data.qa import ANSWER_SUFFIX
from factmem.data.registry import REGISTRY, load_examples, read_dataset
from factmem.errors import ConfigError, DataError
from factmem.familiarity import filtered_examples

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, content) -> Path:
    """A fixture file: bytes or text as given, rows as JSON lines (.jsonl) or one JSON value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in content), encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")
    return path


def popqa_rows(n: int) -> list[dict]:
    return [
        {"input": f"Who made widget {i}?", "output": json.dumps([f"Maker {i}", f"M{i}"]),
         "id": i, "s_pop": 3, "o_pop": 5}
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture
def upstream(tmp_path) -> dict[str, Path]:
    """One small local file (or folder) per dataset, in its upstream format."""
    t = tmp_path
    return {
        "popqa": write(t / "popqa.json", {"name": "popqa", "dev": popqa_rows(6),
                                          "test": popqa_rows(10)[6:]}),  # fmt: skip
        "triviaqa": write(
            t / "trivia.tsv",
            "Which bird is this?\t['🐦', 'Robin', 'robin redbreast']\n"
            'Who sang it?\t"[\'The Band (film)\', \'The Band\']"\n',
        ),
        "webquestions": write(t / "wq.json", [
            {"qId": "wq1", "qText": "what is x?", "answers": ["Y Z"]},
            {"qId": "wq2", "qText": "where is w?", "answers": ["Here", "There"]},
        ]),  # fmt: skip
        "entityquestions": write(t / "eq" / "P17.dev.json",
                                 [{"question": "Which country is A in?", "answers": ["B"]}]),
        "lama": write(t / "lama" / "P19.jsonl",
                      [{"sub_label": "Ann", "obj_label": "Rome", "uuid": "u1"}]),
        "gsm8k": write(t / "gsm8k.jsonl", [{"question": "1+1?", "answer": "1+1=2\n#### 2"}]),
        "math": write(t / "math.jsonl", [{"problem": "x?", "level": "Level 1", "type": "Algebra",
                                          "solution": "$\\boxed{1}$", "source_file": "a"}]),
        "evolcode": write(t / "evol.json", [{"instruction": "Sort.", "output": "sorted(x)"}]),
        "apps": write(t / "apps.jsonl", [
            {"question": "Read n.", "solutions": json.dumps(["print(1)", "print(2)"]),
             "starter_code": "", "input_output": "{}", "difficulty": "intro"},
            {"question": "No solution here.", "solutions": "", "starter_code": ""},
        ]),  # fmt: skip
        "ultrachat": write(t / "ultra.jsonl", [{"id": "0", "data": ["hi", "hello", "how?", "so"]}]),
    }  # fmt: skip


def test_every_dataset_loads_from_its_upstream_local_format(upstream):
    expected = {
        "popqa": ("Who made widget 0?" + ANSWER_SUFFIX, "Maker 0"),
        "triviaqa": ("Which bird is this?" + ANSWER_SUFFIX, "Robin"),  # the emoji is skipped
        "webquestions": ("what is x?", "Y Z"),
        "entityquestions": ("Which country is A in?", "B"),
        "lama": ("Where was Ann born?", "Rome"),
        "gsm8k": ("1+1?", "1+1=2\n#### 2"),
        "math": ("x?", "$\\boxed{1}$"),
        "evolcode": ("Sort.", "sorted(x)"),
        "apps": ("Read n.", "print(1)"),  # the row without a solution is left out
        "ultrachat": ("how?", "so"),
    }
    for name, (prompt, response) in expected.items():
        folder = upstream[name].parent if name in ("entityquestions", "lama") else upstream[name]
        examples = read_dataset(name, str(folder))
        first = examples[0]
        assert (first.prompt, first.response) == (prompt, response), name
        assert all(e.prompt.strip() and e.response.strip() for e in examples), name
    assert len(read_dataset("popqa", str(upstream["popqa"]))) == 10
    assert len(read_dataset("popqa", str(upstream["popqa"]), {"split": "dev"})) == 6
    assert read_dataset("triviaqa", str(upstream["triviaqa"]))[1].response == "The Band"  # CSV
    assert read_dataset("ultrachat", str(upstream["ultrachat"]))[0].history == (("hi", "hello"),)
    assert len(read_dataset("apps", str(upstream["apps"]))) == 1
    assert read_dataset("popqa", str(upstream["popqa"]))[0].meta["aliases"] == ["Maker 0", "M0"]


def test_lama_cloze_form_and_templates_file(tmp_path, upstream):
    templates = write(tmp_path / "relations.jsonl",
                      [{"relation": "P19", "template": "[X] was born in [Y] ."}])  # fmt: skip
    options = {"form": "cloze", "templates": str(templates)}
    (e,) = read_dataset("lama", str(upstream["lama"].parent), options)
    assert (e.prompt, e.response, e.meta["relation"]) == ("Ann was born in", "Rome", "P19")
    with pytest.raises(DataError, match="P19 has no question and no cloze template"):
        read_dataset("lama", str(upstream["lama"].parent), {"form": "cloze"})


def test_webquestions_is_scored_by_gold_in_output():
    assert REGISTRY["webquestions"].match == "contains"
    assert REGISTRY["popqa"].match == "equal"


def test_broken_rows_name_file_row_and_field_or_are_skipped(tmp_path):
    rows = popqa_rows(3)
    rows[1]["output"] = "[]"
    path = write(tmp_path / "p.json", rows)
    with pytest.raises(DataError, match=r"p.json: row 1: field 'output' is missing or not a non"):
        read_dataset("popqa", str(path))
    assert len(read_dataset("popqa", str(path), {"skip_bad_rows": True})) == 2
    bad_jsonl = write(tmp_path / "g.jsonl", '{"question": "q", "answer": "a"}\n{"question": "q"}\n')
    with pytest.raises(DataError, match=r"g.jsonl:2: field 'answer' is missing or empty"):
        read_dataset("gsm8k", str(bad_jsonl))
    torn = write(tmp_path / "t.jsonl", '{"question": "q", "answer": "a"}\n{"question": \n')
    with pytest.raises(DataError, match=r"t.jsonl:2: not valid JSON"):
        read_dataset("gsm8k", str(torn))
    tsv = write(tmp_path / "x.tsv", "only one field\n")
    with pytest.raises(DataError, match=r"x.tsv:1: expected 2 tab-separated fields"):
        read_dataset("triviaqa", str(tsv))
    with pytest.raises(DataError, match="data file not found"):
        read_dataset("gsm8k", str(tmp_path / "missing.jsonl"))
    with pytest.raises(ConfigError, match="entityquestions.*needs `path:`"):
        load_examples("entityquestions", 2, 0)


def test_hub_path_through_datasets_on_hub_shaped_local_files(tmp_path, monkeypatch):
    """The hub loaders run `datasets.load_dataset(id, config, split=...)`; here it reads
    local files shaped like each hub set, so everything after the download is exercised."""
    import datasets

    real = datasets.load_dataset
    hub_files = {
        ("akariasai/PopQA", None): [{"id": i, "subj": "s", "prop": "p", "obj": f"O{i}",
                                      "question": f"Q{i}?", "possible_answers":
                                      json.dumps([f"O{i}", "alias"]), "s_pop": 1}
                                     for i in range(8)],  # fmt: skip
        ("mandarjoshi/trivia_qa", "rc.nocontext"): [
            {"question": "TQ?", "question_id": "t1", "question_source": "x",
             "answer": {"value": "Canon", "aliases": ["Alias", "Canon"], "normalized_value":
                        "canon", "normalized_aliases": ["alias", "canon"]}}],  # fmt: skip
        ("Stanford/web_questions", None): [{"url": "u", "question": "wq?", "answers": ["A1"]}],
        ("openai/gsm8k", "main"): [{"question": "g?", "answer": "#### 1"}],
        ("EleutherAI/hendrycks_math", "algebra"): [{"problem": "p?", "level": "Level 1",
                                                    "type": "Algebra", "solution": "s"}],
        ("EleutherAI/hendrycks_math", "geometry"): [{"problem": "g?", "level": "Level 2",
                                                     "type": "Geometry", "solution": "t"}],
        ("stingning/ultrachat", None): [{"id": "1", "data": ["u1", "a1", "u2", "a2", "u3"]}],
        ("codeparrot/apps", "all"): [{"problem_id": 1, "question": "q", "solutions":
                                      json.dumps(["s"]), "input_output": "", "difficulty":
                                      "interview", "url": "", "starter_code": "def f():"}],
        ("facebook/lama", "trex"): [{"uuid": "1", "obj_label": "Paris", "sub_label": "Zed",
                                     "predicate_id": "P20", "template": "[X] died in [Y] ."}],
    }  # fmt: skip
    calls = []

    def fake_load_dataset(name, config=None, split=None, **kwargs):
        calls.append((name, config, split))
        path = tmp_path / f"{name.replace('/', '_')}-{config}.jsonl"
        write(path, hub_files[(name, config)])
        return real("json", data_files=str(path), split="train")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    popqa = load_examples("popqa", 3, 0)
    assert all(e.prompt.endswith("?" + ANSWER_SUFFIX) for e in popqa)
    assert {e.response for e in popqa} <= {f"O{i}" for i in range(8)}
    assert load_examples("triviaqa", None, 0)[0].response == "Canon"  # the canonical value
    assert load_examples("webquestions", None, 0)[0].response == "A1"
    assert load_examples("gsm8k", None, 0)[0].response == "#### 1"
    subjects = {"subjects": ["algebra", "geometry"]}
    assert {e.response for e in load_examples("math", None, 0, options=subjects)} == {"s", "t"}
    chat = load_examples("ultrachat", None, 0)[0]
    assert (chat.prompt, chat.response, chat.history) == ("u2", "a2", (("u1", "a1"),))
    assert load_examples("apps", None, 0)[0].prompt == "q\n\ndef f():"
    assert load_examples("lama", None, 0)[0].prompt == "Where did Zed die?"
    assert ("akariasai/PopQA", None, "test") in calls
    assert ("mandarjoshi/trivia_qa", "rc.nocontext", "train") in calls

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"cannot load openai/gsm8k/main \[train\].*`path:`"):
        load_examples("gsm8k", None, 0)


def test_id_variant_is_disjoint_and_seeded(upstream):
    path = str(upstream["popqa"])
    a = load_examples("popqa", 5, 0, path)
    b = load_examples("popqa_id", 5, 0, path)
    assert not {e.prompt for e in a} & {e.prompt for e in b}
    assert a == load_examples("popqa", 5, 0, path)
    assert a != load_examples("popqa", 5, 1, path)
    with pytest.raises(ConfigError, match="half of the set"):
        load_examples("popqa", 6, 0, path)


def test_familiarity_filter_keeps_the_asked_kind_and_judges_lazily(upstream):
    path = str(upstream["popqa"])
    judged: list[str] = []

    def judge(examples: list[Example]) -> list[bool]:
        judged.extend(e.prompt for e in examples)
        return [int(e.response.split()[-1]) % 2 == 0 for e in examples]  # even makers known

    known = filtered_examples("popqa", 2, 0, path, None, True, judge)
    unknown = filtered_examples("popqa", 2, 0, path, None, False, judge)
    assert all(int(e.response.split()[-1]) % 2 == 0 for e in known)
    assert all(int(e.response.split()[-1]) % 2 == 1 for e in unknown)
    assert all(e.meta["familiar"] is False for e in unknown)
    with pytest.raises(ConfigError, match="`familiar` applies to factoid QA sets only"):
        filtered_examples("gsm8k", 1, 0, str(upstream["gsm8k"]), None, False, judge)
    big = write(Path(path).with_name("big.json"), popqa_rows(200))
    judged.clear()
    filtered_examples("popqa", 2, 0, str(big), None, False, judge)
    assert len(judged) == 64  # one chunk held enough unknown facts; the rest was never asked


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data (real upstream samples) absent")
def test_real_upstream_samples_load():
    files = {
        "popqa": SHARED / "popqa" / "popqa_2000.json",
        "triviaqa": SHARED / "triviaqa" / "topics.dpr.trivia.dev.txt",
        "webquestions": SHARED / "webquestions",
        "entityquestions": SHARED / "entityquestions" / "dev",
        "lama": SHARED / "lama" / "trex_lms_vocab",
        "gsm8k": SHARED / "gsm8k" / "train.jsonl",
        "math": SHARED / "math" / "test.jsonl",
        "evolcode": SHARED / "evolcode" / "evol-codealpaca-2k-1.json",
    }
    counts = {}
    for name, path in files.items():
        examples = read_dataset(name, str(path))
        counts[name] = len(examples)
        assert all(e.prompt.strip() and e.response.strip() for e in examples[:500]), name
    assert counts["popqa"] == 2000 and counts["gsm8k"] == 7473 and counts["math"] == 5000
    assert counts["triviaqa"] == 8837 and counts["lama"] == 29411
    assert counts["entityquestions"] == 22068


def test_familiarity_judge_caches_each_fact_and_survives_a_torn_line(tiny, tmp_path, monkeypatch):
    import factmem.familiarity as familiarity
    from factmem.familiarity import DEMONSTRATIONS, FamiliarityJudge, few_shot_example

    model, tokenizer = tiny
    facts = [Example(f"Who made widget {i}?" + ANSWER_SUFFIX, f"Maker {i}",
                     meta={"aliases": [f"Maker {i}", f"M{i}"]}) for i in range(4)]  # fmt: skip
    asked = few_shot_example(facts[0], 2)
    assert asked.history == tuple((q + ANSWER_SUFFIX, a) for q, a in DEMONSTRATIONS[:2])
    assert asked.answers == ("Maker 0", "M0")  # any alias counts as knowing the fact
    judge = FamiliarityJudge(model, tokenizer, "tiny", shots=2, max_new_tokens=4,
                             cache_root=tmp_path)  # fmt: skip
    verdicts = judge(facts)
    assert verdicts == [False] * 4  # a random tiny model knows nothing
    assert len(judge.cache_file.read_text().splitlines()) == 4
    with judge.cache_file.open("a") as handle:
        handle.write('{"key": "torn')
    monkeypatch.setattr(familiarity, "exact_match", lambda *a, **k: pytest.fail("not cached"))
    again = FamiliarityJudge(model, tokenizer, "tiny", shots=2, max_new_tokens=4,
                             cache_root=tmp_path)  # fmt: skip
    assert again(facts) == verdicts
    other = FamiliarityJudge(model, tokenizer, "tiny", shots=3, max_new_tokens=4,
                             cache_root=tmp_path)  # fmt: skip
    assert other.cache_file != judge.cache_file  # other settings, other verdicts
