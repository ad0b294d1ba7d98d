"""One training/evaluation example, the Tulu-v2 chat template, and response-only labels.

The template is the one the paper's authors trained with:
    <|user|>\\n{prompt}\\n<|assistant|>\\n{response}<eos>
`<|user|>` and `<|assistant|>` are plain text, not special tokens, as in the original.
The prompt part and the response part are tokenized separately and concatenated, so the
prompt a model is trained on is token-for-token the prompt it is evaluated on.

Multi-turn examples (UltraChat; few-shot prompts) carry earlier (user, assistant) turns in
`history`, laid out as open-instruct's Tulu-v2 code does: each assistant turn ends with EOS,
and a newline separates it from the next `<|user|>`. Every assistant turn is trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the data layer and the report load without torch
    from transformers import PreTrainedTokenizerBase

from factmem.errors import DataError

IGNORE_INDEX = -100  # label value that CrossEntropyLoss (and transformers) skip


@dataclass(frozen=True)
class Example:
    """A (prompt, response) pair; `answers` are the strings exact match accepts."""

    prompt: str
    response: str
    answers: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    history: tuple[tuple[str, str], ...] = ()  # earlier (user, assistant) turns

    def gold_answers(self) -> tuple[str, ...]:
        return self.answers or (self.response,)


def format_prompt(prompt: str) -> str:
    """Everything the model sees before it answers."""
    return f"<|user|>\n{prompt}\n<|assistant|>\n"


def format_example(example: Example, eos_token: str) -> str:
    """The full training text, as a string (for display and tests)."""
    turns = [*example.history, (example.prompt, example.response)]
    return "\n".join(format_prompt(user) + answer + eos_token for user, answer in turns)


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: str, history: Sequence[tuple[str, str]] = ()
) -> list[int]:
    """Prompt token ids (earlier turns first); a BOS only if the tokenizer adds one."""
    return _encode_turns(tokenizer, prompt, history)[0]


def _encode_turns(
    tokenizer: PreTrainedTokenizerBase, prompt: str, history: Sequence[tuple[str, str]]
) -> tuple[list[int], list[int]]:
    """(ids, labels) of the history turns followed by the final prompt."""
    ids: list[int] = []
    labels: list[int] = []
    for turn, (user, assistant) in enumerate(history):
        text = ("\n" if turn else "") + format_prompt(user)
        user_ids = tokenizer(text, add_special_tokens=turn == 0)["input_ids"]
        answer_ids = encode_response(tokenizer, assistant)
        ids += user_ids + answer_ids
        labels += [IGNORE_INDEX] * len(user_ids) + answer_ids
    text = ("\n" if history else "") + format_prompt(prompt)
    prompt_ids = tokenizer(text, add_special_tokens=not history)["input_ids"]
    return ids + prompt_ids, labels + [IGNORE_INDEX] * len(prompt_ids)


def encode_response(tokenizer: PreTrainedTokenizerBase, response: str) -> list[int]:
    """Response token ids followed by EOS (the token generation must stop at)."""
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no EOS token; set one before training")
    return tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def encode_example(
    tokenizer: PreTrainedTokenizerBase, example: Example, max_length: int | None = None
) -> dict[str, list[int]]:
    """input_ids and labels, with labels = IGNORE_INDEX on every user-side token."""
    prompt_ids, prompt_labels = _encode_turns(tokenizer, example.prompt, example.history)
    response_ids = encode_response(tokenizer, example.response)
    input_ids = prompt_ids + response_ids
    if max_length is not None and len(input_ids) > max_length:
        raise DataError(
            f"example is {len(input_ids)} tokens, over max_length={max_length}: "
            f"{example.prompt[:60]!r}... (raise training.max_length or shorten the data)"
        )
    labels = prompt_labels + response_ids
    return {"input_ids": input_ids, "labels": labels}
