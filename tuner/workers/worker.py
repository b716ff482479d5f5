"""One worker of a study: claim a trial, run it, repeat until the study holds its budget, then wait for the last
running trials (retrying a dead worker's) and exit.

Any number of workers, on any machines, run the same command against one shared storage (docs/scale-out.md). The
study lock (`tuner.storage.locks.StudyLock`) is taken and released here only: around study set-up, the MLflow
parent run, and each claim (count finished + running trials, ask Optuna for one), released as soon as the claimed
trial exists so the next worker can claim while this one evaluates.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as BarProgress

from decoder.config import DecodeConfig

from ..app.context import Context
from ..app.preflight import WORKER, preflight
from ..base import hardware
from ..base.errors import TunerError, db_error
from ..base.urls import redact_url
from ..report.lines import SHOWN_KNOBS, trial_line
from ..storage.database import DEFAULT_HEARTBEAT_S
from ..storage.errors import StorageError
from ..storage.locks import StudyLock, held_study_lock
from ..storage.optuna_internals import backend, study_id
from ..storage.record import StudyRecord, TrialRecord, TrialWriter
from ..storage.resilience import is_transient
from ..storage.retry import stale_handler
from ..storage.shared_ledger import adopt, study_ledger
from ..study.baseline import BaselineLedger
from ..study.lifecycle import budget_counts, create_study, fail_stale_trials, finished_count, requeue
from ..study.objective import LedgerFactory, Objective
from ..study.plan import format_plan
from ..tracking import Backlog, Tracker
from ..tracking.store import run_link
from .interrupts import interrupts
from .parking import park
from .planning import Progress, study_plan
from .study_tracking import StudyTracking, study_params

log = logging.getLogger(__name__)

class WorkerError(TunerError):
    """This worker can't go on (its trials keep failing); the study and its finished trials are intact."""


@dataclass(frozen=True)
class WorkerOptions:
    # Seconds between a running trial's heartbeats; a trial without one for `grace_period` (default 3
    # intervals) is failed and retried by another worker. 10 s costs one tiny write per running trial every
    # 10 s and retries a dead worker's trial after ~30 s. Also on for SQLite: it frees a killed run's trial.
    heartbeat_interval: int = DEFAULT_HEARTBEAT_S
    grace_period: int | None = None
    # Refresh the parent run's artifacts every N finished trials (and at the end): pareto.html embeds plotly
    # (~5 MB), so refreshing after every short trial costs a few percent of its time.
    refresh_every: int = 5
    # Sampler seed offset; None: the study allocates the next free index (distinct seeds on every machine).
    worker_index: int | None = None
    show_progress: bool = True
    # Print one line per finished trial: workers started by --n-workers (whose progress bars would interleave) and
    # any run whose stderr is not a terminal (a log file shows a progress bar only once it ends).
    log_trials: bool = False
    # Stop this worker after this many of its own trials failed in a row (say, CUDA out of memory every time).
    max_consecutive_failures: int = 3


