"""The tuner's one error base and its exit codes; `one_line` (decoder.errors) is the one-line form every CLI message
and warning takes."""

from __future__ import annotations

from decoder.errors import one_line

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_REFUSED", "RefusedError", "TunerError", "db_error",
           "one_line"]

# Exit codes scripts can rely on: success; bad input or an unreachable service (one line on stderr); an export
# refused by its held-out confirmation; interrupted (finished trials are kept).
EXIT_OK, EXIT_ERROR, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 2, 3, 130


class TunerError(Exception):
    """Base of every error the tuner raises on purpose; the CLI prints it as one line and exits 2."""


class RefusedError(TunerError):
    """A verdict refused what was asked (an export whose pick failed its confirmation); the CLI exits 3."""


def db_error(exc: BaseException) -> str:
    """`one_line` as database errors read best in a warning: the wrapped cause, its type, its first line."""
    return one_line(exc, with_type=True, cause=True, first=True)
