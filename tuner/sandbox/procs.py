"""Finding and killing processes by uid, via /proc.

Each sandbox run gets a uid of its own (see :mod:`tuner.sandbox.uids`), so "every process of that uid" is
exactly "everything the program started", including children that escaped the process group with
``setsid``. Cheap: one ``stat`` per process.
"""

from __future__ import annotations

import os
import signal
import time


def _is_zombie(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return True  # gone meanwhile
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] in (b"Z", b"X")


def pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) pids whose /proc entry is owned by ``uid`` (the effective uid), excluding ourselves.

    Zombies are skipped: they hold no resources, cannot be killed, and are reaped by their parent (bwrap's
    pid-namespace init is reparented to the host's init when bwrap exits, which reaps it a little later).
    """
    me = os.getpid()
    found: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == me:
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid == uid and not _is_zombie(name):
                found.append(pid)
        except OSError:
            continue
    return found


def count_processes_of_uid(uid: int) -> int:
    """Number of live processes of ``uid`` (used to size RLIMIT_NPROC when we share the caller's uid)."""
    return len(pids_of_uid(uid)) + (1 if os.getuid() == uid else 0)


def kill_uid(uid: int, wait_s: float = 2.0) -> int:
    """SIGKILL every process of ``uid`` and wait (up to ``wait_s``) until none is left alive, re-killing
    processes forked meanwhile. The wait matters because the uid is handed to the next run afterwards, and
    RLIMIT_NPROC would count processes that are still dying.

    Never call this for the caller's own uid: it would kill the caller's other processes.
    Returns the number of kill calls that succeeded.
    """
    if uid == os.getuid() or uid == 0:
        raise ValueError("refusing to kill every process of the caller's uid or root")
    killed = 0
    deadline = time.monotonic() + wait_s
    while True:
        pids = pids_of_uid(uid)
        if not pids or time.monotonic() > deadline:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.002)
