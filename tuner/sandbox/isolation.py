"""Choosing how to isolate a program, and building the command line for it.

Two levels, best first:
  - ``bwrap``: Debian's bubblewrap. New user/pid/net/ipc/uts/cgroup namespaces (``--unshare-all``), no network,
    all capabilities dropped, killed with its parent, its own session; the filesystem is only ``/usr`` (plus the
    interpreter's prefix) read-only, a size-capped tmpfs as ``/tmp`` (the working directory), a read-only copy of
    the program, a minimal ``/dev`` and a private ``/proc``. As root we first switch to a throw-away uid
    (see :mod:`tuner.sandbox.uids`): inside a user namespace root would otherwise stay uid 0 on the host, which
    defeats RLIMIT_NPROC and file permissions (tested recipe, ecosystem-notes section 5).
  - ``subprocess``: a plain child process with the same rlimits, a new session, a scrubbed environment, an
    empty temporary working directory and, as root, the throw-away uid. No filesystem or network isolation.
    Used only where bwrap is missing or does not work (e.g. user namespaces disabled), with a one-time warning.

``DTUNE_SANDBOX_ISOLATION`` = ``auto`` (default) | ``bwrap`` | ``subprocess`` forces a level;
``DTUNE_SANDBOX_PYTHON`` picks the interpreter used inside (default: the first of this interpreter, then
``/usr/bin/python3``, then ``python3`` on PATH, that starts inside the sandbox; the sandboxed interpreter runs with
``-I`` so it sees only its standard library).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from .result import SandboxError

log = logging.getLogger("tuner.sandbox")

LEVELS = ("bwrap", "subprocess")
BOX_DIR = "/sandbox"  # where the program folder appears inside bwrap
_ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: Environment of every sandboxed program: nothing inherited from the caller (no tokens, no proxies).
SCRUBBED_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "HOME": "/tmp",
}


@dataclass(frozen=True)
class Isolation:
    """The chosen level and what it needs: ``bwrap`` binary (or None) and the interpreter to run inside."""

    level: str
    python: str
    bwrap: str | None = None
    drop_uid: bool = False

    def python_roots(self) -> list[str]:
        """Directories outside /usr that the interpreter needs (its install prefix), for read-only binding."""
        real = Path(os.path.realpath(self.python))
        roots = []
        if not str(real).startswith("/usr/"):
            roots.append(str(real.parents[1]))
        return roots


def want_uid_drop() -> bool:
    """We switch to a throw-away uid only when we can (root); unprivileged callers keep their uid."""
    return os.geteuid() == 0


def bwrap_command(iso: Isolation, host_dir: str, tmp_mb: int, boot_name: str) -> list[str]:
    """Full bwrap argv running ``boot_name`` (inside ``host_dir``, bound read-only at /sandbox)."""
    assert iso.bwrap is not None
    tmp_bytes = str(tmp_mb << 20)
    argv = [iso.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    argv += ["--ro-bind", "/usr", "/usr"]
    for path in _ROOT_LINKS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for root in iso.python_roots():
        argv += ["--ro-bind", root, root]
    argv += ["--dev", "/dev", "--size", tmp_bytes, "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    argv += ["--proc", "/proc"]
    argv += ["--ro-bind", host_dir, BOX_DIR]
    argv += ["--size", tmp_bytes, "--tmpfs", "/tmp", "--chdir", "/tmp", "--remount-ro", "/"]
    argv += ["--", iso.python, "-I", "-B", "-u", f"{BOX_DIR}/{boot_name}"]
    return argv


def subprocess_command(iso: Isolation, host_dir: str, boot_name: str) -> list[str]:
    """argv of the fallback level (the program folder is used in place)."""
    return [iso.python, "-I", "-B", "-u", os.path.join(host_dir, boot_name)]


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
    from .runner import run_program  # local import: runner imports this module

    try:
        res = run_program("pass\n", timeout_s=20.0, isolation=iso)
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
