"""Fact scores beside exact match (src/factmem/fact_scores.py): kept / hidden / lost."""

import json
from dataclasses import replace

import pytest
import torch

from factmem.archive import archive_runs
from factmem.config import load_config
from factmem.data.example import encode_prompt, encode_response
from factmem.evaluation import answer_logits, exact_match, normalize
from factmem.evaluation.generation import greedy_generate_with_stops
from factmem.fact_scores import LENS_TOP_K, score_facts
from factmem.lens import lens_hits
from factmem.pipeline import run_experiment
from factmem.records import FACT_SCORE_FIELDS, fact_status
from factmem.report import collect_runs, status_table
from factmem.testing import tiny_config_data


@pytest.mark.parametrize("row, status", [
    ({"correct": True, "contains": True, "first_token_rank": 1}, "kept"),
    ({"correct": False, "contains": True, "first_token_rank": 7}, "hidden"),
    ({"correct": False, "contains": False, "first_token_rank": 1}, "hidden"),
    ({"correct": False, "contains": False, "first_token_rank": 2}, "lost"),
    ({"correct": True}, "kept"),  # scored before fact scores: exact match still says kept
    ({"correct": False}, None),  # ... but cannot tell hidden from lost
])  # fmt: skip
def test_the_status_rule(row, status):
    assert fact_status(row) == status


def test_fact_scores_agree_with_the_model(partly_trained):
    model, tokenizer, examples = partly_trained
    predictions = exact_match(model, tokenizer, examples, max_new_tokens=8, progress=False)
    assert 0 < sum(p.correct for p in predictions) < len(examples)  # some right, some wrong
    score_facts(model, tokenizer, examples, predictions, batch_size=7)  # batches split
    layers = model.config.num_hidden_layers
    model.eval()
    for example, p in zip(examples, predictions, strict=True):
        if p.correct:  # greedy decoding led with the gold's first token, and said it all
            assert p.first_token_rank == 1 and p.contains
            assert p.lens_first_layer is not None  # the last layer's top-1 is in its top-10
        assert 1 <= p.first_token_rank <= len(tokenizer)
        assert p.lens_first_layer is None or 1 <= p.lens_first_layer <= layers
        # the mean log-prob, computed here independently on the unpadded sequence
        prompt, gold = encode_prompt(tokenizer, example.prompt), encode_response(
            tokenizer, example.response)
        with torch.no_grad():
            logits = model(torch.tensor([prompt + gold])).logits[0, len(prompt) - 1 : -1]
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(gold)[:, None]).mean()
        assert p.gold_logprob == pytest.approx(expected.item(), abs=1e-3)
        row = p.to_json()
        assert set(FACT_SCORE_FIELDS) <= set(row) and fact_status(row) in ("kept", "hidden",
                                                                          "lost")  # fmt: skip


def test_contains_reads_the_whole_output_not_the_cut_one(partly_trained):
    """Exact match stops a wrong answer at its first wrong token; `contains` must still see
    a gold the model says later in its output (the hidden facts of generic mixing)."""
    model, tokenizer, examples = partly_trained
    whole = greedy_generate_with_stops(model, tokenizer, examples, max_new_tokens=8,
                                       progress=False)  # fmt: skip
    said = [(e, out.strip()) for e, (out, _) in zip(examples, whole, strict=True)]
    # the gold is the model's own output less its first character: said, but not first
    asked = [replace(e, response=out[1:], answers=()) for e, out in said if len(out) >= 3]
    predictions = exact_match(model, tokenizer, asked, max_new_tokens=8, progress=False,
                              fast_path=False)  # fmt: skip
    assert len(asked) > 3 and all(p.output_cut and not p.correct for p in predictions)
    score_facts(model, tokenizer, asked, predictions, batch_size=5, max_new_tokens=8)
    assert all(p.contains for p in predictions)
    for p in predictions:  # the record holds the output that says it, not the cut "x"
        assert not p.correct and normalize(p.gold) in normalize(p.output)


def test_one_pass_gives_what_two_passes_gave(partly_trained):
    """The lens rides on the teacher-forced pass: its layers and ranks equal those of the
    prompts run on their own (lens_hits) and of answer_logits, as before the merge."""
    model, tokenizer, examples = partly_trained
    predictions = exact_match(model, tokenizer, examples, max_new_tokens=8, progress=False)
    score_facts(model, tokenizer, examples, predictions, batch_size=5)
    layers = lens_hits(model, tokenizer, examples, top_k=LENS_TOP_K,
                       batch_size=7).first_layers()  # fmt: skip
    assert [p.lens_first_layer for p in predictions] == layers
    assert len(set(layers)) > 1  # not all found at one layer: the comparison has content
    ranks = {}
    for i, logits, gold in answer_logits(model, tokenizer, examples, 7, False):
        ranks[i] = int((logits[0] > logits[0, gold[0]]).sum()) + 1
    assert [p.first_token_rank for p in predictions] == [ranks[i] for i in range(len(examples))]


@pytest.mark.parametrize("on", [True, False])
def test_a_run_records_fact_scores_and_the_archive_and_report_keep_them(tiny_model_dir, tmp_path,
                                                                        on):  # fmt: skip
    data = tiny_config_data(tiny_model_dir, tmp_path / "runs")
    data["evaluation"]["fact_scores"] = on
    run_experiment(load_config(data), progress=False)
    rows = [json.loads(line) for line in
            (tmp_path / "runs" / "tiny" / "stage2" / "predictions" / "stage1.jsonl")
            .read_text().splitlines()]  # fmt: skip
    assert len(rows) == 8
    assert all((set(FACT_SCORE_FIELDS) <= set(row)) is on for row in rows)
    archive_runs([tmp_path / "runs"], tmp_path / "archive")
    archived = [json.loads(line) for line in
                next((tmp_path / "archive").rglob("stage2/predictions/stage1.jsonl"))
                .read_text().splitlines()]  # fmt: skip
    assert all("output" not in row and (set(FACT_SCORE_FIELDS) <= set(row)) is on
               for row in archived)  # fmt: skip
    table = status_table(collect_runs(tmp_path / "archive"))
    if not on:
        assert table.empty
        return
    counts = {s: int(table.iloc[0][s].split()[0]) for s in ("kept", "hidden", "lost")}
    assert sum(counts.values()) == 8
    assert counts == {s: sum(fact_status(r) == s for r in rows) for s in counts}


def test_an_answer_that_takes_another_path_keeps_its_cut_output(monkeypatch, caplog):
    """Generated on in another batch, greedy decoding may split a near-tie the other way:
    the record then keeps the output that gave the verdict, and says how many did."""
    import factmem.fact_scores as fact_scores
    from factmem.data.example import Example
    from factmem.records import Prediction

    examples = [Example("q1", "Seoul"), Example("q2", "Paris")]
    predictions = [Prediction("q1", "Seoul", ["Seoul"], "in", False, "generated", True),
                   Prediction("q2", "Paris", ["Paris"], "the", False, "generated", True)]
    monkeypatch.setattr(fact_scores, "greedy_generate_with_stops", lambda *a, **k: [
        ("in the minds of many, Seoul", True), ("a city called Paris", True)])
    with caplog.at_level("WARNING"):
        fact_scores._finish_cut_outputs(None, None, examples, predictions, batch_size=2,
                                        bf16=False, max_new_tokens=8, progress=False)
    assert predictions[0].output == "in the minds of many, Seoul"
    assert predictions[1].output == "the" and predictions[1].output_cut  # kept as it was
    assert "1 of 2 answers took another path" in caplog.text
