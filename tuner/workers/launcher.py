"""`tuner run --n-workers N`: N worker processes of one study on this machine, one per GPU when there are GPUs.

Each worker is an ordinary `python -m tuner run` (the same command minus `--n-workers`), so it does exactly what a
worker started by hand on another machine does. The parent only prepares (creates the study and the MLflow
experiment first; gives worker i `cuda:i`, or on a CPU an equal share of the cores, since N processes each using
every core thrash) and supervises: it forwards SIGINT/SIGTERM and sums the exit codes up (docs/scale-out.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
from rich.console import Console

from ..app.context import Context
from ..base.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, TunerError
from ..storage.locks import StudyLock
from ..study.lifecycle import create_study, finished_count
from .worker import WorkerOptions

# Options of the parent command that each worker gets in its own form (or not at all).
_PARENT_ONLY = {"--n-workers": True, "--worker-index": True, "--device": True, "--no-progress": False,
                "--worker-child": False}


def cuda_count() -> int:
    """Visible CUDA devices (CUDA_VISIBLE_DEVICES applies); 0 without CUDA."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_n_workers(value: str | int) -> int | None:
    """`auto` is one worker per visible GPU (1 without CUDA); None for anything that isn't a positive count."""
    if str(value).strip().lower() == "auto":
        return max(1, cuda_count())
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n >= 1 else None


def worker_devices(n: int, device: str | None) -> list[str | None]:
    """The `--device` of each worker: an explicit `cuda:K` or `cpu` is shared by all; otherwise (none, or plain
    `cuda`) worker i gets `cuda:i mod #GPUs` when CUDA is present, else the loader's default."""
    if device not in (None, "cuda"):
        return [device] * n
    gpus = cuda_count()
    if gpus == 0:
        return [device] * n
    return [f"cuda:{i % gpus}" for i in range(n)]


@dataclass(frozen=True)
class Placement:
    """Where one worker runs: its `--device` and the environment that isolates it (its GPU alone visible, its share
    of the CPU threads)."""

    device: str | None
    env: dict[str, str]


