"""The script that runs first inside the sandbox: rlimits, a start byte, the program as ``__main__``, the marker.

Limits set here, in the sandboxed interpreter, are the same at every level (no ``preexec_fn``, unsafe with threads;
no ``prlimit`` binary). The success marker, written after the program's last line, catches accidental early exits
(``sys.exit(0)``), not a program written to forge a pass (docs/sandbox.md, "Score integrity").
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
