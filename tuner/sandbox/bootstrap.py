"""The small Python script that runs first inside the sandbox and then runs the untrusted program.

Why a bootstrap instead of running the program file directly:
  - rlimits are set here, in the sandboxed interpreter itself, identically for every isolation level
    (no ``preexec_fn``, which is unsafe with threads, and no dependence on the ``prlimit`` binary);
  - it writes a *start* byte to a private pipe once the limits are in place (no byte = the sandbox or the interpreter
    failed to start, which is reported as ``crashed`` rather than blamed on the program), and a random
    *success marker* after the program's last line. ``sys.exit(0)`` or ``os._exit(0)`` inside the program never
    reach the marker, so they cannot pass as success;
  - the program runs unmodified as a fresh ``__main__`` module (compiled from its own file, as ``runpy`` would,
    but without importing it: a few ms per run), so ``if __name__ == "__main__"`` blocks run, line numbers are
    preserved and ``from __future__`` imports stay legal.

The marker is not a secret from a program that goes looking for it (it can read this script through
``sys._getframe(1)`` or ``/proc/self/cmdline``, write the marker itself and ``os._exit(0)``); it defends
against accidental or careless early exits, not against code written to fake a pass. No in-process harness can
do better: whatever this script does after the program, the program can do first, in the same process with the
same rights; and the tests themselves run in that process (an ``__eq__`` that always says True passes them
without touching the marker). See docs/sandbox.md, "Score integrity".
"""

from __future__ import annotations

BOOT_NAME = "_dtune_boot.py"
MAIN_NAME = "main.py"

_TEMPLATE = """\
import os as _os
import sys as _sys
_fd = {fd}
_os.set_inheritable(_fd, False)
if {pdeathsig} or {subreaper}:
    try:
        import ctypes as _ctypes
        _libc = _ctypes.CDLL(None, use_errno=True)
        if {pdeathsig}:
            _libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
        if {subreaper}:
            _libc.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphaned descendants stay our children
        del _libc, _ctypes
    except Exception:
        pass
import resource as _resource
for _name, _soft, _hard in {limits!r}:
    _res = getattr(_resource, _name, None)
    if _res is None:
        continue
    _cur = _resource.getrlimit(_res)[1]
    if _cur != _resource.RLIM_INFINITY:
        _hard = min(_hard, _cur)
        _soft = min(_soft, _hard)
    _resource.setrlimit(_res, (_soft, _hard))
_os.write(_fd, b"S")
_sys.argv = [{main!r}]
with open({main!r}, "rb") as _fh:
    _code = compile(_fh.read(), {main!r}, "exec", dont_inherit=True)
_main = type(_sys)("__main__")
_main.__file__ = {main!r}
_sys.modules["__main__"] = _main
exec(_code, _main.__dict__)
_os.write(_fd, {marker!r})
"""


def render_bootstrap(
    *,
    fd: int,
    main_path: str,
    marker: bytes,
    limits: list[tuple[str, int, int]],
    pdeathsig: bool,
    subreaper: bool = False,
) -> str:
    """Source of the bootstrap for one run.

    ``fd`` is the write end of the status pipe as numbered in the child, ``main_path`` where the program file
    is as seen from inside the sandbox, ``marker`` the random success marker. ``pdeathsig``: die with the
    parent (levels without bwrap's ``--die-with-parent``). ``subreaper``: the unprivileged ``subprocess`` level,
    where the runner can only find descendants by ancestry: a double-forked daemon is then re-parented to the
    program's first process instead of init while that process lives, so a scan still sees its ancestry.
    """
    return _TEMPLATE.format(
        fd=fd,
        main=main_path,
        marker=marker,
        limits=limits,
        pdeathsig=bool(pdeathsig),
        subreaper=bool(subreaper),
    )
