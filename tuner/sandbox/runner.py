"""Running one untrusted Python program under an isolation already chosen (:func:`run_isolated`).

The parent trusts the child for nothing: output is read in bounded chunks with a hard cap, the wall clock is
enforced here, on timeout the process group is SIGKILLed, afterwards everything the run started is ended and what
it left removed (:class:`_Reaper`), and success is a marker the bootstrap writes to a private pipe only after the
program's last line.
"""

from __future__ import annotations

import logging
import os
import secrets
import selectors
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from .bootstrap import BOOT_NAME, MAIN_NAME, render_bootstrap
from .commands import BOX_DIR, Isolation, bwrap_command, sandbox_env, subprocess_command
from .limits import Limits
from .procs import RUN_TAG_VAR, Lineage, count_tasks_of_uid, kill_uid, wait_for_reaping
from .result import ProgramResult, SandboxError
from .sweep import remove_run_dir, sweep_files_of_uid, sweep_ipc_of_uid
from .uids import claim_uid

log = logging.getLogger("tuner.sandbox")

#: processes bwrap itself keeps under the sandbox uid (the outer bwrap and the pid-namespace init).
_BWRAP_OWN_PROCESSES = 2
#: unprivileged: how many zombies awaiting someone else's reaping may be counted into RLIMIT_NPROC at a run's start
#: (each loosens the limit by one once reaped) before the run waits for them (procs.wait_for_reaping).
_ZOMBIE_SLACK = 4
_EXIT_GRACE_S = 0.2
#: How often an unprivileged ``subprocess`` run's descendants are recorded while it runs (and the longest
#: select() wait of the output pump).
_SCAN_INTERVAL_S = 0.05


