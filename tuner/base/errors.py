"""The tuner's one error base, and the one-line form every CLI message and warning takes."""

from __future__ import annotations

# Exit codes scripts can rely on: success; bad input or an unreachable service (one line on stderr); an export
# refused by its held-out confirmation; interrupted (finished trials are kept).
EXIT_OK, EXIT_ERROR, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 2, 3, 130


class TunerError(Exception):
    """Base of every error the tuner raises on purpose; the CLI prints it as one line and exits 2."""


class RefusedError(TunerError):
    """A verdict refused what was asked (an export whose pick failed its confirmation); the CLI exits 3."""


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


def db_error(exc: BaseException) -> str:
    """`one_line` as database errors read best in a warning: the wrapped cause, its type, its first line."""
    return one_line(exc, with_type=True, cause=True, first=True)
