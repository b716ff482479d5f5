"""A study's MLflow parent run as a worker keeps it: one nested run per trial (logged off the trial loop), the
report refreshed every few trials, and MLflow reconciled with the study so it converges to what the study holds."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..app.context import Context
from ..base.urls import redact_url
from ..report.lines import study_line, trial_line
from ..storage.locks import StudyLock, held_study_lock
from ..storage.record import StudyRecord, TrialRecord
from ..study.lifecycle import FINISHED
from ..study.points import trial_points
from ..tracking import Tracker
from ..tracking.client import NOTE_TAG


def study_params(ctx: Context, split_size: int, split_hash: str, hw: dict[str, str]) -> tuple[dict, dict]:
    """Parent-run params (what the study searched and on what) and tags (where it ran)."""
    spec, model = ctx.spec, ctx.model
    params: dict[str, Any] = {
        "task": spec.task, "model": spec.model, "model_fingerprint": model.source.get("fingerprint"),
        "model_revision": model.source.get("revision"), "chat_template": spec.chat_template,
        "validation_size": split_size, "validation_hash": split_hash,
        "sampler": spec.sampler, "trials": spec.trials, "constraint_baseline": spec.constraint.baseline,
        "constraint_max_drop": spec.constraint.max_drop, "spec_fingerprint": spec.fingerprint(),
        **{f"decode.{k}": v for k, v in spec.decode.items()},
        **{f"space.{k.name}": list(k.choices) if k.is_categorical else [k.low, k.high] for k in spec.search_space},
    }
    return params, {f"hw.{k}": v for k, v in hw.items()}


class StudyTracking:
    """The study's parent run and its trials' nested runs, for one worker (every call is idempotent, so any
    number of workers may log, reconcile and finish the same study)."""

    def __init__(self, ctx: Context, tracker: Tracker, lock: StudyLock, parent: str | None) -> None:
        self.ctx, self.tracker, self.lock, self.parent = ctx, tracker, lock, parent

    @classmethod
    def open(cls, ctx: Context, tracker: Tracker, lock: StudyLock, study: optuna.Study, params: dict[str, Any],
             tags: dict[str, str]) -> StudyTracking:
        """Find or create the study's parent run (under the study lock: MLflow has no create-if-absent) and mark
        it running (a study resumed with a larger budget is running again)."""
        record = StudyRecord(study)
        with lock:
            parent = tracker.parent_run(ctx.study_name, params=params, tags={
                **tags, "dtune.storage": redact_url(ctx.options.storage),
                NOTE_TAG: study_line(ctx.study_name, ctx.spec.task, ctx.spec.model, ctx.spec.trials,
                                     ctx.spec.constraint)})
            if parent:
                record.set_parent_run_id(parent)
        if parent:
            tracker.mark_running(parent)
        return cls(ctx, tracker, lock, parent)

    def log_trial(self, trial: FrozenTrial) -> None:
        if not self.parent:
            return
        t = TrialRecord.read(trial)
        metrics = {**t.metrics.to_dict(), **{f"constraint_{k}": v for k, v in (t.constraints or {}).items()}}
        tags = {"state": t.state.name, "reference": t.reference or "", "config_key": t.config_key or "",
                "duplicate_of": "" if t.duplicate_of is None else str(t.duplicate_of),
                "retry_of": "" if t.retry_of is None else str(t.retry_of), "worker": t.worker or ""}
        tags = {k: v for k, v in tags.items() if v}  # an empty tag is clutter on the run's page
        tags[NOTE_TAG] = trial_line(t)  # the run's description: the trial in one readable line
        params = {**t.params, **{f"config.{k}": v for k, v in (t.config or {}).items()}}
        # MLflow has no create-if-absent: the nested run is looked up and created under a study-wide lock of its
        # own, so the trial's worker and another one reconciling it never create two runs for one trial.
        with held_study_lock(self.lock.storage, f"{self.ctx.study_name}:mlflow"):
            self.tracker.log_trial(self.parent, t.number, params=params, metrics=metrics, tags=tags,
                                   state=t.state.name)

    def refresh(self, study: optuna.Study) -> None:
        """Make MLflow hold what the study holds, then rewrite the study's report on the parent run."""
        if not self.parent:
            return
        self.reconcile(study)
        constraint = self.ctx.spec.constraint
        failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        self.tracker.refresh_study_artifacts(self.parent, trial_points(study, constraint), title=self.ctx.study_name,
                                             accuracy_scale=constraint.margin, extra_metrics={"n_failed": failed})

    def reconcile(self, study: optuna.Study) -> None:
        """Log every finished or failed trial whose nested run is missing or shows another state (one logged while
        MLflow failed, by a worker killed before its backlog drained, or taken over from a live worker)."""
        logged = self.tracker.trial_states(self.parent) if self.parent else None
        if logged is None:  # MLflow unavailable now: the next refresh tries again
            return
        for trial in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL)):
            if logged.get(trial.number) != trial.state.name:
                self.log_trial(trial)

    def finish(self, study: optuna.Study | None) -> None:
        """The study holds its budget: reconcile, refresh the report and close the parent run (every worker that
        sees the study complete does it, so the last one out leaves the run FINISHED)."""
        if not self.parent:
            return
        if study is not None:
            self.refresh(study)
        self.tracker.finish(self.parent, "FINISHED")
