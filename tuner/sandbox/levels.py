"""Choosing the isolation level: ``DTUNE_SANDBOX_ISOLATION``, a probe run per candidate, a per-process cache.

``DTUNE_SANDBOX_ISOLATION`` = ``auto`` (default) | ``bwrap`` | ``subprocess`` forces a level;
``DTUNE_SANDBOX_PYTHON`` picks the interpreter used inside (default: the first of this interpreter, then
``/usr/bin/python3``, then ``python3`` on PATH, that starts inside the sandbox; the sandboxed interpreter runs with
``-I`` so it sees only its standard library).

A level is only chosen after ``pass`` has really run under it (bwrap can be installed and still not work, e.g.
where user namespaces are disabled). The probe goes through :func:`tuner.sandbox.runner.run_isolated`, so this
module sits above the runner; the runner never needs to know how its :class:`Isolation` was chosen.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import warnings

from .commands import LEVELS, Isolation
from .limits import Limits
from .result import SandboxError
from .runner import run_isolated

log = logging.getLogger("tuner.sandbox")

_PROBE_LIMITS = Limits(timeout_s=20.0)


def want_uid_drop() -> bool:
    """We switch to a throw-away uid only when we can (root); unprivileged callers keep their uid."""
    return os.geteuid() == 0


def _candidate_pythons() -> list[str]:
    forced = os.environ.get("DTUNE_SANDBOX_PYTHON")
    if forced:
        return [forced]
    seen: list[str] = []
    for cand in (os.path.realpath(sys.executable), "/usr/bin/python3", shutil.which("python3")):
        if cand and os.path.exists(cand) and cand not in seen:
            seen.append(cand)
    return seen


_lock = threading.Lock()
_cache: dict[str, Isolation] = {}
_warned = False


def _probe(iso: Isolation) -> bool:
    """Run ``pass`` under ``iso`` with the real machinery; True if it works."""
    try:
        res = run_isolated("pass\n", _PROBE_LIMITS, iso)
    except SandboxError as exc:
        log.debug("sandbox probe %s failed: %s", iso, exc)
        return False
    if res.status != "passed":
        log.debug("sandbox probe %s: %s %s", iso, res.status, res.output[-500:])
    return res.status == "passed"


def _warn_fallback(why: str) -> None:
    global _warned
    if _warned:
        return
    _warned = True
    msg = (
        f"tuner.sandbox: {why}; running generated code as plain subprocesses with rlimits, a new session and a "
        "scrubbed environment only (no filesystem or network isolation). Install bubblewrap "
        "(apt-get install bubblewrap) for real isolation."
    )
    log.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


def resolve(level: str | None = None) -> Isolation:
    """The isolation to use for ``level`` (None = ``DTUNE_SANDBOX_ISOLATION`` or auto), probed once and cached."""
    wanted = (level or os.environ.get("DTUNE_SANDBOX_ISOLATION") or "auto").lower()
    if wanted not in (*LEVELS, "auto"):
        raise SandboxError(f"unknown sandbox isolation {wanted!r}; use one of auto, {', '.join(LEVELS)}")
    with _lock:
        if wanted in _cache:
            return _cache[wanted]
        drop = want_uid_drop()
        bwrap = shutil.which("bwrap")
        chosen: Isolation | None = None
        if wanted in ("auto", "bwrap"):
            if bwrap:
                for py in _candidate_pythons():
                    cand = Isolation("bwrap", py, bwrap, drop)
                    if _probe(cand):
                        chosen = cand
                        break
            if chosen is None and wanted == "bwrap":
                raise SandboxError(
                    "bubblewrap isolation requested but "
                    + ("`bwrap` is not on PATH" if not bwrap else "no interpreter could start inside bwrap")
                )
            if chosen is None:
                _warn_fallback("`bwrap` not found" if not bwrap else "bwrap does not work here")
        if chosen is None:
            for py in _candidate_pythons():
                cand = Isolation("subprocess", py, None, drop)
                if _probe(cand):
                    chosen = cand
                    break
        if chosen is None:
            raise SandboxError(
                "no Python interpreter could be started for the sandbox (tried "
                f"{', '.join(_candidate_pythons())}); set DTUNE_SANDBOX_PYTHON"
            )
        _cache[wanted] = chosen
        return chosen


def isolation_level(level: str | None = None) -> str:
    """``"bwrap"`` or ``"subprocess"``: what :func:`tuner.sandbox.run_program` uses on this machine."""
    return resolve(level).level


def reset_cache() -> None:
    """Forget probe results (tests; or after installing bubblewrap in a running process)."""
    global _warned
    with _lock:
        _cache.clear()
        _warned = False
