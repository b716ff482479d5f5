"""What a request may change: the profile decides decoding, a request may only lower `max_tokens` and set `stop`.

Fields that would change the tuned behaviour (`PINNED`) pass only at the value that leaves it as tuned — the
profile's temperature, top_p 1, n 1, no penalties — so a client library that sends its defaults still works, and
anything else is a 400 that says why. Prompts are checked against the model: not empty, ids in its vocabulary, short
enough to leave room for the profile's gen_length.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import DecodeConfig
from .engine import DecodeRequest, max_prompt_tokens
from .schema import ChatRequest, CompletionRequest, RequestError


@dataclass(frozen=True)
class Pinned:
    """A field a request may send only at one of `allowed(config)` (compared with its type: 0 is not False).

    tuned: it would change the tuned decoding (temperature, top_p, ...); otherwise it asks for something this
    server does not do (logprobs, echo, suffix)."""

    allowed: Callable[[DecodeConfig], tuple[Any, ...] | None]  # None: any value
    tuned: bool = True


def _fixed(*values: Any, tuned: bool = True) -> Pinned:
    return Pinned(lambda config: values, tuned)


PINNED: dict[str, Pinned] = {
    "temperature": Pinned(lambda c: (c.temperature,)),
    "seed": Pinned(lambda c: None if c.temperature == 0 else (c.seed,)),  # greedy: any seed decodes the same
    "top_p": _fixed(1.0),
    "n": _fixed(1),
    "best_of": _fixed(1),
    "frequency_penalty": _fixed(0.0),
    "presence_penalty": _fixed(0.0),
    "logit_bias": _fixed({}),
    "echo": _fixed(False, tuned=False),
    "suffix": _fixed("", tuned=False),
    "logprobs": _fixed(False, tuned=False),  # chat's bool; completions' integer never passes
    "top_logprobs": _fixed(tuned=False),
}


def check_pinned(body: CompletionRequest | ChatRequest, config: DecodeConfig) -> None:
    """Refuse (400) the first field of `PINNED` set to a value that would change decoding under `config`."""
    for name, pinned in PINNED.items():
        value = getattr(body, name, None)
        if value is None:
            continue
        allowed = pinned.allowed(config)
        if allowed is None or any(type(value) is type(a) and value == a for a in allowed):
            continue
        shown = f"{name}={json.dumps(value)}"
        if pinned.tuned:
            message = (f"{shown} would change the tuned decoding: this server decodes as its profile says; leave "
                       f"{name} out" + (f" or set it to {json.dumps(allowed[0])}" if allowed else ""))
        else:
            message = f"{shown} is not supported by this server; leave {name} out"
        raise RequestError(message, param=name, code="unsupported_value")


def max_tokens(body: CompletionRequest | ChatRequest, config: DecodeConfig) -> int | None:
    """The request's `max_tokens` (chat: or `max_completion_tokens`), at most the profile's gen_length."""
    value, name = body.max_tokens, "max_tokens"
    if isinstance(body, ChatRequest) and body.max_completion_tokens is not None:
        if value is not None and value != body.max_completion_tokens:
            raise RequestError("max_tokens and max_completion_tokens disagree; send one", param="max_tokens",
                               code="invalid_value")
        value, name = body.max_completion_tokens, "max_completion_tokens"
    if value is None:
        return None
    if value < 1:
        raise RequestError(f"{name} must be at least 1, got {value}", param=name, code="invalid_value")
    if value > config.gen_length:
        raise RequestError(f"{name}={value} exceeds the profile's gen_length ({config.gen_length}): a request may "
                           "only lower it", param=name, code="invalid_value")
    return value


def check_prompt(ids: list[int], *, vocab_size: int, max_seq_len: int, config: DecodeConfig, param: str) -> None:
    if not ids:
        raise RequestError(f"{param} is empty", param=param, code="invalid_value")
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise RequestError(f"{param} holds token ids outside the vocabulary (0-{vocab_size - 1}): {bad[:5]}",
                           param=param, code="invalid_value")
    limit = max_prompt_tokens(max_seq_len, config)
    if len(ids) > limit:
        raise RequestError(f"{param} is {len(ids)} tokens; this model takes {max_seq_len} positions and the "
                           f"profile decodes {config.gen_length} answer tokens, so a prompt may hold at most {limit}",
                           param=param, code="context_length_exceeded")


def decode_request(body: CompletionRequest | ChatRequest, ids: list[int], config: DecodeConfig) -> DecodeRequest:
    """The engine's request, once every field has been checked (prompt ids apart: `check_prompt`)."""
    check_pinned(body, config)
    if body.stream_options is not None and not body.stream:
        raise RequestError("stream_options is only allowed with stream=true", param="stream_options",
                           code="invalid_value")
    return DecodeRequest(prompt_ids=ids, max_tokens=max_tokens(body, config), stop=body.stop)
