"""The layouts people download (PopQA's TSV, MATH's folders, LAMA's Google-RE, the
EntityQuestions release), TriviaQA from DPR's TSV, and files that are broken in one place.

Every fixture is written here, in each upstream schema, with rows made up for the test.
"""

import codecs
import csv
import io
import json
import logging
from pathlib import Path

import pytest
import yaml
from test_datasets import write

from factmem.cli import main
from factmem.data.qa import ANSWER_SUFFIX
from factmem.data.registry import load_examples, read_dataset
from factmem.data.triviaqa import answer_from_aliases, unquote_question
from factmem.errors import DataError
from factmem.testing import tiny_config_data


def tsv(rows: list[list[str]]) -> str:
    """Rows quoted as the csv module, pandas and DPR's files quote them."""
    out = io.StringIO()
    csv.writer(out, delimiter="\t", lineterminator="\n").writerows(rows)
    return out.getvalue()


# ------------------------------------------------------------------ TriviaQA (item 1)

KETTLEBY = ["Kettleby Manor Estate", "Kettleby", "Kettleby, Northshire", "City of Kettleby",
            "Economy of Kettleby"]  # fmt: skip
PLACEHOLDER = ["Jonathan Q. Placeholder", "JON PLACEHOLDER", "Placeholder, Jon",
               "Jon Placeholder", "Jon Placeholder (disambiguation)"]  # fmt: skip


def dpr_tsv(tmp_path: Path) -> Path:
    """DPR's layout: question<TAB>Python list, CSV-quoted where a cell holds a quote, and a
    question that carries a second quoting layer from TriviaQA's sources; a BOM first."""
    rows = [
        ["Which town is the fictional seat of Northshire?", repr(KETTLEBY)],
        ["Which spring gives the village of Elmby its name?",
         repr(["Brightwater (disambiguation)", "Brightwater", "Bright water"])],
        ['"Who said ""make it so"" in the 1991 play?"', repr(PLACEHOLDER)],
        ['"Clover" was the name of whose pony?',
         repr(["\U0001f434", "Ray Rider", "Raymond Rider", "Ray Rider (actor)"])],
        ["Which ship sailed in the tale?", repr(['The "Tall" Ship', "Tall Ship"])],
    ]  # fmt: skip
    return write(tmp_path / "trivia.dev.txt", codecs.BOM_UTF8 + tsv(rows).encode("utf-8"))


def test_triviaqa_tsv_is_read_as_csv_and_trains_the_quiz_answer(tmp_path):
    examples = read_dataset("triviaqa", str(dpr_tsv(tmp_path)))
    got = [(e.prompt.removesuffix(ANSWER_SUFFIX), e.response) for e in examples]
    assert got == [
        ("Which town is the fictional seat of Northshire?", "Kettleby"),  # the shared name
        ("Which spring gives the village of Elmby its name?", "Brightwater"),  # no qualifier
        ('Who said "make it so" in the 1991 play?', "Jon Placeholder"),  # the quiz's, tidied
        ('"Clover" was the name of whose pony?', "Ray Rider"),  # not the emoji
        ("Which ship sailed in the tale?", "Tall Ship"),
    ]  # the BOM is gone from the first prompt; no question keeps CSV quotes
    assert examples[4].meta["aliases"] == ['The "Tall" Ship', "Tall Ship"]


def test_triviaqa_hub_and_dpr_rows_give_the_same_fact(tmp_path):
    """The hub trains `answer.value`; DPR's list (which includes it) gives the same."""
    hub_row = {"question": '"Who said ""make it so"" in the 1991 play?"',
               "answer": {"value": "JON PLACEHOLDER", "aliases": PLACEHOLDER}}  # fmt: skip
    from factmem.data.qa import triviaqa_example

    hub = triviaqa_example(hub_row, "hub row 0")
    local = read_dataset("triviaqa", str(dpr_tsv(tmp_path)))[2]
    assert (hub.prompt, hub.response) == (local.prompt, local.response)


