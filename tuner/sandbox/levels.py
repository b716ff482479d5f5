"""Choosing the isolation level: ``DTUNE_SANDBOX_ISOLATION``, a probe run per candidate, a per-process cache.

Refuse by default: where bwrap is missing or doesn't work, :func:`resolve` raises one :class:`SandboxError` that
says how to install it and names the only way around it, the opt-in ``DTUNE_SANDBOX_ISOLATION=subprocess``; there is
no silent fallback. A level is chosen only after ``pass`` really ran under it (bwrap can be installed and still not
work, e.g. without user namespaces). ``DTUNE_SANDBOX_PYTHON`` and the probe's cost: docs/sandbox.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading

from .commands import LEVELS, Isolation
from .limits import Limits
from .result import SandboxError
from .runner import run_isolated

log = logging.getLogger("tuner.sandbox")

DEFAULT_LEVEL = "bwrap"
ENV_VAR = "DTUNE_SANDBOX_ISOLATION"
OPT_IN = f"{ENV_VAR}=subprocess"
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
_cache: dict[str, Isolation | SandboxError] = {}
_warned = False


def _probe(iso: Isolation) -> str | None:
    """Run ``pass`` under ``iso`` with the real machinery; None if it works, else why not (one line)."""
    try:
        res = run_isolated("pass\n", _PROBE_LIMITS, iso)
    except SandboxError as exc:
        log.debug("sandbox probe %s failed: %s", iso, exc)
        return str(exc)
    if res.status == "passed":
        return None
    log.debug("sandbox probe %s: %s %s", iso, res.status, res.output[-500:])
    return res.reason or res.status


def refusal(why: str) -> SandboxError:
    """The one error every refusal raises: one line, naming bubblewrap, how to install it, and the opt-in."""
    why = " ".join(why.split())  # probe output may hold newlines; the message is one line
    return SandboxError(
        f"model-written code runs only inside bubblewrap, and {why}: install bubblewrap "
        "(`apt-get install bubblewrap`, or your distribution's bubblewrap package), or set "
        f"{OPT_IN} to run it as plain subprocesses, accepting the risk (docs/sandbox.md)"
    )


def _warn_opt_in() -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "tuner.sandbox: %s: model-written code runs as plain subprocesses, without filesystem or network "
            "isolation (docs/sandbox.md lists what stays exposed)",
            OPT_IN,
        )


def _wanted(level: str | None) -> str:
    wanted = (level or os.environ.get(ENV_VAR) or DEFAULT_LEVEL).strip().lower()
    if wanted not in LEVELS:
        raise SandboxError(
            f"unknown sandbox isolation {wanted!r} ({ENV_VAR} or isolation=): use bwrap (the default) or "
            "subprocess (the explicit opt-in that runs model-written code unisolated)"
        )
    return wanted


def _first_working(level: str, bwrap: str | None, drop: bool) -> tuple[Isolation | None, str]:
    why = "no interpreter to try (set DTUNE_SANDBOX_PYTHON)"
    for py in _candidate_pythons():
        cand = Isolation(level, py, bwrap, drop)
        failure = _probe(cand)
        if failure is None:
            return cand, ""
        why = failure
    return None, why


def _choose(wanted: str) -> Isolation:
    drop = want_uid_drop()
    if wanted == "bwrap":
        bwrap = shutil.which("bwrap")
        if not bwrap:
            raise refusal("`bwrap` is not on PATH")
        chosen, why = _first_working("bwrap", bwrap, drop)
        if chosen is None:
            raise refusal(f"`{bwrap}` does not work here ({why})")
        return chosen
    chosen, why = _first_working("subprocess", None, drop)
    if chosen is None:
        raise SandboxError(
            f"no Python interpreter could be started for the sandbox (tried {', '.join(_candidate_pythons())}: "
            f"{why}); set DTUNE_SANDBOX_PYTHON"
        )
    _warn_opt_in()
    return chosen


def resolve(level: str | None = None) -> Isolation:
    """The isolation for ``level`` (None = ``DTUNE_SANDBOX_ISOLATION``, default ``bwrap``), probed once per
    process; raises :class:`SandboxError` (the same one every time) where it cannot be had."""
    wanted = _wanted(level)
    with _lock:
        if wanted not in _cache:
            try:
                _cache[wanted] = _choose(wanted)
            except SandboxError as exc:
                _cache[wanted] = exc
        found = _cache[wanted]
    if isinstance(found, SandboxError):
        raise SandboxError(str(found))  # a fresh exception: no traceback shared between callers
    return found


def require_isolation(level: str | None = None) -> Isolation:
    """Raise the refusal now if code cannot be isolated here; for a CLI, before any model is loaded.

    Same outcome as the first :func:`tuner.sandbox.run_program` would have (same probe, same cache, same
    message), just early: a code task should not spend minutes loading a model to then refuse to score.
    """
    return resolve(level)


def isolation_level(level: str | None = None) -> str:
    """``"bwrap"`` or ``"subprocess"``: what :func:`tuner.sandbox.run_program` uses here (or raises the
    refusal)."""
    return resolve(level).level


def reset_cache() -> None:
    """Forget probe results and refusals (tests; or after installing bubblewrap in a running process)."""
    global _warned
    with _lock:
        _cache.clear()
        _warned = False
