"""The chat template and response-only labels: what the model is trained on, exactly."""

from factmem.data.example import (
    IGNORE_INDEX,
    Example,
    encode_example,
    encode_prompt,
    encode_response,
    format_example,
    format_prompt,
)


def test_template_is_tulu_v2_exactly():
    example = Example("The value of key abc is?", "xyz")
    assert format_prompt(example.prompt) == "<|user|>\nThe value of key abc is?\n<|assistant|>\n"
    assert format_example(example, "<|im_end|>") == (
        "<|user|>\nThe value of key abc is?\n<|assistant|>\nxyz<|im_end|>"
    )


def test_labels_mask_the_prompt_and_keep_response_and_eos(tiny):
    _, tokenizer = tiny
    example = Example("The value of key abc is?", "xyz")
    encoded = encode_example(tokenizer, example)
    prompt_ids = encode_prompt(tokenizer, example.prompt)
    response_ids = encode_response(tokenizer, example.response)
    assert encoded["input_ids"] == prompt_ids + response_ids
    assert encoded["labels"][: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert encoded["labels"][len(prompt_ids) :] == response_ids
    assert response_ids[-1] == tokenizer.eos_token_id
    text = tokenizer.decode(encoded["input_ids"])
    assert text == format_example(example, tokenizer.eos_token)


def test_no_bos_is_prepended_when_the_tokenizer_has_none(tiny):
    _, tokenizer = tiny
    ids = encode_prompt(tokenizer, "hi")
    assert tokenizer.decode(ids[:1]) == "<|"


def test_multi_turn_trains_every_assistant_turn_and_nothing_else(tiny):
    _, tokenizer = tiny
    example = Example("q2", "a two", history=(("q1", "a one"),))
    assert format_example(example, "<E>") == (
        "<|user|>\nq1\n<|assistant|>\na one<E>\n<|user|>\nq2\n<|assistant|>\na two<E>"
    )
    encoded = encode_example(tokenizer, example)
    assert tokenizer.decode(encoded["input_ids"]) == format_example(example, tokenizer.eos_token)
    trained = [
        t for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True) if label != -100
    ]
    eos = tokenizer.eos_token_id
    assert trained == encode_response(tokenizer, "a one") + encode_response(tokenizer, "a two")
    assert trained.count(eos) == 2
    prompt = encode_prompt(tokenizer, "q2", example.history)
    assert encoded["input_ids"][: len(prompt)] == prompt  # generation sees the same prefix
