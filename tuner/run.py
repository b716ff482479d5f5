"""`tuner run`: load a spec, the model and the validation split, then run (or resume) the study with progress bars,
MLflow tracking after every trial, and the Pareto table at the end.

One process is one worker. Any number of workers, on any machines, can run the same command against one shared
storage (README "Scale out"): each claims one trial at a time under the study lock until the study holds its
budget of finished trials, waits (retrying dead workers' trials) while the last ones run, then exits.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from decoder import load_model

from . import hardware
from .evaluate import Evaluator
from .redact import redact_url
from .spec import StudySpec
from .storage import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_STORAGE,
    StorageError,
    StudyLock,
    first_line,
    is_transient,
    open_storage,
    stale_handler,
)
from .study import (
    Objective,
    budget_counts,
    create_study,
    default_study_name,
    fail_stale_trials,
    finished_count,
    requeue,
    trial_points,
)
from .tasks import get_task
from .tracking import Backlog, Tracker

log = logging.getLogger(__name__)


_interrupted = threading.Event()


def request_interrupt(signum: int | None = None, frame: Any = None) -> None:
    """SIGINT/SIGTERM handler: raise KeyboardInterrupt now, and remember it. Python swallows a KeyboardInterrupt
    that lands inside a finalizer (`Exception ignored in ... __del__`), so the worker also checks the flag after
    every evaluated chunk and between trials, and a Ctrl-C is never lost."""
    _interrupted.set()
    raise KeyboardInterrupt


def _check_interrupt() -> None:
    if _interrupted.is_set():
        raise KeyboardInterrupt


class WorkerError(RuntimeError):
    """This worker can't go on (its trials keep failing); the study and its finished trials are intact."""


@dataclass
class RunOptions:
    storage: str = DEFAULT_STORAGE
    tracking_uri: str | None = None
    study_name: str | None = None
    device: str | None = None
    data_dir: str | None = None
    # Seconds between a running trial's heartbeats; a trial without one for `grace_period` (default 3
    # intervals) is failed and retried by another worker. 10 s costs one tiny write per running trial every
    # 10 s and retries a dead worker's trial after ~30 s. Also on for SQLite: it frees a killed run's trial.
    heartbeat_interval: int = DEFAULT_HEARTBEAT_S
    grace_period: int | None = None
    # Refresh the parent run's artifacts every N finished trials (and at the end): pareto.html embeds plotly
    # (~5 MB), so refreshing after every short trial costs a few percent of its time.
    refresh_every: int = 5
    # Sampler seed offset; None: the study allocates the next free index (distinct seeds on every machine).
    worker: int | None = None
    show_progress: bool = True
    # Print one line per finished trial (workers started by --n-workers, whose progress bars would interleave).
    log_trials: bool = False
    # Stop this worker after this many of its own trials failed in a row (say, CUDA out of memory every time).
    max_consecutive_failures: int = 3


def load_task(spec: StudySpec, data_dir: str | None):
    options = dict(spec.task_options)
    if spec.few_shot is not None:
        options["num_fewshot"] = spec.few_shot
    return get_task(spec.task, data_dir=data_dir, **options)


def experiment_name(spec: StudySpec) -> str:
    return f"dtune-{spec.task}"


def study_params(spec: StudySpec, model, task, split_info, hw: dict[str, str]) -> tuple[dict, dict]:
    """Parent-run params (what the study searched and on what) and tags (where it ran)."""
    params: dict[str, Any] = {
        "task": spec.task, "model": spec.model, "model_fingerprint": model.source.get("fingerprint"),
        "model_revision": model.source.get("revision"), "chat_template": spec.chat_template,
        "validation_size": split_info.size, "validation_hash": split_info.content_hash,
        "sampler": spec.sampler, "trials": spec.trials, "constraint_baseline": spec.constraint.baseline,
        "constraint_max_drop": spec.constraint.max_drop, "spec_fingerprint": spec.fingerprint(),
        **{f"decode.{k}": v for k, v in spec.decode.items()},
        **{f"space.{k.name}": list(k.choices) if k.is_categorical else [k.low, k.high] for k in spec.search_space},
    }
    tags = {f"hw.{k}": v for k, v in hw.items()}
    return params, tags


