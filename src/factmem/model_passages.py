"""Generic text written by the stage-0 model itself (`mixing.corpus: model`): not in the
paper; a generic source that needs no corpus and no internet. Passages are sampled once per
(model, seed, settings) and cached."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re

from factmem.config import MixingConfig
from factmem.errors import DataError

log = logging.getLogger(__name__)


TOPICS = (
    "the history of a small town",
    "how bread is made",
    "a walk in the forest",
    "the ocean",
    "a day at a market",
    "how rivers form",
    "the life of bees",
    "an old library",
    "learning to swim",
    "the night sky",
    "a mountain village",
    "the invention of the wheel",
    "how a bicycle works",
    "winter in the city",
    "a family dinner",
    "the first day of school",
    "a train journey",
    "how plants grow",
    "a summer storm",
    "the work of a carpenter",
)


def model_documents(model: str, count: int, seed: int | str, cfg: MixingConfig) -> list[str]:
    """Passages sampled from the stage-0 model itself, cached per (model, seed, settings).

    Not in the paper: a generic source that needs no corpus and no internet, so REMIX runs
    offline. Passages are sampled (temperature 1.0, top-p 0.95) from chat prompts asking for
    a passage about a generic topic, until `count` of them have enough words.
    """
    from factmem.atomic import write_jsonl_atomic
    from factmem.batching import pad_rows
    from factmem.evaluation import eval_mode
    from factmem.models import cache_dir, load_model, load_tokenizer, resolve_model

    need = cfg.prefix_words + cfg.continuation_words
    key = hashlib.sha256(json.dumps([model, seed, need, count]).encode()).hexdigest()[:16]
    cache = cache_dir() / "generic" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', model)[-40:]}-{key}.jsonl"
    if cache.is_file():
        return [json.loads(line)["text"] for line in cache.read_text().splitlines()]
    import torch
    from transformers import GenerationConfig

    from factmem.data.example import encode_prompt

    path = resolve_model(model)
    tokenizer = load_tokenizer(path)
    lm = load_model(path, tokenizer)
    int_seed = int(hashlib.sha256(str(seed).encode()).hexdigest()[:8], 16)
    generator = torch.Generator().manual_seed(int_seed)
    rng = random.Random(f"factmem-model-passages-{seed}")
    config = GenerationConfig(
        do_sample=True, temperature=1.0, top_p=0.95, max_new_tokens=max(64, int(need * 2.5)),
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    documents: list[str] = []
    log.info("writing %d generic passages with %s (cached in %s)", count, model, cache)
    attempts = 0
    while len(documents) < count:
        attempts += 1
        if attempts > 20:
            raise DataError(f"{model} wrote too few passages of >= {need} words")
        prompts = [
            f"Write a long passage of about {need + 50} words about {rng.choice(TOPICS)}."
            for _ in range(min(32, 2 * (count - len(documents))))
        ]
        encoded = [encode_prompt(tokenizer, p) for p in prompts]
        ids, mask = pad_rows(encoded, tokenizer.pad_token_id, left=True)
        width = ids.shape[1]
        batch_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        with torch.random.fork_rng(), eval_mode(lm):  # leave the global RNG as it was
            torch.manual_seed(batch_seed)
            out = lm.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        for row in out[:, width:]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            if len(text.split()) >= need and len(documents) < count:
                documents.append(text)
    write_jsonl_atomic(cache, ({"text": d} for d in documents))
    return documents