def placements(devices: list[str | None], cores: int, visible: str | None = None) -> list[Placement]:
    """Per worker: a `cuda:K` device becomes `CUDA_VISIBLE_DEVICES=<the K-th of the parent's visible GPUs>` and
    `--device cuda` (its GPU is the only one it sees, so no library puts anything on GPU 0), and every worker gets
    `cores // n` CPU threads (N decode loops and the GP sampler's threads must not thrash the cores)."""
    threads = str(max(1, cores // max(1, len(devices))))
    ids = [v.strip() for v in visible.split(",")] if visible else None
    out = []
    for device in devices:
        env = {"OMP_NUM_THREADS": threads}
        if device and device.startswith("cuda:"):
            k = int(device.split(":", 1)[1])
            env["CUDA_VISIBLE_DEVICES"] = ids[k] if ids and k < len(ids) else str(k)
            device = "cuda"
        out.append(Placement(device, env))
    return out


def check_fits(devices: list[str | None], weight_bytes: int, gpu_bytes: dict[str, int]) -> None:
    """Refuse, in one line, workers that share a GPU with a model that can't be held twice there (its weights
    alone over ~45% of the GPU's memory): they would run out of memory mid-trial, not at start."""
    shared: dict[str, int] = {}
    for device in devices:
        if device and device.startswith("cuda"):
            shared[device] = shared.get(device, 0) + 1
    for device, count in shared.items():
        total = gpu_bytes.get(device)
        if count > 1 and total and count * weight_bytes > 0.9 * total:
            raise TunerError(f"{count} workers would share {device}, but the model's weights ({weight_bytes / 2**30:.1f} "
                             f"GiB) fit {device}'s {total / 2**30:.0f} GiB at most once with room to decode; use at "
                             "most one worker per GPU (--n-workers auto)")


def child_argv(argv: list[str], device: str | None, worker_index: int | None) -> list[str]:
    """The parent's `run` command line for one worker: parent-only options out, its device and index in."""
    out: list[str] = []
    skip = 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        name = arg.split("=", 1)[0]
        if name in _PARENT_ONLY:
            skip = 1 if (_PARENT_ONLY[name] and "=" not in arg) else 0
            continue
        out.append(arg)
    out.append("--worker-child")
    if device is not None:
        out += ["--device", device]
    if worker_index is not None:
        out += ["--worker-index", str(worker_index)]
    return out


PARENT_PID_ENV = "DTUNE_WORKER_PARENT_PID"


def stop_with_parent() -> None:
    """In a worker started by `--n-workers`: get SIGTERM when the parent dies (Linux), so a parent killed with
    SIGKILL (an OOM kill, a scheduler) doesn't leave its workers running on; SIGTERM re-queues the running trial.

    The parent's pid comes from the environment: had the parent died before this call, the request would
    never fire, so that case ends the worker at once.
    """
    parent = os.environ.get(PARENT_PID_ENV)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        return
    if os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)


def weight_bytes(ctx: Context) -> int:
    """The size of the checkpoint's weight files (what a worker holds on its GPU at the least)."""
    from decoder.loading import weight_files

    return sum(f.stat().st_size for f in weight_files(Path(ctx.model_source["path"])))


def gpu_memory(devices: list[str | None]) -> dict[str, int]:
    """Total memory of each CUDA device named (`cuda:K`)."""
    import torch

    return {d: torch.cuda.get_device_properties(int(d.split(":")[1])).total_memory
            for d in set(devices) if d and d.startswith("cuda:")}


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class SignalForwarder:
    """While active, SIGINT/SIGTERM reach every still-running worker (they run in their own sessions, so a
    terminal's Ctrl-C reaches them once, through here); `forwarded` says whether one came."""

    def __init__(self, procs: list[subprocess.Popen]) -> None:
        self.procs = procs
        self.forwarded = False
        self._previous: dict[int, Any] = {}

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        self.forwarded = True
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signum)

    def __enter__(self) -> SignalForwarder:
        self._previous = {sig: signal.signal(sig, self._forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def exit_lines(indices: list[int], pids: list[int], codes: list[int]) -> list[str]:
    """One line per worker that did not exit 0, naming it by its worker index (the one its own lines show)."""
    lines = []
    for index, pid, code in zip(indices, pids, codes, strict=True):
        if code != 0:
            why = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            lines.append(f"worker {index} (pid {pid}) {why}")
    return lines


def run_workers(ctx: Context, opts: WorkerOptions, argv: list[str], n: int,
                console: Console) -> tuple[int, optuna.Study | None]:
    """Prepare the study, start `n` workers, forward signals, wait; returns (exit code, the study)."""
    spec, name = ctx.spec, ctx.study_name
    ctx.open_tracker()  # fail fast, and create the experiment/DB once
    storage = ctx.open_storage(heartbeat_interval=opts.heartbeat_interval, grace_period=opts.grace_period)
    lock = StudyLock(storage, name)
    try:
        # The workers' indices are taken from the study here (or start at --worker-index) and handed to each
        # worker, so what this parent reports about worker i is what that worker's own lines call worker i.
        study, first = create_study(spec, storage, name, spec.seed, worker=opts.worker_index, lock=lock, reserve=n)
    finally:
        lock.close()
    done = finished_count(study)
    if done >= spec.trials:
        console.print(f"study {name}: budget of {spec.trials} trials already spent ({done} finished); nothing to do")
        return EXIT_OK, study

    devices = worker_devices(n, ctx.options.device)
    if any(d and d.startswith("cuda") for d in devices):
        check_fits(devices, weight_bytes(ctx), gpu_memory(devices))
    env = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
    procs: list[subprocess.Popen] = []
    indices = [first + i for i in range(n)]
    places = placements(devices, _cpu_count(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    for index, place in zip(indices, places, strict=True):
        cmd = [sys.executable, "-m", "tuner", *child_argv(argv, place.device, index)]
        own = {**env, **{k: v for k, v in place.env.items() if k not in os.environ or k == "CUDA_VISIBLE_DEVICES"}}
        procs.append(subprocess.Popen(cmd, env=own, start_new_session=True))
    where = ", ".join(sorted({d or "default device" for d in devices}))
    threads = f", OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS') or places[0].env['OMP_NUM_THREADS']} each"
    console.print(f"study {name}: started {n} workers (pids {', '.join(str(p.pid) for p in procs)}) on {where}"
                  f"{threads}; {done}/{spec.trials} trials finished")

    forwarder = SignalForwarder(procs)
    with forwarder:
        codes = [p.wait() for p in procs]

    finished = finished_count(study)
    lines = exit_lines(indices, [p.pid for p in procs], codes)
    failed = bool(lines)
    for line in lines:
        console.print(line)
    if forwarder.forwarded or any(c == EXIT_INTERRUPTED for c in codes):
        return EXIT_INTERRUPTED, study
    if finished >= spec.trials:
        if failed:
            console.print(f"the study holds its {spec.trials} trials all the same (the others retried what was lost)")
        return EXIT_OK, study
    console.print(f"study {name}: {finished}/{spec.trials} trials finished; run the same command to go on")
    return (EXIT_ERROR if failed else EXIT_OK), study
