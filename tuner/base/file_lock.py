"""Inter-process locks on a file beside a SQLite database, for the set-up steps that SQLite can't serialise itself.

Optuna's and MLflow's first use of a fresh SQLite file (schema creation, migrations) and our own once-only steps
(enqueuing references, creating a study's parent run) race when several workers start together. `flock` is
released by the kernel when its holder dies, so a killed worker can't wedge the others; a holder that hangs is
waited out for a bounded time, after which the caller goes on unlocked and relies on its own re-checks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

try:  # POSIX only; elsewhere every lock is reported as not held and callers take their unlocked path
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["acquire", "held_lock", "lock_path_beside", "release"]


def lock_path_beside(url: str, suffix: str) -> Path | None:
    """`<db><suffix>` beside the SQLite file of a SQLAlchemy `url`; None for other databases and in-memory ones.

    The path is made absolute now: a later chdir must not move the lock.
    """
    from .urls import sqlite_file

    path = sqlite_file(url)
    return None if path is None else path.with_name(path.name + suffix)


def acquire(fh: IO, timeout_s: float, poll_s: float = 0.02) -> bool:
    """Take an exclusive `flock` on the open file `fh`, polling for up to `timeout_s`; whether it is held."""
    if fcntl is None:
        return False
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)


def release(fh: IO) -> None:
    """Release a lock taken by `acquire` and close its file (closing alone would release it too)."""
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fh, fcntl.LOCK_UN)
    fh.close()


@contextlib.contextmanager
def held_lock(path: Path | None, timeout_s: float) -> Iterator[bool]:
    """Hold the lock file `path` for the block; yields whether it is held (False: no path, no flock, timed out)."""
    if path is None or fcntl is None:
        yield False
        return
    try:
        fh = open(path, "a+")  # noqa: SIM115 - closed in the finally below
    except OSError:
        yield False
        return
    try:
        yield acquire(fh, timeout_s)
    finally:
        release(fh)
