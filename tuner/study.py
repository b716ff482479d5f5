"""One tuning study: an Optuna multi-objective study (maximise accuracy and tokens/s) over a spec's search space.

* Storage (tuner/storage.py): Optuna's RDB storage through SQLAlchemy — a SQLite file by default, any SQLAlchemy
  URL (PostgreSQL) otherwise — so re-running the same command resumes the study and Ctrl-C keeps every finished
  trial.
* Reference points (vanilla, Fast-dLLM, the paper's setting) are enqueued first, so every front is judged
  against them. Fast-dLLM is the streaming point (window = none, alpha = 0, no early exit), identical by test.
* Sampler: GPSampler by default — Optuna's sampler table recommends it for budgets up to a few hundred trials,
  it handles 2 objectives (log-EHVI) with constraints (`trial.set_constraint`), and a handful of mixed knobs is
  where a GP model beats TPE's independent density estimates and NSGA-II's random first generation (50 trials).
* The accuracy constraint (at most `max_drop` points below the baseline) goes to the sampler through
  `trial.set_constraint`, and hopeless trials are stopped early: the validation split is evaluated in chunks and a
  trial is pruned once its accuracy cannot reach the bar at 95% confidence (Optuna's pruners are
  single-objective only; raising TrialPruned still marks the trial pruned). Optuna's GP fits only complete
  trials, so it is shown the stopped ones as complete and infeasible (tuner/sampling.py).
* A configuration already evaluated is not evaluated again: the trial copies the earlier result.
* Many workers share one study (README "Scale out"): trials carry heartbeats and a stale trial (its worker was
  killed) is failed and re-queued with its params and attrs; a per-study lock (a PostgreSQL advisory lock, a
  file lock beside a SQLite file) makes study set-up and trial claims atomic, so the references are enqueued
  once and the study ends with exactly its budget of finished trials; storage calls survive database outages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from decoder.config import KNOBS, DecodeConfig

from .baseline import read_ledger
from .errors import TunerError, db_error
from .pareto import TrialPoint, pareto_front
from .sampling import make_sampler
from .spec import Constraint, StudySpec
from .stats import paired_drop
from .storage import StorageError, StudyLock, queue_retry
from .urls import redact_url

log = logging.getLogger(__name__)

# Spec fields a resumed study may change: they don't change what a trial measures (the budget, the prose, export's
# test prefix), so they are not in the spec's fingerprint either.
RESUMABLE_FIELDS = ("trials", "description", "test_size")


class SpecChangedError(TunerError):
    """A study is resumed with a spec whose search space, data or settings differ from the one it was created
    with: its trials would mix two experiments (and Optuna refuses a changed search space mid-study)."""

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def default_study_name(spec: StudySpec) -> str:
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.model.rstrip("/").split("/")[-1])
    return f"{spec.task}-{model}-{spec.fingerprint()}"


def distributions(spec: StudySpec) -> dict[str, optuna.distributions.BaseDistribution]:
    """The search space as Optuna distributions: the streaming knobs only.

    `mode` is not searched: vanilla is a reference point, evaluated once, never a configuration the sampler
    should propose again (a constrained GP favours it, being the most accurate point, and spent most of its
    trials on vanilla duplicates when it could). Optuna refuses a categorical whose choices change within a study,
    so the mode can't be offered to the reference alone either.
    """
    dists: dict[str, optuna.distributions.BaseDistribution] = {}
    for k in spec.search_space:
        if k.is_categorical:
            dists[k.name] = optuna.distributions.CategoricalDistribution(list(k.choices))
        else:
            dists[k.name] = optuna.distributions.FloatDistribution(k.low, k.high, step=k.step, log=k.log)
    return dists


def reference_params(spec: StudySpec, name: str) -> dict[str, Any]:
    """A reference's point in the space. A streaming reference is its own knobs; vanilla reads none of them except
    block_size and sits at the most vanilla-like streaming corner (see Knob.most_vanilla_like)."""
    cfg = spec.reference_config(spec.reference(name))
    params: dict[str, Any] = {}
    for k in spec.search_space:
        own = cfg.mode == "streaming" or k.name == "block_size"
        params[k.name] = getattr(cfg, k.name) if own else k.most_vanilla_like()
    return params


def suggest(trial: optuna.Trial, name: str, dist: optuna.distributions.BaseDistribution) -> Any:
    """Ask the trial for one knob through the public suggest API (enqueued values come back as given)."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def config_key(config: DecodeConfig) -> str:
    """What makes two trials the same configuration. Floats are rounded to 9 decimals: a sampler proposes
    0.6999999999999998 where an earlier trial ran 0.7, and the decoder can't tell them apart."""
    knobs = {k: round(v, 9) if isinstance(v, float) else v for k, v in config.normalized().to_dict().items()}
    return json.dumps(knobs, sort_keys=True)


