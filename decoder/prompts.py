"""Prompt text → token ids, the one way every caller does it (the tuner's evaluator, both CLIs, `generate`).

Why one encoder: a chat template already holds the model's BOS, so templated text must be tokenised without the
tokenizer's special tokens, while raw text gets them (BOS where the tokenizer adds one, as the reference harnesses
call it). Two call sites doing this differently would decode different ids than the tuner measured.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError


def encode_prompt(tokenizer: Any, text: str, *, chat_template: bool = False) -> list[int]:
    """Token ids of `text`, wrapped in the tokenizer's chat template (one user turn) when `chat_template`."""
    if not chat_template:
        return list(tokenizer(text)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("the model's tokenizer has no chat template: decode without it (tuner: --set "
                          "chat_template=false; decoder: drop --chat-template)")
    templated = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                              add_generation_prompt=True)
    return list(tokenizer(templated, add_special_tokens=False)["input_ids"])
