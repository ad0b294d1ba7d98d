"""Batch layouts: every layout gives the loss and gradients of the plain padded batch."""

import pytest
import torch
from transformers import DataCollatorForSeq2Seq

from factmem.batching import BatchCollator, make_collator, pack_rows
from factmem.data.example import IGNORE_INDEX, Example, encode_example
from factmem.data.factoid import key_value_recall


def _features(tokenizer):
    long = [Example("Complete the following partial passage: the of and to", "in a is " * 12)]
    examples = key_value_recall(5, 0) + long * 2 + key_value_recall(2, 0, key_length=20)
    return [encode_example(tokenizer, e) for e in examples]


def _loss_and_grad(model, batch):
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    grad = model.model.layers[0].self_attn.q_proj.weight.grad.clone()
    model.zero_grad()
    return loss.item(), grad


def test_pack_rows_respects_capacity_and_keeps_every_example():
    lengths = [5, 9, 3, 7, 7, 2, 10]
    rows = pack_rows(lengths, 12)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 12 for row in rows)
    assert len(rows) == 4  # 43 tokens need at least 4 rows of 12


@pytest.mark.parametrize("layout", ["padded", "packed", "one_row"])
@pytest.mark.parametrize("answer_columns", [False, True])
def test_every_layout_has_the_same_loss_and_gradients(tiny, layout, answer_columns):
    model, tokenizer = tiny
    model.train()  # dropout is 0; train mode is where the KV-cache trap of packing sits
    features = _features(tokenizer)
    plain = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    reference = _loss_and_grad(model, plain([dict(f) for f in features]))
    collator = BatchCollator(tokenizer, layout, row_tokens=160, answer_columns=answer_columns)
    batch = collator([dict(f) for f in features])
    assert ("logits_to_keep" in batch) is answer_columns
    if layout != "padded":
        assert batch["input_ids"].shape[0] < len(features)  # examples really share rows
    loss, grad = _loss_and_grad(model, batch)
    assert loss == pytest.approx(reference[0], rel=1e-5)
    assert torch.allclose(grad, reference[1], rtol=1e-4, atol=1e-7)


def test_packed_examples_do_not_see_each_other(tiny):
    model, tokenizer = tiny
    model.train()
    features = _features(tokenizer)
    batch = BatchCollator(tokenizer, "packed", row_tokens=160, answer_columns=False)(
        [dict(f) for f in features]
    )
    assert batch["input_ids"].shape[0] < len(features)
    with torch.no_grad():
        logits = model(**batch).logits
        alone = [model(input_ids=torch.tensor([f["input_ids"]])).logits[0] for f in features]
    # find each example in the rows by its token ids and compare its logits
    for f, expected in zip(features, alone, strict=True):
        ids = torch.tensor(f["input_ids"])
        found = False
        for r in range(batch["input_ids"].shape[0]):
            row = batch["input_ids"][r]
            for start in range(len(row) - len(ids) + 1):
                if (
                    torch.equal(row[start : start + len(ids)], ids)
                    and batch["position_ids"][r, start] == 0
                ):
                    assert torch.allclose(logits[r, start : start + len(ids)], expected, atol=1e-5)
                    found = True
                    break
            if found:
                break
        assert found


def test_auto_pads_equal_lengths_and_packs_mixed_lengths(tiny):
    model, tokenizer = tiny
    collator = make_collator(tokenizer, "auto", model, row_tokens=160)
    collator([encode_example(tokenizer, e) for e in key_value_recall(8, 0)])
    assert collator.last_layout == "padded"
    collator([dict(f) for f in _features(tokenizer)])
    assert collator.last_layout == "packed"


def test_pad_rows_pads_on_either_side_and_marks_the_real_entries():
    from factmem.batching import pad_rows

    ids, mask = pad_rows([[5, 6, 7], [8]], value=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_rows([[5, 6, 7], [8]], value=-100, left=True)
    assert ids.tolist() == [[5, 6, 7], [-100, -100, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == torch.long


def test_markdown_table_is_the_compact_pipe_form():
    from factmem.markdown import markdown_table

    assert markdown_table(["a", "b"], [[1, ""], ["x", 2.5]]) == (
        "| a | b |\n|---|---|\n| 1 |  |\n| x | 2.5 |"
    )
