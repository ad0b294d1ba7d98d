"""Factoid sets. Key-Value Recall (KVR) is synthetic: facts no pretrained model can know."""

from __future__ import annotations

import random
import string

from factmem.data.example import Example

KVR_ALPHABET = string.ascii_letters + string.digits


def kvr_prompt(key: str) -> str:
    """The paper's KVR question (official code: `The value of key {key} is?`)."""
    return f"The value of key {key} is?"


def _kvr_stream(seed: int, count: int, key_length: int, value_length: int, alphabet: str):
    """The first `count` pairs of one seeded stream of random pairs with distinct keys."""
    rng = random.Random(f"factmem-kvr-{seed}-{key_length}-{value_length}-{alphabet}")
    seen: set[str] = set()
    pairs: list[tuple[str, str]] = []
    while len(pairs) < count:
        key = "".join(rng.choices(alphabet, k=key_length))
        if key in seen:
            continue
        seen.add(key)
        pairs.append((key, "".join(rng.choices(alphabet, k=value_length))))
    return pairs


def key_value_recall(
    size: int,
    seed: int,
    *,
    unseen: bool = False,
    key_length: int = 8,
    value_length: int = 8,
    alphabet: str = KVR_ALPHABET,
) -> list[Example]:
    """`size` random key -> value facts.

    `kvr` and `kvr_id` (unseen=True) with the same seed are the even and odd items of one
    stream with distinct keys, so the "unseen facts of D_A's kind" never share a key with D_A,
    whatever the two sizes are.
    """
    stream = _kvr_stream(seed, 2 * size, key_length, value_length, alphabet)
    pairs = stream[1::2] if unseen else stream[0::2]
    return [
        Example(
            prompt=kvr_prompt(k),
            response=v,
            meta={"key": k, "id": f"kvr{'_id' if unseen else ''}-{i}"},
        )
        for i, (k, v) in enumerate(pairs)
    ]