class Worker:
    """Works on one study until it holds `spec.trials` finished (complete or pruned) trials.

    Safe to start any number of times against one storage: a worker started after the budget is spent exits at
    once, and one started while the last trials run waits for them (retrying a dead worker's trial) before exiting.
    """

    def __init__(self, ctx: Context, options: WorkerOptions, console: Console | None = None) -> None:
        self.ctx, self.options = ctx, options
        self.console = console or Console(stderr=True)
        self.label = ""
        self.failures = 0  # this worker's trials that failed in a row
        self.mine: int | None = None  # the number of the trial this worker runs now
        self.returned = False  # its objective returned (or stopped it early): the outcome was this worker's to tell
        self.taken = False  # its trial was finished by another worker while the objective ran
        self.study: optuna.Study | None = None
        self.lock: StudyLock | None = None
        # Set up by `run` once the study needs work:
        self.tracking: StudyTracking | None = None
        self.backlog: Backlog | None = None
        self.objective: Callable[[optuna.Trial], tuple[float, float]] | None = None
        self.progress: BarProgress | None = None
        self.pace: Progress | None = None  # what was decoded since the plan, for the ETA
        self.trials_bar = self.items_bar = self.n_items = 0

    # ------------------------------------------------------------------------------------------- run
    def run(self) -> optuna.Study:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Fail fast on bad services before loading a multi-GB model.
        tracker = self.ctx.open_tracker()
        storage = self.ctx.open_storage(heartbeat_interval=self.options.heartbeat_interval,
                                        grace_period=self.options.grace_period)
        self.lock = StudyLock(storage, self.ctx.study_name)
        try:
            return self._run(tracker, storage)
        finally:
            self.lock.close()

    def _run(self, tracker: Tracker, storage: optuna.storages.RDBStorage) -> optuna.Study:
        spec, name, console = self.ctx.spec, self.ctx.study_name, self.console
        assert self.lock is not None
        study, index = create_study(spec, storage, name, spec.seed, worker=self.options.worker_index, lock=self.lock)
        self.study = study
        done = finished_count(study)
        if done >= spec.trials:
            console.print(f"study {name}: budget of {spec.trials} trials already spent ({done} finished); nothing to do")
            # Every worker may have died before closing the study's MLflow run: converge now.
            StudyTracking(self.ctx, tracker, self.lock, StudyRecord(study).parent_run_id).finish(study)
            return study

        preflight(self.ctx, WORKER)
        items = self.ctx.items("validation")
        split = self.ctx.task.split_info("validation")
        evaluator = self.ctx.evaluator
        hw = hardware.describe(self.ctx.model.device)
        params, tags = study_params(self.ctx, split.size, split.content_hash, hw)
        params["validation_items_used"] = len(items)
        self.tracking = tracking = StudyTracking.open(self.ctx, tracker, self.lock, study, params, tags)
        self.label = f"worker {index} ({socket.gethostname()}:{os.getpid()})"
        console.print(f"study [bold]{name}[/] · {spec.task} on {spec.model} · {len(items)} validation items · "
                      f"{hardware.summary(hw)} · {finished_count(study)}/{spec.trials} trials finished · "
                      f"{self.label}", soft_wrap=True)
        if tracking.parent:  # once per study and worker; MLflow's own per-run "View run" lines are switched off
            console.print(f"MLflow: {run_link(tracker.tracking_uri, tracker.experiment_id, tracking.parent)}",
                          soft_wrap=True, highlight=False, markup=False)
        plan = study_plan(self.ctx, storage, study)
        for line in format_plan(plan, spec):
            console.print(line, soft_wrap=True, highlight=False, markup=False)
        self.pace = Progress(plan, plan.baseline_stored)

        self.progress = BarProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                                 disable=not self.options.show_progress, transient=False)
        self.trials_bar = self.progress.add_task("trials", total=spec.trials, completed=done, info="")
        self.items_bar = self.progress.add_task("  items", total=len(items), info="")
        self.n_items = len(items)
        self.backlog = backlog = Backlog()  # MLflow logging off the trial loop's thread
        handler = stale_handler(study)
        if handler is not None:  # the worker that notices a dead worker's trial logs it as failed
            handler.listeners.append(lambda trial: backlog.submit(tracking.log_trial, trial))
        objective = Objective(spec, evaluator, items, on_progress=self._on_progress,
                              on_trial_start=self._on_trial_start, ledger=self._ledger_factory(storage, items))
        try:
            with self.progress:
                self.work(study, self.lock, objective)
            # The study holds its budget: the last worker out leaves MLflow complete and closed.
            backlog.submit(tracking.finish, study)
        finally:
            backlog.close()  # interrupted or not, what finished is logged before the run returns
        return study

    def _ledger_factory(self, storage: optuna.storages.RDBStorage, items: list) -> LedgerFactory:
        """The baseline ledger of this worker's trials: shared under its key by every study of this model, split and
        baseline (tuner.study.baseline), grown under a lock of its own (decoding the baseline can take minutes, so
        not the claim lock; an hour's timeout, since waiting is what a second worker that needs the same items
        should do)."""
        spec = self.ctx.spec
        config = spec.reference_config(spec.reference(spec.constraint.baseline))
        key = self.ctx.baseline_key("validation")

        def factory(study: optuna.Study) -> BaselineLedger:
            return BaselineLedger(adopt(study, key), config, self.ctx.evaluator, items, chunk_size=spec.chunk_size,
                                  lock=lambda: held_study_lock(storage, f"ledger:{key}", timeout_s=3600),
                                  on_progress=self._on_progress)

        return factory

    # ------------------------------------------------------------------------------------ the loop
    def work(self, study: optuna.Study, lock: StudyLock, objective: Callable[[optuna.Trial], tuple[float, float]]
             ) -> None:
        """Claim and run trials of `objective` one at a time until the study holds its budget of finished trials.

        A claim is atomic under the study lock: count finished + running trials and, if they leave room, ask Optuna
        for a trial (a re-queued or enqueued WAITING trial first). When the running trials of other workers fill
        the budget, wait and look again: one of them may die and be re-queued, and must not be left behind.
        """
        self.study, self.lock, self.objective = study, lock, objective
        budget = self.ctx.spec.trials
        poll_s = max(1.0, min(5.0, float(self.options.heartbeat_interval or 5)))
        waiting_since: float | None = None
        while True:
            interrupts.check()
            self.mine = None
            try:
                self.lock.acquire()
                try:
                    fail_stale_trials(study)
                    finished, before = budget_counts(study)
                    if finished >= budget:
                        return
                    if finished + len(before) < budget:
                        waiting_since = None
                        self._run_one(before)
                        if self.failures >= self.options.max_consecutive_failures:
                            raise WorkerError(f"{self.failures} trials in a row failed on this worker (see the "
                                              "warnings above); stopping it — the study and its finished trials "
                                              "are kept")
                        continue
                finally:
                    self.lock.release()
            except Exception as exc:
                if self.mine is not None and self._taken_over():
                    # Its heartbeat went stale while it ran (a stalled machine, a long storage outage): another
                    # worker failed and re-queued it, so its retry will hold the result. Optuna's own error for this
                    # changes between releases (optuna#5470's "Cannot tell a FAIL trial", 5.x's "Should not
                    # reach."), so the storage is asked instead.
                    self.console.print(f"trial {self.mine} was failed and re-queued by another worker while this "
                                       "one ran it; going on")
                    continue
                if is_transient(exc):
                    raise StorageError(f"lost the study storage {redact_url(self.ctx.options.storage)}: "
                                       f"{db_error(exc)}") from None
                raise
            if waiting_since is None:
                waiting_since = time.monotonic()
                self.console.print(self._waiting_line(study, before))
            time.sleep(poll_s)

    def _waiting_line(self, study: optuna.Study, running: set[int]) -> str:
        """What this worker waits for: the running trials with a live worker, and apart from them those whose
        heartbeat has stopped (their worker looks dead; they are re-queued once stale)."""
        storage = backend(study)
        interval = self.options.heartbeat_interval
        silent: dict[int, float] = {}
        if interval and hasattr(storage, "silent_running_trials"):
            silent = {n: age for n, age in storage.silent_running_trials(study_id(study), 1.5 * interval).items()
                      if n in running}
        line = f"{len(running) - len(silent)} trial(s) still running on other workers; waiting for them"
        if silent:
            numbers = ", ".join(str(n) for n in sorted(silent))
            line += (f"; trial(s) {numbers} without a heartbeat for {max(silent.values()):.0f} s (worker dead?) are "
                     "re-queued once stale")
        return line

    def _run_one(self, before: set[int]) -> None:
        """Run one trial through Optuna (heartbeats work with `optimize` only); the lock is released by `_claimed`
        once the trial exists. An interrupt re-queues the trial."""
        assert self.study is not None
        self.returned = self.taken = False
        try:
            self.study.optimize(self._claimed, n_trials=1, callbacks=[self._after_trial], catch=(RuntimeError,),
                                gc_after_trial=False)
        except KeyboardInterrupt:
            # Ctrl-C/SIGTERM in the middle of a trial, or before it even started (while the sampler proposed it):
            # queue it again rather than leave it failed or, worse, running.
            self._requeue_mine(before)
            raise
        except Exception:
            if not interrupts.is_set():
                raise
            # The interrupt landed in Optuna's own write of the trial's outcome, and Optuna's clean-up then failed
            # reading a state it never got (UnboundLocalError in optuna's _run_trial): the trial is still RUNNING.
            # An interrupt all the same.
            self._requeue_mine(before)
            raise KeyboardInterrupt from None

    def _claimed(self, trial: optuna.Trial) -> tuple[float, float]:
        """The objective of a claimed trial. The claim lock is released as soon as the trial's configuration is
        recorded (an `Objective` says when; any other objective at once): from then on the trial counts as running
        and other workers see its configuration, so the next worker can claim."""
        assert self.lock is not None and self.objective is not None
        self.mine = trial.number
        TrialWriter(trial).worker(self.label)
        try:
            if isinstance(self.objective, Objective):
                values = self.objective(trial, on_keyed=self.lock.release)
            else:
                self.lock.release()
                values = self.objective(trial)
        except optuna.TrialPruned:
            self.returned = True
            raise
        except Exception:
            # Finished by someone else while the objective ran (its writes then fail, whatever the error)?
            self.taken = self._stored_state() not in (None, TrialState.RUNNING)
            raise
        self.returned = True
        return values

    def _stored_state(self) -> TrialState | None:
        """This worker's trial's state as the storage holds it now (not as this process last wrote it)."""
        assert self.study is not None
        try:
            trials = self.study.get_trials(deepcopy=False)
        except Exception as exc:  # noqa: BLE001 - asked while handling another error; unknown is the answer
            log.warning("could not read trial %s's state: %s", self.mine, db_error(exc))
            return None
        return next((t.state for t in trials if t.number == self.mine), None)

    def _taken_over(self) -> bool:
        """Was this worker's trial finished by another worker (failed as stale and re-queued) while it ran it?

        Judged from the storage, never from the text or type of Optuna's error: the trial is FAIL there although
        this worker's objective returned (its own tell would have written COMPLETE or PRUNED), or the objective
        failed after the trial had already been finished by someone else.
        """
        return self.taken or (self.returned and self._stored_state() == TrialState.FAIL)

    def _requeue_mine(self, before: set[int]) -> None:
        """Re-queue this worker's interrupted trial: the one its objective ran, or else the trial its claim created
        (claims are serialised by the study lock, so a trial that appeared during it is this worker's)."""
        assert self.study is not None
        numbers = [self.mine] if self.mine is not None else [
            t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.number not in before]
        for number in numbers[:1]:
            try:
                requeue(self.study, number)
            except Exception as exc:  # noqa: BLE001 - best effort on the way out; a stale trial is retried anyway
                log.warning("could not re-queue interrupted trial %d: %s", number, db_error(exc))

    # ------------------------------------------------------------------------------------- callbacks
    def _on_trial_start(self, number: int, config: DecodeConfig) -> None:
        knobs = ", ".join(f"{k}={v}" for k, v in config.normalized().to_dict().items() if k in SHOWN_KNOBS)
        if self.progress is not None:
            self.progress.reset(self.items_bar, total=self.n_items, info=f"trial {number}: {knobs}")
        park(number, self.label)  # tests only (tuner.workers.parking): a no-op unless DTUNE_TEST_PARK is set

    def _on_progress(self, seen: int, total: int, correct: int) -> None:
        interrupts.check()
        if self.progress is not None:
            self.progress.update(self.items_bar, completed=seen, info=f"acc {correct / max(seen, 1):.1%}")

    def _after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.failures = self.failures + 1 if trial.state == TrialState.FAIL else 0
        finished = finished_count(study)
        eta = ""
        if self.pace is not None:
            self.pace.trial_done(trial)
            eta = self.pace.line(study_ledger(study).n)
        if self.progress is not None:
            self.progress.update(self.trials_bar, completed=finished, info=eta.removeprefix(" · "))
        if self.options.log_trials:
            line = trial_line(TrialRecord.read(trial), finished, self.ctx.spec.trials)
            self.console.print(f"{self.label}: {line}{eta}", soft_wrap=True, highlight=False, markup=False)
        if self.backlog is None or self.tracking is None:  # tracking not set up (work() driven directly)
            return
        self.backlog.submit(self.tracking.log_trial, trial)
        if self.tracking.parent and finished % self.options.refresh_every == 0:
            self.backlog.submit(self.tracking.refresh, study)
