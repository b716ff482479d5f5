"""Run model-written Python programs in isolation and say whether they passed: the code tasks' scorer.

Refuses by default: without a working bubblewrap every run raises :class:`SandboxError`, unless the user opts in
with ``DTUNE_SANDBOX_ISOLATION=subprocess``. The API, what each level exposes and the module map: docs/sandbox.md.
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
