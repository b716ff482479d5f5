"""OpenAI request bodies as this server reads them: strict types (no "5" for 5), no unknown fields, one prompt.

Every way a body can be malformed becomes a `RequestError` (400, OpenAI's error body) naming the field. Which
values of the known fields are allowed is `policy`'s business.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError


class RequestError(Exception):
    """A request the server refuses: an HTTP status and the fields of OpenAI's error body."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.status, self.param, self.code, self.kind = message, status, param, code, kind


def _one_prompt(value: Any) -> str | list[int]:
    """A string or a list of token ids; a list holding one of either is OpenAI's batch form of one prompt."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, list)):
        value = value[0]
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return value
    if isinstance(value, list) and value and all(isinstance(v, (str, list)) for v in value):
        raise ValueError("one prompt per request: send several requests at once instead (the server batches them)")
    raise ValueError("must be a string or a list of token ids (integers)")


def _stop(value: Any) -> tuple[str, ...]:
    """OpenAI's `stop`: null, a string or a list of up to 4 non-empty strings."""
    if value is None:
        return ()
    strings = [value] if isinstance(value, str) else value
    if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
        raise ValueError("must be a string or a list of strings")
    if len(strings) > 4 or any(s == "" for s in strings):
        raise ValueError("takes at most 4 stop strings, none of them empty")
    return tuple(strings)


def _content(value: Any) -> str:
    """A message's content: a string, or a list of text parts (joined with newlines); images are refused."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                       and isinstance(p.get("text"), str) and set(p) <= {"type", "text"}
                                       for p in value):
        return "\n".join(p["text"] for p in value)
    raise ValueError("must be a string or a list of {\"type\": \"text\", \"text\": ...} parts (this model reads "
                     "text only)")


Prompt = Annotated[str | list[int], PlainValidator(_one_prompt)]
Stop = Annotated[tuple[str, ...], PlainValidator(_stop)]
Content = Annotated[str, PlainValidator(_content)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Body):
    include_usage: bool = False


class _Request(_Body):
    """The fields both endpoints share. Those after `user` change decoding: `policy.PINNED` says which values pass."""

    model: str
    max_tokens: int | None = None
    stop: Stop = ()
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted and ignored
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None


class CompletionRequest(_Request):
    prompt: Prompt
    best_of: int | None = None
    echo: bool | None = None
    logprobs: int | None = None
    suffix: str | None = None


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: Content
    name: str | None = None  # accepted and ignored


class ChatRequest(_Request):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


Body = TypeVar("Body", bound=_Body)


def parse(cls: type[Body], raw: bytes) -> Body:
    """The request body as `cls`, or a RequestError that names what is wrong with it."""
    try:
        return cls.model_validate_json(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise RequestError(_describe(error), param=_path(error["loc"]) or None,
                           code="invalid_json" if error["type"] == "json_invalid" else "invalid_value") from None


def _path(loc: tuple[Any, ...]) -> str:
    """A pydantic location as OpenAI names a parameter: messages[0].content."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(error: dict[str, Any]) -> str:
    param, kind, msg = _path(error["loc"]), error["type"], error["msg"].removeprefix("Value error, ")
    if kind == "json_invalid":
        return f"the body is not valid JSON ({error.get('ctx', {}).get('error', msg)})"
    if not param:
        return "the body must be a JSON object"
    if kind == "extra_forbidden":
        return f"unknown field {param!r}: this server does not take it (docs/serving.md lists the fields it does)"
    if kind == "missing":
        return f"{param} is required"
    return f"{param}: {msg}"
