"""A study's life in the database: created once (spec recorded, references enqueued) however many workers start
together, resumed only with the same spec, its trials counted against the budget, interrupted ones re-queued."""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from ..base.errors import TunerError, db_error
from ..base.urls import redact_url
from ..storage.errors import StorageError
from ..storage.locks import StudyLock
from ..storage.optuna_internals import quiet_optuna
from ..storage.record import StudyRecord, reference_attrs, reference_of, stored_spec
from ..storage.retry import queue_retry
from .sampling import make_sampler
from .space import reference_params
from .spec import StudySpec

# Spec fields a resumed study may change: they don't change what a trial measures (the budget, the prose, export's
# test prefix), so they are not in the spec's fingerprint either.
RESUMABLE_FIELDS = ("trials", "description", "test_size")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class SpecChangedError(TunerError):
    """A study is resumed with a spec whose search space, data or settings differ from the one it was created
    with: its trials would mix two experiments (and Optuna refuses a changed search space mid-study)."""


def default_study_name(spec: StudySpec) -> str:
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.model.rstrip("/").split("/")[-1])
    return f"{spec.task_label}-{model}-{spec.fingerprint()}"


def create_study(spec: StudySpec, storage: optuna.storages.RDBStorage, name: str, seed: int | None, *,
                 worker: int | None = 0, lock: StudyLock | None = None, reserve: int = 1) -> tuple[optuna.Study, int]:
    """Create the study, or load it (resume, or another worker created it first); returns it and the worker index.

    Under the study lock, so of N workers starting together one creates the study, records the spec and enqueues
    the references; a creator killed half-way leaves no `initialized` mark and the next one finishes the set-up.
    `worker=None` takes the next free index from the study (distinct sampler seeds on every machine, optuna#1547;
    `reserve` indices at once for the `--n-workers` parent). The sampler is seeded with `seed + worker`.
    """
    if worker is not None and (isinstance(worker, bool) or not isinstance(worker, int) or worker < 0):
        raise TunerError(f"the worker index must be a non-negative integer, got {worker!r}")
    own_lock = lock is None
    lock = lock or StudyLock(storage, name)
    try:
        with lock:
            try:
                try:
                    with quiet_optuna():  # not Optuna's "[I …] A new study created in RDB with name: …" on stderr
                        study = optuna.create_study(storage=storage, study_name=name,
                                                    directions=["maximize", "maximize"])
                except optuna.exceptions.DuplicatedStudyError:
                    study = optuna.load_study(study_name=name, storage=storage)
                    # Before anything is written or any trial is touched: a changed spec changes nothing.
                    check_same_spec(study, spec)
                record = StudyRecord(study)
                if not record.initialized:
                    _initialize(study, spec)
                if worker is None:
                    worker = record.take_worker_indices(reserve)
            except optuna.exceptions.StorageInternalError as exc:  # a read-only file, a revoked grant
                raise StorageError(f"can't write the study {name} to {redact_url(storage.url)}: "
                                   f"{db_error(exc)}") from None
    finally:
        if own_lock:
            lock.close()
    study.sampler = make_sampler(spec.sampler, None if seed is None else seed + worker, spec.trials, spec)
    return study, worker


def spec_changes(stored: dict[str, Any], spec: StudySpec) -> list[str]:
    """What differs between the spec a study was created with and `spec`, as `field: old → new` lines with dotted
    keys, the fields a resume may change left out. A field the stored spec lacks (an older dtune) is no change."""
    current = json.loads(json.dumps(spec.to_dict(), default=str))  # as stored: tuples are lists
    changes: list[str] = []

    def walk(old: Any, new: Any, key: str) -> None:
        if isinstance(old, dict) and isinstance(new, dict):
            for k in sorted(set(old) & set(new), key=str):
                walk(old[k], new[k], f"{key}.{k}" if key else str(k))
        elif old != new:
            changes.append(f"{key}: {json.dumps(old)} → {json.dumps(new)}")

    walk({k: v for k, v in stored.items() if k not in RESUMABLE_FIELDS},
         {k: v for k, v in current.items() if k not in RESUMABLE_FIELDS}, "")
    return changes


def check_same_spec(study: optuna.Study, spec: StudySpec) -> None:
    """Refuse to resume `study` with a spec other than its own (SpecChangedError, naming what changed and what
    to do). Nothing is written: the study and every trial, queued ones included, stay as they are."""
    stored = stored_spec(study.user_attrs)
    if stored is None:
        return  # a study made outside dtune, or before specs were stored: nothing to compare
    changes = spec_changes(stored, spec)
    if not changes:
        return
    shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
    raise SpecChangedError(
        f"study {study.study_name} was created with another spec ({shown}); resuming it would mix two "
        f"experiments. Start a new study (another --study-name, or none: the default name follows the spec), or "
        f"resume with the original spec (fingerprint {StudyRecord(study).spec_fingerprint or 'as stored'})")


def _initialize(study: optuna.Study, spec: StudySpec) -> None:
    with warnings.catch_warnings():  # set_metric_names is "experimental" since Optuna 3.2, and stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", "tokens_per_s"])
    record = StudyRecord(study)
    record.record_spec(spec.to_dict(), spec.fingerprint())
    present = {reference_of(t) for t in study.get_trials(deepcopy=False)}
    for ref in spec.references:
        if ref.name not in present:
            study.enqueue_trial(reference_params(spec, ref.name), user_attrs=reference_attrs(ref.name))
    record.mark_initialized()


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def budget_counts(study: optuna.Study) -> tuple[int, set[int]]:
    """The number of finished trials (what counts against the budget now) and the numbers of the running ones
    (what may still add to it; a claim also needs them to tell its own new trial apart), from one read."""
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    running = {t.number for t in trials if t.state == TrialState.RUNNING}
    return len(trials) - len(running), running


def requeue(study: optuna.Study, number: int) -> None:
    """Fail trial `number` if it still runs and queue a copy, as for a stale trial: an interrupt (Ctrl-C, SIGTERM)
    says nothing about its configuration, and a reference point must not be lost to it."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None or trial.state in FINISHED:
        return
    if trial.state == TrialState.RUNNING:
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    trial = next(t for t in study.get_trials() if t.number == number)
    if trial.state == TrialState.FAIL:
        queue_retry(study, trial)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail trials whose worker stopped sending heartbeats and re-queue them (Optuna does this only right before
    a worker asks for a new trial; idle workers waiting for the last trials call it too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
