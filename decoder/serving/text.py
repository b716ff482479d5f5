"""One request's answer as text, assembled block by block: what a stream may send after each committed block.

The pieces `feed` and `close` return concatenate to the final text, which equals decoding the request alone: the
answer's ids up to the first end id (`ModelArgs.answer_end_ids`, where `generate` ends its texts) and at most
`max_tokens` of them, decoded as `generate` decodes them, cut before the first stop string. Two things are held
back until a later block settles them: trailing U+FFFD (a multi-byte character whose last bytes come in the next
token) and a tail that could be the start of a stop string. This relies on what byte-level BPE and SentencePiece
tokenizers give: the text of a prefix of the ids is a prefix of the text of all of them, once incomplete
characters are held back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

FinishReason = Literal["stop", "length"]
REPLACEMENT = "\ufffd"  # what a decoder writes for an incomplete UTF-8 sequence


class TextAssembler:
    """Text of one row, fed its committed blocks in order; `finish_reason` is set once the row needs no more."""

    def __init__(self, decode: Callable[[list[int]], str], end_ids: frozenset[int], max_tokens: int,
                 stop: tuple[str, ...] = ()):
        self._decode = decode
        self._end_ids = end_ids
        self._max_tokens = max_tokens
        self._stop = stop
        self.ids: list[int] = []  # the answer's ids so far (with a stop string: up to the token that completes it)
        self.text = ""  # the answer's text so far (cut before a stop string)
        self.sent = ""  # the part of `text` already handed out
        self.finish_reason: FinishReason | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def feed(self, block: Iterable[int]) -> str:
        """Add one committed block's ids; returns the text that became final (possibly empty)."""
        if self.done:
            return ""
        before = len(self.ids)
        for token in block:
            if token in self._end_ids:
                self.finish_reason = "stop"
                break
            self.ids.append(token)
            if len(self.ids) >= self._max_tokens:
                self.finish_reason = "length"
                break
        self.text = self._decode(self.ids)
        cut = self._first_stop(self.text)
        if cut is not None:
            self.text, self.finish_reason = self.text[:cut], "stop"
            self.ids = self.ids[: self._tokens_to_stop(before)]
        ready = self.text if self.done else self.text[: len(self.text) - self._held_back(self.text)]
        return self._send(ready)

    def close(self) -> str:
        """The answer region ended (the last block was fed): the rest of the text; `finish_reason` is set."""
        if self.finish_reason is None:
            self.finish_reason = "length"
        return self._send(self.text)

    def _send(self, ready: str) -> str:
        delta = ready[len(self.sent):] if ready.startswith(self.sent) else ""
        self.sent += delta
        return delta

    def _first_stop(self, text: str) -> int | None:
        found = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        return min(found) if found else None

    def _tokens_to_stop(self, before: int) -> int:
        """How many ids it took to write the stop string (counted as completion tokens, as OpenAI does)."""
        for k in range(before + 1, len(self.ids)):
            if self._first_stop(self._decode(self.ids[:k])) is not None:
                return k
        return len(self.ids)

    def _held_back(self, text: str) -> int:
        """Characters at the end of `text` a later block may still change or cut: incomplete characters, then the
        longest tail that begins a stop string."""
        body = text.rstrip(REPLACEMENT)
        tail = max((k for s in self._stop for k in range(1, len(s)) if body.endswith(s[:k])), default=0)
        return len(text) - len(body) + tail