def run(spec: StudySpec, opts: RunOptions, console: Console | None = None) -> optuna.Study:
    """Work on the study until it holds `spec.trials` finished (complete or pruned) trials, creating or resuming it.

    Safe to start any number of times against one storage: a worker started after the budget is spent exits at
    once, and one started while the last trials run waits for them (retrying a dead worker's trial) before exiting.
    """
    console = console or Console(stderr=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = opts.study_name or default_study_name(spec)
    # Fail fast on bad services before loading a multi-GB model.
    tracker = Tracker.open(opts.tracking_uri, experiment_name(spec))
    storage = open_storage(opts.storage, heartbeat_interval=opts.heartbeat_interval, grace_period=opts.grace_period)
    lock = StudyLock(storage, name)
    try:
        return _run(spec, opts, console, name, tracker, storage, lock)
    finally:
        lock.close()


def _run(spec: StudySpec, opts: RunOptions, console: Console, name: str, tracker: Tracker,
         storage: optuna.storages.RDBStorage, lock: StudyLock) -> optuna.Study:
    study, worker = create_study(spec, storage, name, spec.seed, worker=opts.worker, lock=lock)
    done = finished_count(study)
    if done >= spec.trials:
        console.print(f"study {name}: budget of {spec.trials} trials already spent ({done} finished); nothing to do")
        return study

    task = load_task(spec, opts.data_dir)
    items = task.load("validation")
    if spec.validation_size is not None:
        items = items[: spec.validation_size]
    split = task.split_info("validation")
    model, tokenizer = load_model(spec.model, device=opts.device)
    hw = hardware.describe(model.device)
    evaluator = Evaluator(model, tokenizer, task, chat_template=spec.chat_template, batch_size=spec.batch_size)
    params, tags = study_params(spec, model, task, split, hw)
    params["validation_items_used"] = len(items)
    with lock:  # one parent run however many workers start together (the server has no create-if-absent)
        parent = tracker.parent_run(name, params=params, tags={**tags, "dtune.storage": redact_url(opts.storage)})
        if parent and study.user_attrs.get("mlflow_parent_run_id") != parent:
            study.set_user_attr("mlflow_parent_run_id", parent)
    label = f"worker {worker} ({socket.gethostname()}:{os.getpid()})"
    console.print(f"study [bold]{name}[/] · {spec.task} on {spec.model} · {len(items)} validation items · "
                  f"{hardware.summary(hw)} · {finished_count(study)}/{spec.trials} trials finished · {label}")

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), console=console, disable=not opts.show_progress, transient=False)
    trials_bar = progress.add_task("trials", total=spec.trials, completed=done, info="")
    items_bar = progress.add_task("  items", total=len(items), info="")

    def on_trial_start(number: int, config) -> None:
        knobs = ", ".join(f"{k}={v}" for k, v in config.normalized().to_dict().items()
                          if k in {"mode", "window", "threshold", "alpha", "early_exit", "block_size"})
        progress.reset(items_bar, total=len(items), info=f"trial {number}: {knobs}")

    def on_progress(seen: int, total: int, correct: int) -> None:
        _check_interrupt()
        progress.update(items_bar, completed=seen, info=f"acc {correct / max(seen, 1):.1%}")

    failures = [0]

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        failures[0] = failures[0] + 1 if trial.state == optuna.trial.TrialState.FAIL else 0
        finished = finished_count(study)
        progress.update(trials_bar, completed=finished)
        if opts.log_trials:
            m = trial.user_attrs.get("metrics", {})
            console.print(f"{label}: trial {trial.number} {trial.state.name}"
                          + (f" · accuracy {m['accuracy']:.1%} · {m['tokens_per_s']:.1f} tokens/s" if m else ""))
        backlog.submit(_log_trial, tracker, parent, trial)
        if parent and finished % opts.refresh_every == 0:
            backlog.submit(tracker.refresh_study_artifacts, parent, trial_points(study), title=name,
                          accuracy_scale=knee_scale)

    backlog = Backlog()  # MLflow logging off the trial loop's thread
    knee_scale = spec.constraint.max_drop / 100
    handler = stale_handler(study._storage)
    if handler is not None:  # the worker that notices a dead worker's trial logs it as failed
        handler.listeners.append(lambda trial: backlog.submit(_log_trial, tracker, parent, trial))
    objective = Objective(spec, evaluator, items, on_progress=on_progress, on_trial_start=on_trial_start)

    def claimed(trial: optuna.Trial) -> tuple[float, float]:
        lock.release()  # the trial exists now and counts as running: let the next worker claim
        trial.set_user_attr("worker", label)
        return objective(trial)

    try:
        with progress:
            _work(study, spec.trials, claimed, after_trial, lock, opts, console, failures)
        if parent:
            backlog.submit(tracker.refresh_study_artifacts, parent, trial_points(study), title=name,
                          accuracy_scale=knee_scale)
    finally:
        backlog.close()  # interrupted or not, what finished is logged before the run returns
    return study


