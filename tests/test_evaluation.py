"""Exact match: the fast path must give exactly the verdicts of greedy `model.generate`."""

import dataclasses

import pytest
import torch

from factmem.data.example import encode_prompt
from factmem.evaluation import (
    decode,
    exact_match,
    generation,
    greedy_generate,
    is_correct,
    mean_response_loss,
    shared_prefix_length,
    verdict_is_final,
)
from factmem.familiarity import few_shot_example


def test_is_correct_follows_the_paper():
    assert is_correct("  Paris \n", ["paris"])
    assert not is_correct("Paris, France", ["paris"])
    assert is_correct("It is Paris, France", ["paris"], mode="contains")
    assert is_correct("x", ["nope", "X"])


@pytest.mark.parametrize(
    "partial, gold, mode, final",
    [
        ("", "abc", "equal", False),
        ("  ", "abc", "equal", False),
        (" AB", "abc", "equal", False),  # still a prefix after strip + lower
        ("abd", "abc", "equal", True),  # diverged: can never equal
        ("abc", "abc", "equal", False),  # may still end here, or go on
        ("abc  \n", "abc", "equal", False),  # trailing whitespace is stripped
        ("abc d", "abc", "equal", True),
        ("ab\ufffd", "abz", "equal", False),  # unfinished UTF-8 char: undecided
        ("the ABC is", "abc", "contains", True),
        ("the AB", "abc", "contains", False),
    ],
)
def test_verdict_is_final(partial, gold, mode, final):
    assert verdict_is_final(partial, [gold], mode) is final


def _reference_verdicts(model, tokenizer, examples, max_new_tokens, mode="equal"):
    """Plain greedy generate, one example at a time, no padding, no early stop."""
    verdicts, outputs = [], []
    model.eval()
    for example in examples:
        ids = torch.tensor([encode_prompt(tokenizer, example.prompt)])
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        text = decode(tokenizer, out[0, ids.shape[1] :].tolist())
        outputs.append(text)
        verdicts.append(is_correct(text, example.gold_answers(), mode))
    return verdicts, outputs


def test_fast_path_verdicts_equal_generate_on_a_partly_right_model(partly_trained):
    model, tokenizer, examples = partly_trained
    # Upper-cased golds: the teacher-forced tokens differ, yet exact match (lower-cased) may
    # hold, so these must go through generation and still agree.
    right = [
        p.correct
        for p in exact_match(
            model, tokenizer, examples, max_new_tokens=12, fast_path=False, progress=False
        )
    ]
    upper = [
        dataclasses.replace(e, response=e.response.upper())
        for e, ok in zip(examples, right, strict=True)
        if ok and e.response != e.response.upper()
    ]
    assert upper, "need right answers with lower-case letters"
    cases = examples + upper
    reference, _ = _reference_verdicts(model, tokenizer, cases, max_new_tokens=12)
    fast = exact_match(
        model, tokenizer, cases, batch_size=5, max_new_tokens=12, fast_path=True, progress=False
    )
    slow = exact_match(
        model, tokenizer, cases, batch_size=5, max_new_tokens=12, fast_path=False, progress=False
    )
    assert [p.correct for p in fast] == reference
    assert [p.correct for p in slow] == reference
    assert 0 < sum(reference) < len(reference), "the model must be partly right, partly wrong"
    methods = {p.method for p in fast}
    assert methods == {"teacher_forced", "generated"}
    assert any(p.correct and p.method == "generated" for p in fast[len(examples) :])


def test_generation_stops_early_without_changing_outputs_that_matter(partly_trained):
    model, tokenizer, examples = partly_trained
    prompts = [e.prompt for e in examples]
    full = greedy_generate(model, tokenizer, prompts, max_new_tokens=12, progress=False)
    _, unbatched = _reference_verdicts(model, tokenizer, examples, max_new_tokens=12)
    assert full == unbatched  # left-padded batches decode the same text
    early = greedy_generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=12,
        answers=[e.gold_answers() for e in examples],
        progress=False,
    )
    for e, a, b in zip(examples, full, early, strict=True):
        assert a.startswith(b)
        assert is_correct(a, e.gold_answers()) == is_correct(b, e.gold_answers())


@pytest.mark.parametrize("rows, shared", [
    ([[1, 2, 3, 4], [1, 2, 3, 5]], 3),
    ([[1, 2, 3], [1, 2, 3, 4]], 2),  # every row keeps a token of its own
    ([[7, 2], [1, 2]], 0),
    ([[1, 2, 3]], 2),
    ([], 0),
])  # fmt: skip
def test_shared_prefix_length(rows, shared):
    assert shared_prefix_length(rows) == shared


