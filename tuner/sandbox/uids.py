"""A pool of throw-away uids, one per concurrent sandbox run (only when we are root).

Why not the classic single ``nobody`` uid: RLIMIT_NPROC counts *all* processes of a uid system-wide, so with one
shared uid a fork bomb in one sandbox would make every other concurrent sandbox fail to start, and the
after-run "kill everything of this uid" sweep would hit neighbours. A uid per run makes both exact.

Uids are claimed with ``flock`` on a lock file per uid, so several scoring processes on one machine never
share one; a uid that has a passwd entry or live processes is skipped (it belongs to someone else). Locks are
released by the kernel if the holder dies.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import random
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .procs import pids_of_uid
from .result import SandboxError

#: First uid of the pool; chosen far above login uids and the usual /etc/subuid ranges (100000 + 65536*k).
DEFAULT_UID_BASE = 1_500_000_000
DEFAULT_UID_COUNT = 256

_local_lock = threading.Lock()
_in_use: set[int] = set()


def _uid_range() -> range:
    base = int(os.environ.get("DTUNE_SANDBOX_UID_BASE", DEFAULT_UID_BASE))
    count = int(os.environ.get("DTUNE_SANDBOX_UID_COUNT", DEFAULT_UID_COUNT))
    return range(base, base + count)


def _lock_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "dtune-sandbox-uids"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _has_passwd_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


@contextmanager
def claim_uid() -> Iterator[int]:
    """Yield a uid no other sandbox (in this or another process) uses until the block exits."""
    uids = list(_uid_range())
    start = random.randrange(len(uids))
    lock_dir = _lock_dir()
    for uid in uids[start:] + uids[:start]:
        with _local_lock:
            if uid in _in_use:
                continue
            _in_use.add(uid)
        fd = os.open(lock_dir / f"{uid}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            with _local_lock:
                _in_use.discard(uid)
            continue
        try:
            if _has_passwd_entry(uid) or pids_of_uid(uid):
                continue
            yield uid
            return
        finally:
            os.close(fd)  # releases the flock
            with _local_lock:
                _in_use.discard(uid)
    raise SandboxError(
        f"no free sandbox uid in {uids[0]}..{uids[-1]} (all locked or in use); "
        "set DTUNE_SANDBOX_UID_BASE / DTUNE_SANDBOX_UID_COUNT to another free range"
    )
