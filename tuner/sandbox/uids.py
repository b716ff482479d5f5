"""A pool of throw-away uids, one per concurrent sandbox run (only when we are root).

One uid per run, not a shared ``nobody``: RLIMIT_NPROC counts every process of a uid system-wide, so a fork bomb
in one sandbox would starve its neighbours, and "kill everything of this uid" after a run would hit them. A uid is
claimed with a ``flock`` of its own (released by the kernel if the holder dies); one with a passwd entry or live
processes is skipped.
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
