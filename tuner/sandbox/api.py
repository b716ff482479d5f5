"""The public entry points: :func:`run_program` and :func:`run_programs`.

The level is resolved once per call, before any thread starts, so every run of a batch uses the same
:class:`~tuner.sandbox.commands.Isolation`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from .commands import Isolation
from .levels import resolve
from .limits import Limits
from .result import ProgramResult
from .runner import run_isolated


def _isolation(isolation: str | Isolation | None) -> Isolation:
    return isolation if isinstance(isolation, Isolation) else resolve(isolation)


def run_program(
    source: str, limits: Limits | None = None, *, isolation: str | Isolation | None = None
) -> ProgramResult:
    """Run ``source`` as ``__main__`` of a fresh, isolated Python interpreter and report how it ended.

    ``limits``: a :class:`Limits` (None = the defaults; e.g. ``Limits(timeout_s=3, memory_mb=512)``).
    ``isolation``: None (``DTUNE_SANDBOX_ISOLATION``, default ``"bwrap"``), ``"bwrap"``, ``"subprocess"`` (the
    explicit opt-in to run without bubblewrap), or a resolved :class:`~tuner.sandbox.commands.Isolation`. The
    program sees an empty working directory, no environment from the caller, and (with bwrap) no network and
    no host files except the Python installation. Never raises for anything the program does; raises
    :class:`SandboxError` when the requested isolation cannot be had (bwrap missing or broken: the refusal
    of :func:`tuner.sandbox.require_isolation`) or no sandbox process can be started.
    """
    return run_isolated(source, limits or Limits(), _isolation(isolation))


def run_programs(
    sources: Sequence[str],
    limits: Limits | None = None,
    *,
    max_workers: int | None = None,
    isolation: str | Isolation | None = None,
) -> list[ProgramResult]:
    """Run many programs in parallel (bounded thread pool; each run is its own sandbox, all with ``limits``) and
    return the results in the order of ``sources``. ``max_workers`` defaults to the number of CPUs."""
    if not sources:
        return []
    iso = _isolation(isolation)  # probe once, before the threads start
    lim = limits or Limits()
    workers = max_workers or min(len(sources), os.cpu_count() or 1)
    workers = max(1, min(workers, len(sources)))
    if workers == 1:
        return [run_isolated(s, lim, iso) for s in sources]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dtune-sandbox") as pool:
        return list(pool.map(lambda s: run_isolated(s, lim, iso), sources))
