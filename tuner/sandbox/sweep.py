"""Removing what a run left on the host outside its own folder (the ``subprocess`` level; bwrap needs none).

As root, a run's throw-away uid owns nothing before the run, so once its processes are dead every file it owns in
the world-writable places (:data:`SWEPT_DIRS`, the temp dir) and every SysV IPC object it created is what the
program left. Removal goes through directory file descriptors, never through paths the program could have replaced
by symlinks. Unprivileged nothing can be told apart from the caller's own, so only the run folder goes
(:func:`remove_run_dir`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import stat
import tempfile

log = logging.getLogger("tuner.sandbox")

#: World-writable places a throw-away uid can leave files in (those that exist are walked).
SWEPT_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/dev/mqueue", "/run/shm")
_IPC_RMID = 0


def swept_dirs() -> list[str]:
    """The existing places from :data:`SWEPT_DIRS` and this process's temp dir, each once (by real path)."""
    out: list[str] = []
    for path in (*SWEPT_DIRS, tempfile.gettempdir()):
        real = os.path.realpath(path)
        if os.path.isdir(real) and real not in out:
            out.append(real)
    return out


def _sweep_dir(dir_fd: int, uid: int, where: str, depth: int, removed: list[str]) -> None:
    try:
        entries = list(os.scandir(dir_fd))
    except OSError:
        return
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        path = f"{where}/{entry.name}"
        try:
            if st.st_uid == uid:
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(entry.name, dir_fd=dir_fd)
                else:
                    os.unlink(entry.name, dir_fd=dir_fd)
                removed.append(path)
            elif stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_IWOTH and depth < 32:
                fd = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
                try:
                    _sweep_dir(fd, uid, path, depth + 1, removed)
                finally:
                    os.close(fd)
        except OSError as exc:
            log.warning("tuner.sandbox: cannot remove %s left by sandbox uid %d: %s", path, uid, exc)


def sweep_files_of_uid(uid: int) -> list[str]:
    """Remove everything ``uid`` owns in the world-writable places; returns the removed paths."""
    if uid in (0, os.getuid()):
        raise ValueError("refusing to sweep the files of the caller's uid or root")
    removed: list[str] = []
    for place in swept_dirs():
        try:
            fd = os.open(place, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            _sweep_dir(fd, uid, place.rstrip("/"), 0, removed)
        finally:
            os.close(fd)
    return removed


def _ipc_ids_of_uid(kind: str, uid: int) -> list[int]:
    """Ids of the SysV IPC objects (``kind`` = shm, sem or msg) owned or created by ``uid``."""
    try:
        with open(f"/proc/sysvipc/{kind}") as fh:
            header, *rows = fh.read().splitlines()
    except OSError:
        return []
    cols = header.split()
    id_col = next(
        (i for i, c in enumerate(cols) if c.endswith("id") and c not in ("uid", "gid", "cuid", "cgid")), 1
    )
    owners = [cols.index(c) for c in ("uid", "cuid") if c in cols]
    ids = []
    for row in rows:
        vals = row.split()
        try:
            if any(int(vals[i]) == uid for i in owners):
                ids.append(int(vals[id_col]))
        except (IndexError, ValueError):
            continue
    return ids


def sweep_ipc_of_uid(uid: int) -> list[str]:
    """Remove the SysV shared memory segments, semaphore sets and message queues of ``uid``; returns them as
    ``"shm:<id>"`` etc."""
    if uid in (0, os.getuid()):
        raise ValueError("refusing to sweep the IPC objects of the caller's uid or root")
    found = {kind: _ipc_ids_of_uid(kind, uid) for kind in ("shm", "sem", "msg")}
    if not any(found.values()):
        return []
    libc = ctypes.CDLL(None, use_errno=True)
    removed = []
    for kind, ids in found.items():
        for ipc_id in ids:
            if kind == "shm":
                rc = libc.shmctl(ipc_id, _IPC_RMID, None)
            elif kind == "sem":
                rc = libc.semctl(ipc_id, 0, _IPC_RMID)
            else:
                rc = libc.msgctl(ipc_id, _IPC_RMID, None)
            if rc == 0:
                removed.append(f"{kind}:{ipc_id}")
            else:
                log.warning(
                    "tuner.sandbox: cannot remove SysV %s %d of sandbox uid %d: errno %d",
                    kind,
                    ipc_id,
                    uid,
                    ctypes.get_errno(),
                )
    return removed


def remove_run_dir(path: str) -> bool:
    """Delete a run's folder; True if it is gone.

    Unprivileged, the program owns its files and may have made directories unreadable or unwritable
    (``chmod 000``), which stops a plain ``rmtree``: those are made ``0o700`` again (we own them) and the
    removal retried. Root needs no such step.
    """
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
        return True
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass
    for root, dirs, _ in os.walk(path):  # top-down: each child is fixed before the walk lists it
        for name in dirs:
            full = os.path.join(root, name)
            try:
                if not os.path.islink(full):
                    os.chmod(full, 0o700)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        log.warning("tuner.sandbox: could not remove the run folder %s", path)
        return False
    return True
