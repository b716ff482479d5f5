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
    if isinstance(prompt, str) and not chat_template:
        return list(tokenizer(prompt)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        fix = ("a prompts file of chats needs a model with one" if not isinstance(prompt, str) else
               "decode without it (tuner: --set chat_template=false; decoder: drop --chat-template)")
        raise ConfigError(f"the model's tokenizer has no chat template: {fix}")
    messages = ([{"role": "user", "content": prompt}] if isinstance(prompt, str)
                else [{"role": m["role"], "content": m["content"]} for m in prompt])
    templated = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(templated, add_special_tokens=False)["input_ids"])