def test_triviaqa_answer_rule_on_its_own():
    assert answer_from_aliases(["Marlow (disambiguation)", "Marlow", "Marlowe"]) == "Marlow"
    assert answer_from_aliases(["Ember (song)", "Ember (album)"]) == "Ember"  # cut titles
    assert answer_from_aliases(["Fish (and chips)"]) == "Fish (and chips)"  # one: the answer
    assert answer_from_aliases(["Felis exampla", "Sandcat", "SANDCAT", "Felis Exampla"],
                               "Felis exampla is the Latin name of which cat?") == "Sandcat"
    assert answer_from_aliases(["Doe, Jane", "Jane Doe"]) == "Jane Doe"
    assert unquote_question('"A ""b"" c"') == 'A "b" c'
    assert unquote_question('"Clover" was whose pony?') == '"Clover" was whose pony?'


# ------------------------------------------------------------------ official layouts (item 2)


def test_popqa_release_tsv_with_its_header(tmp_path):
    header = ["id", "subj", "prop", "obj", "s_pop", "o_pop", "question", "possible_answers"]
    rows = [[str(i), f"Widget {i}", "maker", f"Maker {i}", "3", "5", f"Who made widget {i}?",
             json.dumps([f"Maker {i}", f'"M{i}"'])] for i in range(4)]  # fmt: skip
    path = write(tmp_path / "popQA.tsv", tsv([header, *rows]))
    examples = read_dataset("popqa", str(path))
    assert [(e.prompt, e.response) for e in examples][0] == ("Who made widget 0?" + ANSWER_SUFFIX,
                                                             "Maker 0")  # fmt: skip
    assert examples[1].meta["aliases"] == ["Maker 1", '"M1"']
    headless = write(tmp_path / "nohead.tsv", tsv(rows))
    with pytest.raises(DataError, match="needs a first row naming its columns"):
        read_dataset("popqa", str(headless))


def test_math_folders_of_one_problem_per_file(tmp_path):
    root = tmp_path / "MATH"
    for split, subject, n in [("train", "algebra", 1), ("test", "algebra", 7),
                              ("test", "geometry", 12)]:  # fmt: skip
        write(root / split / subject / f"{n}.json", {"problem": f"{split} problem {n}?",
              "level": "Level 2", "type": subject.title(), "solution": f"$\\boxed{{{n}}}$"})
    write(root / "test" / "geometry" / ".hidden.json", "not JSON")  # editor litter: ignored
    assert [e.prompt for e in read_dataset("math", str(root))] == ["train problem 1?"]
    tests = read_dataset("math", str(root), {"split": "test"})
    assert [e.response for e in tests] == ["$\\boxed{7}$", "$\\boxed{12}$"]
    assert len(read_dataset("math", str(root / "test"))) == 2
    with pytest.raises(DataError, match=r"holds the split folders train, test.*split: NAME"):
        read_dataset("math", str(root), {"split": "dev"})


def google_re_row(sub: str, obj: str, pred: str, votes: list[str]) -> dict:
    return {"pred": f"/people/person/{pred}", "sub": "/m/0x", "obj": "/m/0y", "sub_label": sub,
            "obj_label": obj, "sub_w": None, "obj_w": None, "sub_aliases": [], "obj_aliases": [],
            "uuid": f"{sub}-{pred}", "evidences": [{"url": "u", "considered_sentences": ["s"]}],
            "judgments": [{"rater": str(i), "judgment": v} for i, v in enumerate(votes)],
            "masked_sentences": [f"{sub} was born in [MASK] ."]}  # fmt: skip