class _Capture:
    """Keeps the first and last ``keep`` bytes of a stream and counts the rest."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.keep - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.keep:
                del self.tail[: len(self.tail) - self.keep]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        head = self.head.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        if self.truncated:
            omitted = self.total - len(self.head) - len(self.tail)
            return f"{head}\n[... {omitted} bytes omitted ...]\n{tail}"
        return head + tail


def _read_nonblocking(fd: int) -> bytes:
    os.set_blocking(fd, False)
    out = bytearray()
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            break
        if not chunk:
            break
        out += chunk
        if len(out) > 4096:  # only a start byte and a marker are expected
            break
    return bytes(out)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _last_line(text: str, limit: int = 300) -> str:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line:
            return line[:limit]
    return ""


def _signal_of(returncode: int, iso: Isolation) -> int | None:
    """Signal that ended the program, if the exit status says so (bwrap reports 128 + signal)."""
    if returncode < 0:
        return -returncode
    if iso.level == "bwrap" and 128 < returncode < 128 + 65:
        return returncode - 128
    return None


def _classify(
    *,
    rc: int | None,
    status_bytes: bytes,
    marker: bytes,
    timed_out: bool,
    overflow: bool,
    output: str,
    limits: Limits,
    iso: Isolation,
) -> tuple[str, str | None]:
    if overflow:
        return "crashed", f"output limit exceeded ({limits.max_output_bytes} bytes)"
    if timed_out:
        return "timeout", f"wall-clock timeout after {limits.timeout_s:g}s"
    assert rc is not None
    if not status_bytes.startswith(b"S"):
        sig = _signal_of(rc, iso)
        how = f"signal {sig}" if sig else f"exit status {rc}"
        return "crashed", f"sandbox or interpreter failed to start ({how}): {_last_line(output)}"
    if rc == 0:
        if marker in status_bytes:
            return "passed", None
        return "failed", "exited with status 0 before the end of the program (sys.exit/os._exit?)"
    sig = _signal_of(rc, iso)
    if sig is not None:
        if sig == signal.SIGXCPU:
            return "timeout", f"CPU time limit ({limits.cpu_seconds}s)"
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return "crashed", f"killed by {name}"
    last = _last_line(output)
    if "MemoryError" in last:
        return "crashed", f"memory limit ({limits.memory_mb} MiB): {last}"
    if "File too large" in last or "Errno 27" in last:
        return "crashed", f"file size limit ({limits.file_size_mb} MiB): {last}"
    return "failed", last or f"exit status {rc}"


def _prepare_dir(
    source: str, iso: Isolation, uid: int | None, limits: Limits, status_fd: int, marker: bytes, nproc: int
) -> tuple[str, str, list[str]]:
    """Temporary folder with the program and the bootstrap; returns (folder, work dir, argv)."""
    host_dir = tempfile.mkdtemp(prefix="dtune-sbx-")
    os.chmod(host_dir, 0o755)  # the sandbox uid must be able to read the program
    if iso.level == "bwrap":
        main_inside = f"{BOX_DIR}/{MAIN_NAME}"
        workdir = host_dir
    else:
        main_inside = os.path.join(host_dir, MAIN_NAME)
        workdir = os.path.join(host_dir, "work")
        os.mkdir(workdir, 0o700)
        if uid is not None:
            os.chown(workdir, uid, uid)
    boot = render_bootstrap(
        fd=status_fd,
        main_path=main_inside,
        marker=marker,
        limits=limits.rlimits(nproc),
        pdeathsig=iso.level != "bwrap",
        subreaper=iso.level == "subprocess" and uid is None,
    )
    for name, text in ((MAIN_NAME, source), (BOOT_NAME, boot)):
        path = Path(host_dir) / name
        path.write_text(text, encoding="utf-8")
        os.chmod(path, 0o644)
    if iso.level == "bwrap":
        argv = bwrap_command(iso, host_dir, limits.tmp_mb, BOOT_NAME)
    else:
        argv = subprocess_command(iso, host_dir, BOOT_NAME)
    return host_dir, workdir, argv


class _Reaper:
    """Ends everything one run started and removes what it left, as far as its level and our privilege allow.

    - bwrap: the pid namespace dies with the program (``--die-with-parent``, and the kernel kills a namespace
      whose init exits); its files live on a tmpfs that goes with it. As root, every process of the run's uid
      is killed as well (the outer bwrap and its namespace init run under it).
    - subprocess as root: every process of the run's throw-away uid (:func:`kill_uid`), then every file and
      SysV IPC object that uid owns in the world-writable places (:mod:`tuner.sandbox.sweep`).
    - subprocess unprivileged: the process group, then the run's :class:`Lineage` (session, group, ancestry,
      environment tag), scanned while the run goes on and again at the end; no file sweep (nothing can be
      told apart from the caller's own files), only the run folder, which is also its ``HOME`` and ``TMPDIR``.
    """

    def __init__(self, iso: Isolation, uid: int | None) -> None:
        self.iso = iso
        self.uid = uid
        self.tag = secrets.token_hex(16)
        self.tracks_lineage = uid is None and iso.level == "subprocess"
        self.lineage: Lineage | None = None
        self._next_scan = 0.0
        self.done = False

    def env(self, workdir: str) -> dict[str, str]:
        env = sandbox_env(self.iso, workdir)
        if self.iso.level == "subprocess":
            env[RUN_TAG_VAR] = self.tag
        return env

    def started(self, proc: subprocess.Popen[bytes]) -> None:
        if self.tracks_lineage:
            self.lineage = Lineage(proc.pid, self.tag)

    def tick(self) -> None:
        """While the program runs: record its descendants before they can lose their ancestry."""
        if self.lineage is not None and time.monotonic() >= self._next_scan:
            self.lineage.scan()
            self._next_scan = time.monotonic() + _SCAN_INTERVAL_S

    def finish(self, proc: subprocess.Popen[bytes] | None) -> None:
        """After the program's first process has exited (or was killed): end the rest, sweep what it left."""
        if self.done:
            return
        self.done = True
        if proc is not None:
            _kill_group(proc.pid)
        if self.uid is not None:
            kill_uid(self.uid)
            if self.iso.level == "subprocess":
                sweep_files_of_uid(self.uid)
                sweep_ipc_of_uid(self.uid)
        elif self.lineage is not None:
            left = self.lineage.kill()
            if left:
                log.warning(
                    "tuner.sandbox: processes %s of a sandbox run are still alive after SIGKILL", left
                )


def _run_once(source: str, limits: Limits, iso: Isolation, uid: int | None) -> ProgramResult:
    if uid is not None:
        nproc = limits.max_processes + (_BWRAP_OWN_PROCESSES if iso.level == "bwrap" else 0)
    else:  # we share the caller's uid: RLIMIT_NPROC counts the caller's processes too, and zombies until reaped
        wait_for_reaping(os.getuid(), _ZOMBIE_SLACK)  # an earlier run's orphans: not counted and then freed mid-run
        nproc = count_tasks_of_uid(os.getuid()) + limits.max_processes
        nproc += _BWRAP_OWN_PROCESSES if iso.level == "bwrap" else 0
    marker = b"DTUNE-OK-" + secrets.token_hex(16).encode()
    reaper = _Reaper(iso, uid)
    status_r, status_w = os.pipe()
    host_dir = None
    proc: subprocess.Popen[bytes] | None = None
    try:
        host_dir, workdir, argv = _prepare_dir(source, iso, uid, limits, status_w, marker, nproc)
        ids = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(status_w,),
                env=reaper.env(workdir),
                cwd=workdir,
                start_new_session=True,
                close_fds=True,
                **ids,
            )
        except OSError as exc:
            raise SandboxError(f"cannot start sandbox process {argv[0]!r}: {exc}") from exc
        reaper.started(proc)
        os.close(status_w)
        status_w = -1
        capture, timed_out, overflow = _pump(proc, limits, start, reaper.tick)
        if not (timed_out or overflow):
            # EOF does not mean the program ended (it may have closed its stdout): wait for it, within budget
            try:
                proc.wait(timeout=max(0.0, start + limits.timeout_s - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out or overflow:
            _kill_group(proc.pid)
        reaper.tick()
        rc = proc.wait()
        duration = time.monotonic() - start
        reaper.finish(proc)
        status_bytes = _read_nonblocking(status_r)
        output = capture.text()
        status, reason = _classify(
            rc=rc,
            status_bytes=status_bytes,
            marker=marker,
            timed_out=timed_out,
            overflow=overflow,
            output=output,
            limits=limits,
            iso=iso,
        )
        return ProgramResult(
            status=status,  # type: ignore[arg-type]
            output=output,
            returncode=rc,
            duration_s=duration,
            reason=reason,
            isolation=iso.level,
            output_truncated=capture.truncated,
        )
    finally:
        if proc is not None and proc.poll() is None:
            _kill_group(proc.pid)
            proc.wait()
        reaper.finish(proc)
        for fd in (status_r, status_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if host_dir is not None:
            remove_run_dir(host_dir)


def _pump(
    proc: subprocess.Popen[bytes], limits: Limits, start: float, tick: Callable[[], None]
) -> tuple[_Capture, bool, bool]:
    """Read the merged stdout/stderr until EOF, the deadline or the output cap, calling ``tick`` every loop.
    Returns (capture, timed_out, overflow)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    capture = _Capture(limits.excerpt_bytes)
    deadline = start + limits.timeout_s
    exit_grace_until: float | None = None
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            tick()
            now = time.monotonic()
            if now >= deadline:
                return capture, True, False
            if exit_grace_until is not None and now >= exit_grace_until:
                return capture, False, False  # exited; something it left behind still holds the pipe
            if sel.select(min(deadline - now, _SCAN_INTERVAL_S)):
                while True:
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    if not chunk:
                        return capture, False, False
                    capture.add(chunk)
                    if capture.total > limits.max_output_bytes:
                        return capture, False, True
            if exit_grace_until is None and proc.poll() is not None:
                exit_grace_until = time.monotonic() + _EXIT_GRACE_S


def run_isolated(source: str, limits: Limits, iso: Isolation) -> ProgramResult:
    """Run ``source`` once under the already resolved ``iso`` (claiming a throw-away uid for the run when
    ``iso.drop_uid``). Never raises for anything the program does; :class:`SandboxError` means the sandbox
    process could not be started or no throw-away uid is free."""
    with claim_uid() if iso.drop_uid else nullcontext(None) as uid:
        return _run_once(source, limits, iso, uid)