def test_a_shared_few_shot_prefix_encoded_once_gives_the_same_outputs(partly_trained,
                                                                      monkeypatch):  # fmt: skip
    """The familiarity filter's prompts share their demonstrations: encoded once, copied into
    each batch, and every output still equals plain one-at-a-time greedy generation."""
    model, tokenizer, examples = partly_trained
    asked = [few_shot_example(dataclasses.replace(e, prompt=e.prompt + " x" * (i % 3)), 3)
             for i, e in enumerate(examples)]  # own parts of 3 lengths: left padding  # fmt: skip
    model.eval()
    reference = []
    for example in asked:
        ids = torch.tensor([encode_prompt(tokenizer, example.prompt, example.history)])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=8, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        reference.append(decode(tokenizer, out[0, ids.shape[1] :].tolist()))
    encoded = [encode_prompt(tokenizer, e.prompt, e.history) for e in asked]
    assert shared_prefix_length(encoded) > 16  # the demonstrations are shared
    assert len({len(row) for row in encoded}) > 1  # own parts differ in length: left padding
    calls = []
    encode_once = generation._prefix_cache
    monkeypatch.setattr(generation, "_prefix_cache",
                        lambda *a: calls.append(a) or encode_once(*a))  # fmt: skip
    for share in (True, False):
        outputs = greedy_generate(model, tokenizer, asked, max_new_tokens=8, batch_size=5,
                                  share_prefix=share, progress=False)  # fmt: skip
        assert outputs == reference, f"share_prefix={share}"
    assert len(calls) == 1  # once for all 5 batches, and only when sharing


def test_a_cut_output_is_marked_and_an_uncut_one_is_the_whole_output(partly_trained):
    model, tokenizer, examples = partly_trained
    _, full = _reference_verdicts(model, tokenizer, examples, max_new_tokens=12)
    scored = exact_match(model, tokenizer, examples, max_new_tokens=12, fast_path=False,
                         progress=False)  # fmt: skip
    assert any(p.output_cut for p in scored), "the model must get some answers wrong"
    for p, whole in zip(scored, full, strict=True):
        if p.output_cut:
            assert not p.correct and whole.startswith(p.output)
        else:
            assert p.output == whole


def test_an_answer_longer_than_the_cap_is_not_certified(partly_trained):
    model, tokenizer, examples = partly_trained
    for cap in (1, 2):
        reference, _ = _reference_verdicts(model, tokenizer, examples, max_new_tokens=cap)
        fast = exact_match(model, tokenizer, examples, max_new_tokens=cap, fast_path=True,
                           progress=False)  # fmt: skip
        assert [p.correct for p in fast] == reference
    uncapped = exact_match(model, tokenizer, examples, max_new_tokens=12, fast_path=True,
                           progress=False)  # fmt: skip
    assert any(p.method == "teacher_forced" for p in uncapped)  # so the cap is what stopped it


def test_the_fast_path_is_refused_under_bf16(partly_trained):
    model, tokenizer, examples = partly_trained
    with pytest.raises(ValueError, match="fp32"):
        exact_match(model, tokenizer, examples, fast_path=True, bf16=True, progress=False)


def test_contains_mode_agrees_with_generate(partly_trained):
    model, tokenizer, examples = partly_trained
    cases = [dataclasses.replace(e, answers=(e.response[:2],)) for e in examples]
    reference, _ = _reference_verdicts(model, tokenizer, cases, 12, mode="contains")
    fast = exact_match(
        model, tokenizer, cases, mode="contains", max_new_tokens=12, fast_path=True, progress=False
    )
    assert [p.correct for p in fast] == reference


def test_mean_response_loss_matches_the_models_own_loss(partly_trained):
    model, tokenizer, examples = partly_trained
    from factmem.data.example import encode_example

    enc = encode_example(tokenizer, examples[0])
    model.eval()
    with torch.no_grad():
        expected = model(
            input_ids=torch.tensor([enc["input_ids"]]), labels=torch.tensor([enc["labels"]])
        ).loss.item()
    assert mean_response_loss(model, tokenizer, examples[:1]) == pytest.approx(expected, rel=1e-5)


def test_auto_uses_teacher_forcing_only_for_long_answers(tiny):
    from factmem.data.example import Example
    from factmem.evaluation import teacher_forcing_pays

    _, tokenizer = tiny
    assert not teacher_forcing_pays(tokenizer, [Example("q", "abc")])
    assert teacher_forcing_pays(tokenizer, [Example("q", "the of and to in a " * 10)])


@pytest.mark.parametrize("fast_path", [False, True])
def test_exact_match_reaches_answers_a_stop_rule_as_full_scoring_does(partly_trained,
                                                                     monkeypatch, fast_path):
    """Every threshold gets the answer `accuracy >= threshold` of scoring every fact, from
    the same verdicts; a bound when it is settled early, and fewer generate calls then."""
    from factmem.evaluation import exact_match_reaches

    model, tokenizer, examples = partly_trained
    full = exact_match(model, tokenizer, examples, batch_size=4, max_new_tokens=12,
                       fast_path=fast_path, progress=False)  # fmt: skip
    accuracy = sum(p.correct for p in full) / len(full)
    assert 0 < accuracy < 1
    calls = []
    generate = type(model).generate

    def counted(self, *args, **kwargs):
        calls.append(1)
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "generate", counted)
    thresholds = sorted({0.05, accuracy - 0.05, accuracy, accuracy + 0.05, 0.95, 1.0})
    for threshold in thresholds:
        calls.clear()
        value, kind = exact_match_reaches(model, tokenizer, examples, threshold, batch_size=4,
                                          max_new_tokens=12, fast_path=fast_path)  # fmt: skip
        assert (value >= threshold) == (accuracy >= threshold - 1e-12), (threshold, value, kind)
        if kind == "exact":
            assert value == accuracy
        elif kind == "at_least":
            assert threshold <= value <= accuracy
        else:
            assert accuracy <= value < threshold
        if threshold in (0.05, 1.0):  # settled after a batch or two, not six
            assert kind != "exact" and len(calls) < 6, (threshold, len(calls))
