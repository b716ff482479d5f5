"""The argv and environment of one sandboxed run, for an isolation already chosen (docs/sandbox.md, "Levels").

Pure functions of a resolved :class:`Isolation` (no probe, cache, environment variable or process), so the runner
and :mod:`tuner.sandbox.levels`, which probes through the runner, can both use them without depending on each
other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
    """A resolved level and what it needs: the ``bwrap`` binary (or None), the interpreter to run inside, and
    whether each run switches to a throw-away uid (only possible as root)."""

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
    """argv of the ``subprocess`` level (the program folder is used in place)."""
    return [iso.python, "-I", "-B", "-u", os.path.join(host_dir, boot_name)]


def sandbox_env(iso: Isolation, workdir: str) -> dict[str, str]:
    """Environment of one run: :data:`SCRUBBED_ENV`; at the ``subprocess`` level ``HOME`` and ``TMPDIR`` point
    into the run's own folder, so that well-behaved temporary files go where the clean-up removes them (inside
    bwrap ``/tmp`` is the run's own tmpfs already)."""
    env = dict(SCRUBBED_ENV)
    if iso.level == "subprocess":
        env["HOME"] = env["TMPDIR"] = workdir
    return env
