"""What one sandboxed run produced, apart from the runner so that scorers can type against it without importing
process-handling code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tuner.base.errors import TunerError

Status = Literal["passed", "failed", "timeout", "crashed"]

#: All values ``ProgramResult.status`` can take, in a stable order (useful for counting).
STATUSES: tuple[Status, ...] = ("passed", "failed", "timeout", "crashed")


class SandboxError(TunerError, RuntimeError):
    """The sandbox itself could not be set up (not: the program failed).

    A :class:`~tuner.base.errors.TunerError`, so the CLI reports it as one line; still a ``RuntimeError`` for
    callers written before that base existed.

    Raised only for caller mistakes or a broken host (e.g. an interpreter that cannot be found); a program that
    misbehaves always yields a :class:`ProgramResult` instead, so that scoring loops never die on bad code.
    """


@dataclass(frozen=True)
class ProgramResult:
    """Outcome of :func:`tuner.sandbox.run_program`.

    ``status``:
      - ``passed``: exit status 0 *and* the harness reached its success marker after the last line of the
        program (so ``sys.exit(0)``/``os._exit(0)`` before the tests do not count as a pass);
      - ``failed``: the program ended on its own without passing (non-zero exit such as an ``AssertionError``,
        a syntax error, or an early exit with status 0);
      - ``timeout``: wall-clock timeout or CPU-time limit;
      - ``crashed``: killed by a signal, hit a resource limit (memory, file size, output size), or the sandbox
        failed to start.
    """

    status: Status
    output: str
    returncode: int | None
    duration_s: float
    reason: str | None = None
    isolation: str = ""
    output_truncated: bool = False

    @property
    def passed(self) -> bool:
        """True only for a run that reached the success marker with exit status 0."""
        return self.status == "passed"
