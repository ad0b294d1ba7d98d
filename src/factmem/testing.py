"""Helpers for tests, smoke runs and benchmarks: kept in the package (as transformers keeps
`testing_utils`) because scripts/ and benchmarks/ use them too, not only tests/."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from factmem.models import save_model


def build_tiny_model(
    folder: str | Path, *, layers: int = 2, hidden: int = 64, seed: int = 0
) -> Path:
    """A randomly initialised Llama with a small byte-level BPE tokenizer, saved to `folder`.

    Tests and smoke runs use it: it trains in seconds, and behaves like a real HF model folder.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    corpus = [
        "<|user|>\nThe value of key is?\n<|assistant|>\n",
        "Complete the following partial passage: the of and to in a is that for it as was",
    ] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    save_model(model, tokenizer, folder)
    return folder


# The settings under which the tiny model memorises 8 KVR facts in a few epochs (tests,
# scripts/tiny_grid.py, benchmarks): one definition instead of one per test file.
FAST_TRAINING = {"learning_rate": 1e-2, "batch_size": 4, "bf16": False, "warmup_ratio": 0.0,
                 "checkpoint_every_epochs": 1}  # fmt: skip
TINY_KVR = {"key_length": 3, "value_length": 2}


def tiny_config_data(model_dir: str | Path, output_dir: str | Path | None = None, *,
                     name: str = "tiny", size: int = 8, epochs: tuple[int, int] = (3, 2),
                     max_new_tokens: int = 8, **training) -> dict:  # fmt: skip
    """A two-stage config, KVR -> unseen KVR on the tiny model, that runs in seconds;
    `training` overrides FAST_TRAINING. A dict, so that a test can change any field."""
    data = {
        "name": name, "model": str(model_dir),
        "training": FAST_TRAINING | training,
        "evaluation": {"max_new_tokens": max_new_tokens},
        "stages": [
            {"dataset": "kvr", "size": size, "stop": {"epochs": epochs[0]},
             "options": dict(TINY_KVR)},
            {"dataset": "kvr_id", "size": size, "stop": {"epochs": epochs[1]},
             "options": dict(TINY_KVR)},
        ],
    }  # fmt: skip
    if output_dir is not None:
        data["output_dir"] = str(output_dir)
    return data