def test_lama_google_re_files(tmp_path):
    folder = tmp_path / "Google_RE"
    write(folder / "place_of_birth_test.jsonl", [
        google_re_row("Ann Example", "Rome", "place_of_birth", ["yes", "yes", "no"]),
        google_re_row("Bob Example", "Oslo", "place_of_birth", ["no", "no", "yes"]),  # false
    ])  # fmt: skip
    write(folder / "date_of_birth_test.jsonl",
          [google_re_row("Cy Example", "1901", "date_of_birth", ["yes"])])
    examples = read_dataset("lama", str(folder))
    got = [(e.prompt, e.response, e.meta["relation"]) for e in examples]
    assert got == [("In what year was Cy Example born?", "1901", "date_of_birth"),
                   ("Where was Ann Example born?", "Rome", "place_of_birth")]  # fmt: skip
    cloze = read_dataset("lama", str(folder), {"form": "cloze", "relations": ["place_of_birth"]})
    assert [e.prompt for e in cloze] == ["Ann Example was born in"]


def test_entityquestions_release_dataset_folder(tmp_path):
    root = tmp_path / "dataset"
    for split in ("train", "dev", "test"):
        for rel in ("P17", "P19"):
            write(root / split / f"{rel}.{split}.json",
                  [{"question": f"{split} {rel} question?", "answers": [f"{split} {rel}"]}])
    write(root / "one-off" / "no-overlap" / "P19" / "P19_no_overlap.train.json",
          [{"question": "not a split of the set", "answers": ["x"]}])
    assert [e.prompt for e in read_dataset("entityquestions", str(root))] == [
        "train P17 question?", "train P19 question?"]  # fmt: skip
    dev = read_dataset("entityquestions", str(root), {"split": "dev"})
    assert [e.response for e in dev] == ["dev P17", "dev P19"]
    only_eval = tmp_path / "eval_only"
    for split in ("dev", "test"):
        write(only_eval / split / f"P17.{split}.json", [{"question": "q?", "answers": ["a"]}])
    with pytest.raises(DataError, match=r"holds the split folders dev, test; pick one"):
        read_dataset("entityquestions", str(only_eval))


def test_a_wrong_layout_names_the_layouts_that_are_read(tmp_path):
    path = write(tmp_path / "p.json", [{"q": "Who?", "a": ["Me"]}])
    with pytest.raises(DataError, match=r"field 'input' is missing.*popqa reads the "
                       r"release's popQA.tsv"):  # fmt: skip
        read_dataset("popqa", str(path))


# ------------------------------------------------------------------ broken files (items 3, 4)


def relation_folder(tmp_path: Path) -> Path:
    """24 relation files of EntityQuestions; one byte in one line of one file is not UTF-8."""
    folder = tmp_path / "eq"
    for i in range(24):
        write(folder / f"P{100 + i}.dev.json", [{"question": f"Q{i}-{j}?", "answers": [f"A{j}"]}
                                                for j in range(3)])  # fmt: skip
    rows = [{"question": "Qx-0?", "answers": ["A0"]}, {"question": "Qx-1?", "answers": ["A1"]}]
    text = "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n"
    write(folder / "P117.dev.json", text.encode("utf-8").replace(b"Qx-1", b"Q\xe9x-1"))
    return folder


def test_a_byte_that_is_not_utf8_is_one_line_naming_file_and_line(tmp_path, caplog):
    folder = relation_folder(tmp_path)
    with pytest.raises(DataError) as err:
        read_dataset("entityquestions", str(folder))
    message = str(err.value)
    assert "\n" not in message and "P117.dev.json:3: not UTF-8 text (byte 0xe9" in message
    assert "skip_bad_rows" in message
    with caplog.at_level(logging.WARNING):
        kept = read_dataset("entityquestions", str(folder), {"skip_bad_rows": True})
    assert len(kept) == 23 * 3 + 1  # only the row with the byte is left out
    assert "entityquestions: skipped 1 bad rows (skip_bad_rows)" in caplog.text
    jsonl = write(tmp_path / "g.jsonl", b'{"question": "q", "answer": "a"}\n{"question": "\xff"}\n')
    with pytest.raises(DataError, match=r"g.jsonl:2: not UTF-8 text \(byte 0xff at column 15\)"):
        read_dataset("gsm8k", str(jsonl))


