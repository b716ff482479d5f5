"""Typed errors of the decoder; the CLI turns each into a one-line message (`one_line`) and a non-zero exit."""

from __future__ import annotations


class DecoderError(Exception):
    """Base class of every error the decoder raises on purpose."""


class ConfigError(DecoderError, ValueError):
    """A DecodeConfig knob is out of range, of the wrong type, or combined with a mode that can't use it."""


class ModelLoadError(DecoderError):
    """A checkpoint can't be found, read, or mapped onto a supported architecture."""


class ProfileError(DecoderError):
    """A profile file is missing, corrupt, or written by an incompatible format version."""


class ServeError(DecoderError):
    """The server can't start as asked: its address can't be bound, or an option is out of range."""


def one_line(exc: BaseException, *, with_type: bool = False, cause: bool = False, first: bool = False,
             limit: int | None = None) -> str:
    """The first meaningful line of an error, for a CLI message or a log warning.

    Errors from SQLAlchemy span dozens of lines and begin with a "(raised as a result of ...autoflush...)"
    preamble, which is skipped; whitespace is collapsed. `cause` reads the error's cause when it has one (Optuna
    wraps the database's error in its own); `with_type` prefixes the type (in warnings the type says what failed);
    `first` keeps only the first line (a database error's later lines are SQL), else all lines are joined.
    """
    if cause:
        exc = exc.__cause__ or exc
    lines = [ln.strip() for ln in str(exc).splitlines()
             if ln.strip() and not ln.strip().startswith("(raised as a result")]
    text = " ".join(" ".join(lines[:1] if first else lines).split())
    if with_type or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
