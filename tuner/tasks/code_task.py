"""Shared scoring machinery of the code tasks: build a test program per completion, run it in the sandbox.

Kept separate from HumanEval/MBPP so both use the same parallel batch path and report sandbox outcomes the
same way (``details``: status, reason, duration, output excerpt, how the code was obtained).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from tuner.sandbox import Limits, ProgramResult, run_programs

from .base import Item, ScoreResult, Task
from .errors import TaskError

_OUTPUT_EXCERPT = 2000


class CodeTask(Task):
    """A task whose completions are scored by executing tests (pass@1 with one sample).

    ``needs_sandbox``: scoring runs model-written code in :mod:`tuner.sandbox`, which refuses without a working
    bubblewrap (unless ``DTUNE_SANDBOX_ISOLATION=subprocess``); a CLI checks that with
    ``tuner.sandbox.require_isolation()`` before it loads a model, instead of failing at the first score.
    """

    needs_sandbox: ClassVar[bool] = True

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        timeout_s: float = 10.0,
        max_workers: int | None = None,
        memory_mb: int = 1024,
    ) -> None:
        super().__init__(data_dir)
        if timeout_s <= 0:
            raise TaskError("timeout_s must be > 0")
        self.timeout_s = timeout_s
        self.max_workers = max_workers
        self.memory_mb = memory_mb

    @abstractmethod
    def build_program(self, item: Item, completion: str) -> tuple[str, str, str]:
        """(full test program, the code taken from the completion, how it was obtained)."""

    def answer(self, item: Item, completion: str) -> str:
        """The program text taken from the completion (what :meth:`build_program` runs), each line's trailing
        whitespace and the blank lines at either end dropped (neither changes what Python runs)."""
        code = self.build_program(item, completion)[1]
        return "\n".join(line.rstrip() for line in code.splitlines()).strip("\n")

    def _result(self, code: str, how: str, run: ProgramResult) -> ScoreResult:
        details: dict[str, Any] = {
            "status": run.status,
            "sandbox_reason": run.reason,
            "duration_s": round(run.duration_s, 4),
            "returncode": run.returncode,
            "isolation": run.isolation,
            "code_source": how,
            "output": run.output[-_OUTPUT_EXCERPT:],
        }
        reason = None if run.passed else f"{run.status}: {run.reason}"
        return ScoreResult(run.passed, code, reason, details)

    def score(self, item: Item, completion: str) -> ScoreResult:
        return self.score_batch([item], [completion])[0]

    def score_batch(self, items: Sequence[Item], completions: Sequence[str]) -> list[ScoreResult]:
        """Build every program, run them in parallel in the sandbox, keep the order."""
        if len(items) != len(completions):
            raise TaskError(f"{len(items)} items but {len(completions)} completions")
        built = [
            self.build_program(item, completion) for item, completion in zip(items, completions, strict=True)
        ]
        runs = run_programs(
            [program for program, _, _ in built],
            Limits(timeout_s=self.timeout_s, memory_mb=self.memory_mb),
            max_workers=self.max_workers,
        )
        return [self._result(code, how, run) for (_, code, how), run in zip(built, runs, strict=True)]

    def reference_completion(self, item: Item) -> str:
        """A completion that must pass (the dataset's reference solution), for self-checks."""
        raise NotImplementedError