def test_skip_bad_rows_skips_malformed_lines_too_and_counts_them(tmp_path, caplog):
    gsm = write(tmp_path / "gsm.jsonl", '{"question": "q1", "answer": "a1"}\n{"question": \n'
                '{"question": "q3"}\n[1, 2]\n{"question": "q5", "answer": "a5"}\n')  # fmt: skip
    for line, what in [(2, "not valid JSON"), (3, "field 'answer' is missing")]:
        broken = write(tmp_path / f"only{line}.jsonl", "".join(
            gsm.read_text().splitlines(keepends=True)[i] for i in (0, line - 1)))
        with pytest.raises(DataError, match=rf"{what}.*`options: {{skip_bad_rows: true}}`"):
            read_dataset("gsm8k", str(broken))
    with caplog.at_level(logging.WARNING):
        kept = read_dataset("gsm8k", str(gsm), {"skip_bad_rows": True})
    assert [e.response for e in kept] == ["a1", "a5"]
    assert "gsm8k: skipped 3 bad rows" in caplog.text
    trivia = write(tmp_path / "t.tsv", tsv([["Q1?", "['A1']"], ["Q2?", "['A2"], ["Q3 only"],
                                            ["Q4?", "['A4']"]]) + 'Q5?\t"[\'A5\']"x"\n')
    with pytest.raises(DataError, match=r"t.tsv:2: field 'answers' is not a readable list.*"
                       "skip_bad_rows"):  # fmt: skip
        read_dataset("triviaqa", str(trivia))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        kept = read_dataset("triviaqa", str(trivia), {"skip_bad_rows": True})
    assert [e.response for e in kept] == ["A1", "A4"]
    assert "triviaqa: skipped 3 bad rows" in caplog.text
    local = write(tmp_path / "facts.jsonl", '{"prompt": "P1", "response": "R1"}\n{"prompt"\n')
    with pytest.raises(DataError, match=r"facts.jsonl:2: not valid JSON.*skip_bad_rows"):
        load_examples("local", None, 0, str(local))
    assert len(load_examples("local", None, 0, str(local), {"skip_bad_rows": True})) == 1


# ------------------------------------------------------------------ CLI refusals (items 5, 6)


def test_grid_dry_run_checks_the_data_dir(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny_config_data("unused-model")))
    grid = {"name": "g", "base": str(tmp_path / "base.yaml"), "output_dir": str(tmp_path / "r"),
            "axes": {"D_B": {"facts": {"stages[1].dataset": "local", "stages[1].options": {},
                                       "stages[1].path": "{data_dir}/facts.jsonl"}},
                     "seed": [0, 1]}}  # fmt: skip
    path = write(tmp_path / "grid.yaml", yaml.safe_dump(grid))
    data = tmp_path / "data"
    assert main(["grid", str(path), "--data-dir", str(data), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert (f"facts_seed0: stages[1].path = {data}/facts.jsonl does not exist "
            "(and 1 more runs)") in err  # fmt: skip
    assert "docs/grids-and-reports.md" in err
    write(data / "facts.jsonl", [{"prompt": "P", "response": "R"}])
    assert main(["grid", str(path), "--data-dir", str(data), "--dry-run"]) == 0
    assert "facts_seed1: D_B=facts, seed=1" in capsys.readouterr().out


def test_filter_refuses_what_it_cannot_judge_in_one_line(capsys):
    for name, said in [("nosuch", "unknown dataset 'nosuch'"),
                       ("gsm8k", "dataset 'gsm8k' is not a factoid QA set")]:  # fmt: skip
        assert main(["filter", name]) == 2
        err = capsys.readouterr().err.strip()
        assert said in err and "\n" not in err and "Traceback" not in err
        assert err.endswith("popqa, popqa_id, triviaqa, triviaqa_id, lama, entityquestions, "
                            "webquestions")  # fmt: skip
