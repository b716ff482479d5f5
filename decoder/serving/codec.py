"""The served model's tokenizer behind one lock: the HTTP thread encodes prompts while the decode thread decodes
answers, and a Hugging Face tokenizer is not documented as safe to share between threads."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from ..prompts import encode_messages, encode_prompt, has_chat_template


class Codec:
    """Prompt text or a conversation to ids, as the tuner encodes them; answer ids to text, as `generate` does."""

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer
        self._lock = threading.Lock()
        self.has_chat_template = has_chat_template(tokenizer)

    def encode_text(self, text: str) -> list[int]:
        with self._lock:
            return encode_prompt(self._tokenizer, text)

    def encode_chat(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        with self._lock:
            return encode_messages(self._tokenizer, messages)

    def decode(self, ids: list[int]) -> str:
        with self._lock:
            return self._tokenizer.decode(ids, skip_special_tokens=True)
