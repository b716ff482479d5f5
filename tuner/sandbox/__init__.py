"""Sandbox for model-generated code: run untrusted Python programs and say whether they passed.

Public API::

    from tuner.sandbox import run_program, run_programs, isolation_level, ProgramResult, SandboxError
    res = run_program(source, timeout_s=10.0)     # res.status in {"passed", "failed", "timeout", "crashed"}
    results = run_programs(sources, timeout_s=3.0, max_workers=4)   # same order as sources

See :mod:`tuner.sandbox.isolation` for what each isolation level does and the environment variables that
control it, and ``docs/tasks.md`` for the threat model.
"""

from .isolation import isolation_level
from .limits import Limits
from .result import STATUSES, ProgramResult, SandboxError, Status
from .runner import run_program, run_programs

__all__ = [
    "STATUSES",
    "Limits",
    "ProgramResult",
    "SandboxError",
    "Status",
    "isolation_level",
    "run_program",
    "run_programs",
]
