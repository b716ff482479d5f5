"""Sandbox for model-generated code: run untrusted Python programs and say whether they passed.

Public API::

    from tuner.sandbox import Limits, run_program, run_programs, isolation_level, ProgramResult, SandboxError
    res = run_program(source)                      # default Limits(); res.status in STATUSES
    res = run_program(source, Limits(timeout_s=3, memory_mb=512))
    results = run_programs(sources, Limits(timeout_s=3), max_workers=4)   # same order as sources
    require_isolation()   # at CLI start: raises the one-line SandboxError where bwrap is missing or broken

Refuses by default: without a working bubblewrap every run raises :class:`SandboxError`, unless the user opts
in with ``DTUNE_SANDBOX_ISOLATION=subprocess`` (plain subprocesses; docs/sandbox.md lists what that exposes).

Modules, each depending only on those listed before it: ``result`` and ``limits`` (data), ``bootstrap`` (the
script that runs first inside), ``procs``, ``uids`` and ``sweep`` (processes, throw-away uids, what a run left
behind), ``commands`` (argv of a resolved :class:`Isolation`), ``runner`` (one program under a resolved
isolation), ``levels`` (choosing the isolation: env var, probe, cache, refusal), ``api`` (the public
functions). See ``docs/sandbox.md`` for the threat model.
"""

from .api import run_program, run_programs
from .commands import Isolation
from .levels import isolation_level, require_isolation, reset_cache
from .limits import Limits
from .result import STATUSES, ProgramResult, SandboxError, Status

__all__ = [
    "STATUSES",
    "Isolation",
    "Limits",
    "ProgramResult",
    "SandboxError",
    "Status",
    "isolation_level",
    "require_isolation",
    "reset_cache",
    "run_program",
    "run_programs",
]