def create_study(spec: StudySpec, storage: optuna.storages.RDBStorage, name: str, seed: int | None, *,
                 worker: int | None = 0, lock: StudyLock | None = None, reserve: int = 1) -> tuple[optuna.Study, int]:
    """Create the study, or load it (resume, or another worker created it first); returns it and the worker index.

    Runs under the study lock, so of N workers starting together exactly one creates the study, records the
    spec and enqueues the reference points; the others load a fully set-up study. A creator killed half-way
    leaves no `initialized` mark, and the next worker finishes the set-up (enqueuing only missing references).

    `worker=None` allocates the next free index from the study (`workers_started`), so workers started on
    several machines without `--worker-index` still get distinct sampler seeds (identical seeds propose
    identical points, optuna#1547). `reserve` indices are allocated then (the `--n-workers` parent takes one per
    worker and hands them out, so its reports and the workers' own lines name the same index). The sampler is
    seeded with `seed + worker`.
    """
    if worker is not None and (isinstance(worker, bool) or not isinstance(worker, int) or worker < 0):
        raise TunerError(f"the worker index must be a non-negative integer, got {worker!r}")
    own_lock = lock is None
    lock = lock or StudyLock(storage, name)
    try:
        with lock:
            try:
                try:
                    with _quiet_optuna():  # not Optuna's "[I …] A new study created in RDB with name: …" on stderr
                        study = optuna.create_study(storage=storage, study_name=name,
                                                    directions=["maximize", "maximize"])
                except optuna.exceptions.DuplicatedStudyError:
                    study = optuna.load_study(study_name=name, storage=storage)
                    # Before anything is written or any trial is touched: a changed spec changes nothing.
                    check_same_spec(study, spec)
                if not study.user_attrs.get("initialized"):
                    _initialize(study, spec)
                if worker is None:
                    worker = int(study.user_attrs.get("workers_started", 0))
                    study.set_user_attr("workers_started", worker + max(1, reserve))
            except optuna.exceptions.StorageInternalError as exc:  # a read-only file, a revoked grant
                raise StorageError(f"can't write the study {name} to {redact_url(storage.url)}: "
                                   f"{db_error(exc)}") from None
    finally:
        if own_lock:
            lock.close()
    study.sampler = make_sampler(spec.sampler, None if seed is None else seed + worker, spec.trials)
    return study, worker


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines off for the block (dtune prints its own; the verbosity before is restored)."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(before, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def spec_changes(stored: dict[str, Any], spec: StudySpec) -> list[str]:
    """What differs between the spec a study was created with (its `spec` user attr) and `spec`, as
    `field: old → new` lines with dotted keys, the fields a resume may change left out. A field the stored spec
    lacks (written by an older dtune) is not counted as a change."""
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
    stored = study.user_attrs.get("spec")
    if not isinstance(stored, dict):
        return  # a study made outside dtune, or before specs were stored: nothing to compare
    changes = spec_changes(stored, spec)
    if not changes:
        return
    shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
    raise SpecChangedError(
        f"study {study.study_name} was created with another spec ({shown}); resuming it would mix two "
        f"experiments. Start a new study (another --study-name, or none: the default name follows the spec), or "
        f"resume with the original spec (fingerprint {study.user_attrs.get('spec_fingerprint', 'as stored')})")


def _initialize(study: optuna.Study, spec: StudySpec) -> None:
    with warnings.catch_warnings():  # set_metric_names is "experimental" since Optuna 3.2, and stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", "tokens_per_s"])
    study.set_user_attr("spec", spec.to_dict())
    study.set_user_attr("spec_fingerprint", spec.fingerprint())
    present = {t.user_attrs.get("reference") for t in study.get_trials(deepcopy=False)}
    for ref in spec.references:
        if ref.name not in present:
            study.enqueue_trial(reference_params(spec, ref.name), user_attrs={"reference": ref.name})
    study.set_user_attr("initialized", True)


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def budget_counts(study: optuna.Study) -> tuple[int, set[int]]:
    """The number of finished trials (what counts against the budget now) and the numbers of the running ones
    (what may still add to it; a claim also needs them to tell its own new trial apart), from one read."""
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    running = {t.number for t in trials if t.state == TrialState.RUNNING}
    return len(trials) - len(running), running


