"""Finding and killing a run's processes, via /proc.

As root a run has a uid of its own, so :func:`kill_uid` ends exactly what it started. Unprivileged the program
shares the caller's uid, so :class:`Lineage` finds its processes by session, process group, ancestry and an
environment tag instead (best effort: docs/sandbox.md says what escapes).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

#: Environment variable carrying a run's random tag (unprivileged ``subprocess`` level).
RUN_TAG_VAR = "DTUNE_SANDBOX_RUN"


def _is_zombie(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return True  # gone meanwhile
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] in (b"Z", b"X")


def _pids_owned_by(uid: int) -> list[int]:
    """Every pid whose /proc entry is owned by ``uid`` (the effective uid), zombies and ourselves included."""
    found: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid == uid:
                found.append(int(name))
        except OSError:
            continue  # gone meanwhile
    return found


def pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) pids whose /proc entry is owned by ``uid`` (the effective uid), excluding ourselves.

    Zombies are skipped: they hold no resources, cannot be killed, and are reaped by their parent (bwrap's
    pid-namespace init is reparented to the host's init when bwrap exits, which reaps it a little later).
    """
    me = os.getpid()
    return [pid for pid in _pids_owned_by(uid) if pid != me and not _is_zombie(str(pid))]


def tasks_of_uid(uid: int) -> dict[int, int]:
    """Tasks (threads) per process of ``uid``, zombies and ourselves included: what RLIMIT_NPROC charges.

    The kernel counts every thread and every unreaped zombie of the uid; counting live processes instead left
    the program too few forks (``BlockingIOError: [Errno 11]`` on its first ``fork`` in CI).
    """
    found: dict[int, int] = {}
    for pid in _pids_owned_by(uid):
        try:
            found[pid] = max(1, len(os.listdir(f"/proc/{pid}/task")))
        except OSError:
            continue  # gone meanwhile
    return found


def count_tasks_of_uid(uid: int) -> int:
    """What RLIMIT_NPROC charges to ``uid`` now (see :func:`tasks_of_uid`): used to size that limit when the
    program shares the caller's uid."""
    return sum(tasks_of_uid(uid).values())


#: Zombies that outlived a whole `wait_for_reaping`: their parent doesn't reap (or not soon); not waited for again.
_UNREAPED: set[tuple[int, int]] = set()


def wait_for_reaping(uid: int, tolerate: int = 0, wait_s: float = 3.0) -> int:
    """Wait (up to ``wait_s``) until at most ``tolerate`` of the zombies of ``uid`` that someone else must reap are
    left; returns how many such zombies are left.

    Why: unprivileged, RLIMIT_NPROC is sized as "what the uid is charged now + the program's allowance", and the
    kernel charges zombies until they are reaped. The orphans of a run killed just before (reparented to an init
    that reaps every 1-2 s) would otherwise be counted at the start and freed mid-run, handing the next program
    their slots on top of its allowance. Our own unreaped children and zombies an earlier call already waited for
    in vain are skipped (a parent that never reaps costs one wait, not one per run). ``tolerate``: a few zombies
    freed mid-run loosen the limit by as many, not worth a wait (every bwrap run leaves one for init to reap).
    """
    me = os.getpid()
    deadline = time.monotonic() + wait_s
    while True:
        zombies: set[tuple[int, int]] = set()
        for pid in _pids_owned_by(uid):
            st = _read_stat(pid)
            if st is not None and st.zombie and st.ppid != me:
                zombies.add((pid, st.starttime))
        _UNREAPED.intersection_update(zombies)  # forget the ones reaped since (the memo stays small)
        pending = zombies - _UNREAPED
        if len(pending) <= tolerate:
            return len(zombies)
        if time.monotonic() >= deadline:
            _UNREAPED.update(pending)
            return len(zombies)
        time.sleep(0.01)


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


@dataclass(frozen=True)
class _Stat:
    ppid: int
    pgrp: int
    session: int
    starttime: int  # clock ticks since boot: with the pid, identifies a process across pid reuse
    zombie: bool


def _read_stat(pid: int) -> _Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()  # the command name may hold spaces and parentheses
    try:
        return _Stat(
            int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]), fields[0] in (b"Z", b"X")
        )
    except (IndexError, ValueError):
        return None


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return needle in fh.read().split(b"\0")
    except OSError:
        return False


def _signal_exact(pid: int, starttime: int, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to ``pid`` only if it is still the process that started at ``starttime``.

    A pidfd pins the process before the check, so a pid reused meanwhile by an unrelated process of the caller
    is never hit; without pidfds (kernel < 5.3) the window is one ``stat``.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):
        fd = -1
    try:
        st = _read_stat(pid)
        if st is None or st.starttime != starttime or st.zombie:
            return False
        if fd >= 0:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        if fd >= 0:
            os.close(fd)


class Lineage:
    """The processes of one unprivileged run (we share the program's uid): its first process, its session and
    process group, their descendants (ancestry seen once is kept) and any process carrying the run's environment
    tag. A process that leaves the session and group, ``exec``s with a new environment and is orphaned before the
    next scan escapes."""

    def __init__(self, root: int, tag: str) -> None:
        st = _read_stat(root)
        self.root = root
        self.tag = f"{RUN_TAG_VAR}={tag}".encode()
        self.uid = os.getuid()
        self.root_start = st.starttime if st else 0
        self.members: dict[int, int] = {root: self.root_start} if st else {}  # pid -> starttime

    def _candidates(self) -> dict[int, _Stat]:
        """Live processes of our uid that started no earlier than the run (nothing older can be its child)."""
        found: dict[int, _Stat] = {}
        me = os.getpid()
        try:
            names = os.listdir("/proc")
        except OSError:
            return found
        for name in names:
            if not name.isdigit() or int(name) == me:
                continue
            try:
                if os.stat(f"/proc/{name}").st_uid != self.uid:
                    continue
            except OSError:
                continue
            st = _read_stat(int(name))
            if st is not None and not st.zombie and st.starttime >= self.root_start:
                found[int(name)] = st
        return found

    def scan(self) -> dict[int, int]:
        """Add every live process that belongs to the run to :attr:`members`; returns the live members."""
        procs = self._candidates()
        live: dict[int, int] = {}
        for pid, st in procs.items():
            known = self.members.get(pid) == st.starttime
            if known or self.root in (st.session, st.pgrp) or _environ_has(pid, self.tag):
                live[pid] = st.starttime
        grown = True
        while grown:  # ancestry; ``live`` holds only processes alive now, so a reused ppid cannot match
            grown = False
            for pid, st in procs.items():
                if pid not in live and st.ppid in live:
                    live[pid] = st.starttime
                    grown = True
        self.members.update(live)
        return live

    def kill(self, wait_s: float = 2.0) -> list[int]:
        """SIGKILL every member, re-scanning for processes forked meanwhile, until none is left or ``wait_s``
        has passed; returns the members still alive then (normally none)."""
        deadline = time.monotonic() + wait_s
        while True:
            live = self.scan()
            if not live or time.monotonic() > deadline:
                return sorted(live)
            for pid, starttime in live.items():
                _signal_exact(pid, starttime)
            time.sleep(0.002)
