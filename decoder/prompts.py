"""Prompt text → token ids, the one way every caller does it (the tuner's evaluator, both CLIs, `generate`).

Why one encoder: a chat template already holds the model's BOS, so templated text must be tokenised without the
tokenizer's special tokens, while raw text gets them (BOS where the tokenizer adds one, as the reference harnesses
call it). Two call sites doing this differently would decode different ids than the tuner measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ConfigError


def encode_prompt(tokenizer: Any, prompt: str | Sequence[Mapping[str, str]], *, chat_template: bool = False
                  ) -> list[int]:
    """Token ids of a prompt: raw text as is, or wrapped in the tokenizer's chat template (one user turn) when
    `chat_template`; a chat (a list of `{"role", "content"}` messages) always through the chat template, as it has
    no raw-text form."""
    if isinstance(prompt, str):
        if not chat_template:
            return list(tokenizer(prompt)["input_ids"])
        return encode_messages(tokenizer, [{"role": "user", "content": prompt}])
    return encode_messages(tokenizer, prompt)


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def encode_messages(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """Token ids of a conversation (`role`/`content` dicts) in the tokenizer's chat template, ending where the
    assistant's answer starts."""
    if not has_chat_template(tokenizer):
        raise ConfigError("the model's tokenizer has no chat template: decode without it (tuner: --set "
                          "chat_template=false; decoder: drop --chat-template), or use a model with one for chats")
    templated = tokenizer.apply_chat_template([{"role": m["role"], "content": m["content"]} for m in messages],
                                              tokenize=False, add_generation_prompt=True)
    return list(tokenizer(templated, add_special_tokens=False)["input_ids"])