def requeue(study: optuna.Study, number: int) -> None:
    """Fail trial `number` if it still runs and queue a copy (same params and attrs), as for a stale trial.

    For a trial interrupted by Ctrl-C/SIGTERM: the interruption says nothing about its configuration, and a
    reference point must not be lost to it, so the next run (or another worker) evaluates it again.
    """
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
    a worker asks for a new trial; idle workers waiting for the last trials call it so a dead worker's trial is
    still retried)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def trial_points(study: optuna.Study, constraint: Constraint) -> list[TrialPoint]:
    """Every finished trial as a TrialPoint, judged against the baseline ledger on its own items.

    Accuracy is the paired estimate: the baseline's accuracy on all its ledger items minus the trial's paired
    drop on the items it used (a trial that raced 200 items and one that raced 1,600 are then on one scale), and
    the interval is that of the drop ([baseline − upper, baseline − lower] at the constraint's confidence: the
    uncertainty that matters when configurations are compared with the baseline and with each other). Feasible
    means the drop's upper bound is within the margin. Trials are re-judged here from their stored outcomes, so a
    trial that finished before the ledger covered its items is judged like every other.
    """
    ledger = read_ledger(study)
    base_items = ledger.bools()
    points = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        m = t.user_attrs.get("metrics", {})
        own = t.values[0] if t.values else m.get("accuracy", 0.0)
        tps = t.values[1] if t.values else m.get("tokens_per_s", 0.0)
        outcomes = t.user_attrs.get("outcomes") or ""
        is_baseline = t.user_attrs.get("reference") == constraint.baseline
        acc, lo, hi, feasible, paired = float(own), m.get("accuracy_ci_low"), m.get("accuracy_ci_high"), False, None
        if is_baseline and ledger.n:
            acc, feasible = ledger.accuracy, True
        elif outcomes and ledger.n >= len(outcomes):
            paired = paired_drop([o == "1" for o in outcomes], base_items[: len(outcomes)], constraint.confidence)
            acc, lo, hi = ledger.accuracy - paired.drop, ledger.accuracy - paired.upper, ledger.accuracy - paired.lower
            feasible = paired.upper <= constraint.margin + 1e-12
        else:  # no per-item outcomes (an old study): the sampler's constraint is all there is
            feasible = bool(t.constraints) and all(v <= 0 for v in t.constraints.values())
        points.append(TrialPoint(
            number=t.number, accuracy=float(acc), tokens_per_s=float(tps), feasible=feasible, state=t.state.name,
            params=_shown_params(t), label=t.user_attrs.get("reference"), nfe=m.get("nfe"), ci_low=lo, ci_high=hi,
            n=len(outcomes) or m.get("n"), drop=0.0 if is_baseline else (paired.drop if paired else m.get("drop")),
            drop_upper=0.0 if is_baseline else (paired.upper if paired else m.get("drop_upper")),
            discordance=0.0 if is_baseline else (paired.discordance if paired else m.get("discordance")),
            speed_spread=m.get("speed_spread"), speed_noisy=m.get("speed_noisy"),
            tokens_per_s_low=m.get("tokens_per_s_low"), tokens_per_s_high=m.get("tokens_per_s_high"),
        ))
    return points


def _shown_params(t: FrozenTrial) -> dict[str, Any]:
    """The knobs a trial ran with. A vanilla reference reports placeholder streaming knobs to the sampler
    (Knob.most_vanilla_like); people looking at a front or a trials table see its real settings instead."""
    config = t.user_attrs.get("config") or {}
    mode = config.get("mode", "streaming")
    if mode == "streaming":
        return dict(t.params)
    shown = {k: v for k, v in config.items() if k in KNOBS and mode in KNOBS[k].modes
             and (KNOBS[k].search is not None or KNOBS[k].modes == (mode,))}
    return {"mode": mode, **shown}


def front(study: optuna.Study, constraint: Constraint) -> list[TrialPoint]:
    return pareto_front(trial_points(study, constraint))


def baseline_accuracy(study: optuna.Study) -> float | None:
    """The baseline reference's accuracy, once its trial has finished (None before)."""
    base = study.user_attrs.get("baseline")
    return None if base is None else float(base["accuracy"])