def _work(study: optuna.Study, budget: int, objective, after_trial, lock: StudyLock, opts: RunOptions,
          console: Console, failures: list[int]) -> None:
    """Claim and run trials one at a time until the study holds `budget` finished trials.

    A claim is atomic under the study lock: count finished + running trials and, if they leave room, ask Optuna
    for a trial (a re-queued or enqueued WAITING trial first). When the running trials of other workers fill
    the budget, wait and look again: one of them may die and be re-queued, and must not be left behind.
    """
    poll_s = max(1.0, min(5.0, float(opts.heartbeat_interval or 5)))
    waiting_since: float | None = None
    mine: list[int] = []  # the number of the trial this worker claimed last

    def numbered(trial: optuna.Trial) -> tuple[float, float]:
        mine[:] = [trial.number]
        return objective(trial)

    while True:
        _check_interrupt()
        mine.clear()
        try:
            lock.acquire()
            try:
                fail_stale_trials(study)
                finished, before = budget_counts(study)
                if finished >= budget:
                    return
                if finished + len(before) < budget:
                    waiting_since = None
                    try:
                        study.optimize(numbered, n_trials=1, callbacks=[after_trial], catch=(RuntimeError,),
                                       gc_after_trial=False)
                    except KeyboardInterrupt:
                        # Ctrl-C/SIGTERM in the middle of a trial, or before it even started (while the sampler
                        # proposed it): queue it again rather than leave it failed or, worse, running.
                        _requeue_mine(study, mine, before)
                        raise
                    except Exception:
                        if not _interrupted.is_set():
                            raise
                        # The interrupt landed in Optuna's own write of the trial's outcome, and Optuna's clean-up
                        # then failed reading a state it never got (UnboundLocalError in optuna's _run_trial): the
                        # trial is still RUNNING. An interrupt all the same.
                        _requeue_mine(study, mine, before)
                        raise KeyboardInterrupt from None
                    if failures[0] >= opts.max_consecutive_failures:
                        raise WorkerError(f"{failures[0]} trials in a row failed on this worker (see the warnings "
                                          "above); stopping it — the study and its finished trials are kept")
                    continue
            finally:
                lock.release()
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError) as exc:
            if not (_taken_over(exc) and mine):
                raise
            # Its heartbeat went stale while it ran (a stalled machine, a long storage outage): another worker
            # failed and re-queued it, so its retry will hold the result (optuna#5470's "Cannot tell a FAIL trial").
            console.print(f"trial {mine[0]} was failed and re-queued by another worker while this one ran it; "
                          "going on")
            continue
        except Exception as exc:
            if is_transient(exc):
                raise StorageError(f"lost the study storage {redact_url(opts.storage)}: {first_line(exc)}") from None
            raise
        if waiting_since is None:
            waiting_since = time.monotonic()
            console.print(f"{budget - finished} trial(s) still running on other workers; waiting for them "
                          "(a dead worker's trial is re-queued once its heartbeat is stale)")
        time.sleep(poll_s)


def _requeue_mine(study: optuna.Study, mine: list[int], before: set[int]) -> None:
    """Re-queue this worker's interrupted trial: the one its objective ran, or else the trial its claim created
    (claims are serialised by the study lock, so a trial that appeared during it is this worker's)."""
    numbers = list(mine) or [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                             if t.number not in before]
    for number in numbers[:1]:
        try:
            requeue(study, number)
        except Exception as exc:  # noqa: BLE001 - best effort on the way out; a stale trial is retried anyway
            log.warning("could not re-queue interrupted trial %d: %s", number, first_line(exc))


def _taken_over(exc: BaseException) -> bool:
    """Did Optuna refuse to finish this worker's trial because another worker already failed it as stale?

    Optuna then raises "Cannot tell a FAIL trial." from its tell (optuna#5470), or UpdateFinishedTrialError from
    a write; any other error is the objective's own and must surface.
    """
    if isinstance(exc, optuna.exceptions.UpdateFinishedTrialError):
        return True
    return isinstance(exc, ValueError) and str(exc).startswith("Cannot tell a ")


def _log_trial(tracker: Tracker, parent: str | None, trial: optuna.trial.FrozenTrial) -> None:
    if not parent:
        return
    metrics = dict(trial.user_attrs.get("metrics", {}))
    metrics.update({f"constraint_{k}": v for k, v in (trial.constraints or {}).items()})
    tags = {"state": trial.state.name, "reference": trial.user_attrs.get("reference") or "",
            "config_key": trial.user_attrs.get("config_key", ""),
            "duplicate_of": str(trial.user_attrs.get("duplicate_of", "")),
            "retry_of": str(trial.system_attrs.get("failed_trial", "")), "worker": trial.user_attrs.get("worker", "")}
    params = {**trial.params, **{f"config.{k}": v for k, v in trial.user_attrs.get("config", {}).items()}}
    tracker.log_trial(parent, trial.number, params=params, metrics=metrics, tags=tags, state=trial.state.name)
