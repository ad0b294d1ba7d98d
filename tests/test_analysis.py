"""Logit Lens and gradient alignment on tiny models, checked against independent computations."""

import json
import math

import pytest
import torch

from factmem.cli import main
from factmem.data.factoid import key_value_recall
from factmem.gradients import gradient_cosines, loss_gradient, parameter_group
from factmem.lens import LensResult, LogitLens, lens_hits, prompt_batch
from factmem.models import load_model, load_tokenizer
from factmem.testing import build_tiny_model


@pytest.fixture(scope="module")
def deep_tiny(tmp_path_factory):
    """A 4-layer tiny Llama whose final norm is not the identity (so norm mistakes show)."""
    folder = build_tiny_model(tmp_path_factory.mktemp("deep") / "model", layers=4, seed=1)
    tokenizer = load_tokenizer(str(folder))
    model = load_model(str(folder), tokenizer)
    with torch.no_grad():
        model.model.norm.weight.uniform_(0.5, 2.0)
    return model, tokenizer


def test_lens_matches_hidden_states_decoded_independently(deep_tiny):
    model, tokenizer = deep_tiny
    examples = key_value_recall(6, seed=2, key_length=3, value_length=2)
    ids, mask, positions, gold = prompt_batch(tokenizer, examples)
    lens = LogitLens.from_model(model)
    with torch.no_grad():
        by_hooks = lens.logits(lens.residuals(ids, mask, positions))
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    rows = torch.arange(len(examples))
    layers = model.config.num_hidden_layers
    # transformers' hidden_states[l] (l < L) is the raw residual after layer l; [L] is normed
    by_hand = [
        model.lm_head(model.model.norm(out.hidden_states[layer][rows, positions]))
        for layer in range(1, layers)
    ] + [out.logits[rows, positions]]
    assert torch.allclose(by_hooks, torch.stack(by_hand).float(), atol=1e-4)
    # decoding the already-normed last hidden state through the norm again is the known bug
    twice = model.lm_head(model.model.norm(out.hidden_states[layers][rows, positions]))
    assert not torch.allclose(twice, out.logits[rows, positions], atol=1e-3)
    hits = lens_hits(model, tokenizer, examples, top_k=10, batch_size=4)
    expected = (torch.stack(by_hand).topk(10, -1).indices == gold[None, :, None]).any(-1)
    assert hits.hits == expected.T.tolist()


def test_lens_summary_of_hand_built_hits():
    result = LensResult([[False, True, True], [False, False, True], [False, False, False]], 10)
    assert result.frequency() == [0.0, 1 / 3, 2 / 3]
    assert result.first_layers() == [2, 3, None]
    summary = result.summary()
    assert summary["first_layer_mean"] == 2.5 and summary["found"] == pytest.approx(2 / 3)
    assert summary["first_layer_std"] == pytest.approx(math.sqrt(0.5))


def test_gradient_of_a_set_with_itself_has_cosine_one(deep_tiny):
    model, tokenizer = deep_tiny
    d_a = key_value_recall(8, seed=1, key_length=3, value_length=2)
    d_b = key_value_recall(8, seed=1, key_length=3, value_length=2, unseen=True)
    g_a = loss_gradient(model, tokenizer, d_a, batch_size=3)
    same = gradient_cosines(g_a, g_a)
    assert same["overall"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in same["groups"].values())
    assert list(same["groups"])[:2] == ["embed", "layer.1"] and "layer.4" in same["groups"]
    # the batch size does not change the gradient of the whole sample
    g_a_whole = loss_gradient(model, tokenizer, d_a, batch_size=8)
    assert all(torch.allclose(g_a[k], g_a_whole[k], atol=1e-6) for k in g_a)
    cos = gradient_cosines(g_a, loss_gradient(model, tokenizer, d_b))
    flat_a = torch.cat([g_a[k].flatten() for k in sorted(g_a)]).double()
    g_b = loss_gradient(model, tokenizer, d_b)
    flat_b = torch.cat([g_b[k].flatten() for k in sorted(g_a)]).double()
    assert cos["overall"] == pytest.approx(float(torch.nn.functional.cosine_similarity(
        flat_a, flat_b, dim=0)), abs=1e-9)  # fmt: skip
    assert -1 < cos["overall"] < 1
    assert parameter_group("model.layers.0.mlp.up_proj.weight") == "layer.1"
    assert parameter_group("lm_head.weight") == "head"


def test_lens_and_gradients_of_a_run_from_the_command_line(tiny_model_dir, tmp_path, capsys):
    from factmem.config import load_config
    from factmem.pipeline import run_experiment
    from factmem.testing import tiny_config_data

    data = tiny_config_data(tiny_model_dir, tmp_path, name="run", size=6, epochs=(2, 1),
                            max_new_tokens=6, checkpoint_every_epochs=0, warmup_ratio=0.05
                            )  # fmt: skip
    data["stages"][1]["mixing"] = {"source": "random_words", "words": 4, "ratio": 1.0}
    config = load_config(data)
    run_experiment(config, progress=False)
    run = tmp_path / "run"
    assert main(["lens", str(run), "-n", "5", "--out", str(tmp_path / "lens")]) == 0
    out = capsys.readouterr().out
    assert "| run | 2 | stage1 | 5 |" in out and (tmp_path / "lens" / "lens.png").is_file()
    record = json.loads((run / "stage2" / "lens_stage1.json").read_text())
    assert len(record["frequency"]) == 2 and record["examples"] == 5
    assert record["accuracy"] is not None
    assert main(["gradients", str(run), "-n", "4"]) == 0
    out = capsys.readouterr().out
    assert "D_A vs D_B" in out and "D_A vs D_B+D_M" in out
    record = json.loads((run / "stage1" / "gradients.json").read_text())
    assert record["examples"] == {"D_A": 4, "D_B": 4, "D_B+D_M": 4}
    assert main(["lens", str(run), "--stage", "3"]) == 2
