"""MLflow tracking for dtune studies: one parent run per study, one nested run per Optuna trial.

Everything goes through an explicit :class:`mlflow.MlflowClient` and run ids, never the fluent API's process-global
active run, which breaks once trials run in threads or another worker created the parent; nesting is just the
``mlflow.parentRunId`` tag. Runs are found again by tags (``dtune.study``, ``dtune.trial_number``), so every write
is idempotent across resumes, workers and retries. Only :meth:`Tracker.open` raises: losing the server halfway
through a study costs a warning per call, not the study.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

from ..base import file_lock
from ..base.errors import one_line
from ..base.urls import redact_url
from ..report.files import study_metrics, write_study_files
from ..verdict.pareto import TrialPoint
from .store import HTTP_ENV_DEFAULTS, TrackingError, check_reachable, fix_hint, run_link, uri_scheme
from .values import (
    MAX_ENTITIES_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    literal,
    metric_value,
    mlflow_key,
    param_value,
    tag_value,
)

__all__ = ["Tracker"]

_log = logging.getLogger("tuner.tracking")
T = TypeVar("T")

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag (mlflow.utils.mlflow_tags.MLFLOW_PARENT_RUN_ID)
STUDY_TAG = "dtune.study"
TRIAL_TAG = "dtune.trial_number"
# "study" | "trial": a caller tag such as dtune.study on a trial run must not make it look like a parent.
RUN_TYPE_TAG = "dtune.run_type"
STATE_TAG = "dtune.state"  # the exact Optuna state (MLflow's run status cannot tell WAITING from RUNNING)
# MLflow 3's UI opens an experiment without this tag on its GenAI side (traces, "Evaluations"); a study's runs and
# nested trials are on its "Model training" side. A run's description is its `mlflow.note.content` tag.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"

# Optuna state -> MLflow terminal status; other states (RUNNING, WAITING) leave the run RUNNING.
_TERMINAL = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}

def _retryable(exc: BaseException) -> bool:
    """A rejected request (bad key, changed param) fails the same way every time: do not wait to retry it."""
    return not (isinstance(exc, MlflowException) and exc.error_code == "INVALID_PARAMETER_VALUE")



class Tracker:
    """A study's view of one MLflow experiment. Build it with :meth:`Tracker.open`."""

    def __init__(
        self,
        client: MlflowClient,
        tracking_uri: str,
        experiment_id: str,
        experiment: str,
        retries: int,
        backoff_s: float,
    ) -> None:
        self.client = client
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.experiment_name = experiment
        self.retries = max(0, int(retries))
        self.backoff_s = max(0.0, float(backoff_s))

    # ------------------------------------------------------------------------------------------ start-up

    @classmethod
    def open(
        cls,
        tracking_uri: str | None,
        experiment: str,
        *,
        retries: int = 3,
        backoff_s: float = 1.0,
        artifact_location: str | None = None,
    ) -> Tracker:
        """Connect, check the store works now, and get or create ``experiment``.

        ``tracking_uri=None`` means MLflow's own resolution (``MLFLOW_TRACKING_URI``, else
        ``sqlite:///mlflow.db`` in the CWD). ``artifact_location`` only applies when the experiment is created
        (with a sqlite store MLflow otherwise puts artifacts under ``./mlruns`` of the CWD at that moment).
        Raises :class:`TrackingError` with a one-line, actionable message; never returns a half-working tracker.
        """
        uri = tracking_uri or mlflow.get_tracking_uri()
        check_reachable(uri, retries, backoff_s)
        if uri_scheme(uri) in ("http", "https"):
            for name, value in HTTP_ENV_DEFAULTS.items():
                os.environ.setdefault(name, value)
        last: BaseException | None = None
        # One process at a time on a sqlite store: MLflow migrates a fresh file on first use, and several workers
        # doing it at once leave it broken for good (`table _alembic_tmp_experiments already exists`;
        # daizutabi/hydraflow#245). A holder hung for 5 minutes is gone round; the retries below still apply.
        migration_lock = file_lock.lock_path_beside(uri, ".dtune-lock") if uri_scheme(uri) == "sqlite" else None
        with file_lock.held_lock(migration_lock, timeout_s=300):
            for attempt in range(max(0, retries) + 1):
                if attempt:
                    time.sleep(backoff_s * 2 ** (attempt - 1))
                try:
                    client = MlflowClient(tracking_uri=uri)
                    exp_id = cls._get_or_create_experiment(client, experiment, artifact_location)
                    return cls(client, uri, exp_id, experiment, retries, backoff_s)
                except TrackingError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any start-up failure becomes one clear TrackingError
                    last = exc
                    # Concurrent first use of a fresh sqlite file ("database is locked", migration races) and a
                    # server that is still starting are worth a retry; a refused request is not.
                    if not _retryable(exc):
                        break
        assert last is not None
        raise TrackingError(
            f"cannot use MLflow tracking store {redact_url(uri)} ({one_line(last, with_type=True, limit=300)}); "
            f"{fix_hint(uri)}"
        )

    @staticmethod
    def _get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                return client.create_experiment(name, artifact_location=artifact_location,
                                                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except MlflowException as exc:
                # Another worker created it between our lookup and create (mlflow/mlflow#4123): use theirs.
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment {name!r} is deleted in {redact_url(client.tracking_uri)}; restore it "
                f"(`mlflow experiments restore --experiment-id {exp.experiment_id}`) or pick another experiment name"
            )
        if EXPERIMENT_KIND_TAG not in exp.tags:  # an experiment made before dtune set it
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id

    # ------------------------------------------------------------------------------------------ plumbing

    def _attempt(self, what: str, fn: Callable[[], T]) -> T | None:
        """Run ``fn`` (an idempotent unit of work) with retries; on final failure warn once and return None."""
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - tracking must never take the study down
                final = attempt >= self.retries or not _retryable(exc)
                if final:
                    _log.warning(
                        "MLflow tracking (%s): %s failed after %d attempt(s), skipped: %s",
                        redact_url(self.tracking_uri),
                        what,
                        attempt + 1,
                        one_line(exc, with_type=True, limit=300),
                    )
                    return None
                _log.debug("MLflow tracking: %s failed (%s), retrying", what, one_line(exc, with_type=True, limit=300))
                time.sleep(self.backoff_s * 2**attempt)
        return None  # pragma: no cover - the loop always returns

    def _search(self, filter_string: str, max_results: int = 100) -> list[Any]:
        """Active runs of this experiment matching ``filter_string``, oldest first (ties by run id).

        Oldest-first with a run-id tie-break gives every process the same answer to "which one is canonical".
        """
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=max_results,
            order_by=["attributes.start_time ASC"],
        )
        return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))

    def _log_batch(
        self,
        run_id: str,
        *,
        params: dict | None = None,
        metrics: dict | None = None,
        tags: dict | None = None,
    ) -> None:
        """log_batch within MLflow's per-call limits; keys sanitised, values stringified, bad metrics dropped."""
        now = int(time.time() * 1000)
        p = [Param(mlflow_key(k), param_value(v)) for k, v in (params or {}).items()]
        m = [
            Metric(mlflow_key(k), fv, now, 0)
            for k, v in (metrics or {}).items()
            if (fv := metric_value(v)) is not None
        ]
        t = [RunTag(mlflow_key(k), tag_value(v)) for k, v in (tags or {}).items()]
        # Duplicate keys after sanitising would be rejected as a batch: last one wins.
        p = list({x.key: x for x in p}.values())
        t = list({x.key: x for x in t}.values())
        while p or m or t:
            p_chunk, p = p[:MAX_PARAMS_PER_BATCH], p[MAX_PARAMS_PER_BATCH:]
            room = MAX_PARAMS_PER_BATCH - len(p_chunk)
            t_chunk, t = t[:room], t[room:]
            room = MAX_ENTITIES_PER_BATCH - len(p_chunk) - len(t_chunk)
            m_chunk, m = m[:room], m[room:]
            self.client.log_batch(run_id, metrics=m_chunk, params=p_chunk, tags=t_chunk)

    def _add_missing_params(self, run: Any, params: dict) -> None:
        """Log only params the run lacks: MLflow params are write-once, and a resumed or retried call repeats
        them (the first value wins; a changed value is reported, not forced)."""
        have = run.data.params
        new: dict[str, Any] = {}
        for k, v in params.items():
            key, val = mlflow_key(k), param_value(v)
            if key not in have:
                new[key] = val
            elif have[key] != val:
                _log.debug(
                    "MLflow param %s of run %s stays %r (new value %r ignored)",
                    key,
                    run.info.run_id,
                    have[key],
                    val,
                )
        if new:
            self._log_batch(run.info.run_id, params=new)

    # ------------------------------------------------------------------------------------------ study runs

    def _study_runs(self, study_name: str) -> list[Any]:
        lit = literal(study_name)
        cond = f"tags.`{RUN_TYPE_TAG}` = 'study'"
        runs = self._search(f"tags.`{STUDY_TAG}` = {lit} AND {cond}" if lit else cond, max_results=1000)
        return [r for r in runs if r.data.tags.get(STUDY_TAG) == study_name]

    def parent_run(self, study_name: str, *, params: dict, tags: dict) -> str | None:
        """The study's single parent run id, created on first use; None if tracking is unavailable.

        Idempotent across resumes and workers: the run is found by its ``dtune.study`` tag. MLflow has no
        create-if-absent, so the caller serialises creation: workers call this under the study lock
        (`tuner.storage.locks.StudyLock`), the one lock of a study. Should a duplicate exist all the same (a lock that
        timed out on a hung holder), the oldest run is the parent and a run this call just created is deleted.

        Tags and params already on the run are kept (first writer wins); missing ones are added.
        """

        def work() -> str:
            found = self._study_runs(study_name)
            mine = None
            if not found:
                run_tags = {mlflow_key(k): tag_value(v) for k, v in tags.items()}
                run_tags.update({STUDY_TAG: study_name, RUN_TYPE_TAG: "study"})
                run = self.client.create_run(self.experiment_id, tags=run_tags, run_name=study_name)
                mine = run.info.run_id
                found = self._study_runs(study_name) or [run]
            keep = found[0]
            if mine is not None and keep.info.run_id != mine:
                self.client.delete_run(mine)  # an older parent exists: ours is the duplicate
            missing_tags = {k: v for k, v in tags.items() if mlflow_key(k) not in keep.data.tags}
            if missing_tags:
                self._log_batch(keep.info.run_id, tags=missing_tags)
            self._add_missing_params(keep, params)
            return keep.info.run_id

        return self._attempt(f"parent run of study {study_name!r}", work)

    # ------------------------------------------------------------------------------------------ trial runs

    def _trial_runs(self, parent_run_id: str, number: int) -> list[Any]:
        return self._search(
            f"tags.`{PARENT_TAG}` = '{parent_run_id}' AND tags.`{TRIAL_TAG}` = '{int(number)}'"
        )

    def log_trial(
        self, parent_run_id: str, number: int, *, params: dict, metrics: dict, tags: dict, state: str
    ) -> str | None:
        """Create or update the nested run of Optuna trial ``number``; returns its run id, None on failure.

        Re-logging the same (parent, number) updates that run: new params are added, metrics get a newer value
        (MLflow shows the latest), tags are overwritten, and the status follows ``state``.
        """

        def work() -> str:
            runs = self._trial_runs(parent_run_id, number)
            if runs:
                run = runs[0]
            else:
                run_tags = {mlflow_key(k): tag_value(v) for k, v in tags.items()}
                run_tags.update(
                    {
                        PARENT_TAG: parent_run_id,
                        TRIAL_TAG: str(int(number)),
                        RUN_TYPE_TAG: "trial",
                        STATE_TAG: state,
                    }
                )
                run = self.client.create_run(self.experiment_id, tags=run_tags, run_name=f"trial-{number}")
            run_id = run.info.run_id
            self._add_missing_params(run, params)
            self._log_batch(run_id, metrics=metrics, tags={**tags, STATE_TAG: state})
            status = _TERMINAL.get(state.upper())
            if status is not None:
                self.client.set_terminated(run_id, status=status)
            elif run.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            return run_id

        return self._attempt(f"trial {number}", work)

    def trial_states(self, parent_run_id: str) -> dict[int, str] | None:
        """The Optuna state each trial's nested run records (``dtune.state``), by trial number; None when MLflow
        can't be asked now. What a reconciliation compares with the study."""

        def work() -> dict[int, str]:
            runs = self._search(f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=10000)
            out: dict[int, str] = {}
            for run in runs:
                number = run.data.tags.get(TRIAL_TAG)
                if number is not None and number.isdigit():
                    out.setdefault(int(number), run.data.tags.get(STATE_TAG, ""))
            return out

        return self._attempt("trial runs", work)

    # ------------------------------------------------------------------------------------------ artifacts

    def refresh_study_artifacts(self, parent_run_id: str, points: list[TrialPoint], *, title: str,
                                accuracy_scale: float | None = None,
                                extra_metrics: dict[str, float] | None = None) -> None:
        """(Re)write the study's report on the parent run: the files of :func:`tuner.report.files.write_study_files`
        (pareto.html, pareto.png, trials.csv/.json, front.json) and the metrics of
        :func:`tuner.report.files.study_metrics`.

        A failing file is skipped with a warning; the others are still uploaded. ``accuracy_scale`` goes to
        :func:`pick_knee` (the knee in front.json is the one ``export --pick knee`` takes). ``extra_metrics``
        override the summary's: points hold finished trials only, so the caller passes ``n_failed`` from the study.
        """
        try:
            metrics = {**study_metrics(points), **(extra_metrics or {})}
        except Exception as exc:  # noqa: BLE001 - odd points must not stop the study either
            _log.warning("MLflow tracking: study summary skipped: %s", one_line(exc, with_type=True, limit=300))
            return
        with tempfile.TemporaryDirectory(prefix="dtune-mlflow-") as tmp:
            folder = Path(tmp)
            write_study_files(folder, points, title, metrics, accuracy_scale)

            def work() -> None:
                if any(folder.iterdir()):
                    self.client.log_artifacts(parent_run_id, str(folder))
                self._log_batch(parent_run_id, metrics=metrics)

            self._attempt("study artifacts", work)

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> None:
        """Upload a local file (e.g. an exported profile) to a run."""
        self._attempt(
            f"artifact {Path(path).name}", lambda: self.client.log_artifact(run_id, path, artifact_path)
        )

    def set_tags(self, run_id: str, tags: dict) -> None:
        """Set (overwrite) tags on a run."""
        self._attempt("tags", lambda: self._log_batch(run_id, tags=tags))

    def mark_running(self, run_id: str) -> None:
        """Set a run's status back to RUNNING (a finished study resumed with a larger budget)."""
        self._attempt("reopen run", lambda: self.client.update_run(run_id, status="RUNNING"))

    def run_url(self, run_id: str) -> str | None:
        """The run's page on a tracking server (None for a local store): printed once per study, since MLflow's
        own per-run "View run" lines are switched off (store.HTTP_ENV_DEFAULTS)."""
        if uri_scheme(self.tracking_uri) not in ("http", "https"):
            return None
        return run_link(self.tracking_uri, self.experiment_id, run_id)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        """Terminate a run (``FINISHED``, ``FAILED`` or ``KILLED``; Optuna state names are mapped)."""
        mlflow_status = _TERMINAL.get(status.upper(), status.upper())
        self._attempt("finish run", lambda: self.client.set_terminated(run_id, status=mlflow_status))


