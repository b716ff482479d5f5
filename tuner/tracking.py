"""MLflow tracking for dtune studies: one parent run per study, one nested run per Optuna trial.

Design choices, and why:

* Everything goes through an explicit :class:`mlflow.MlflowClient` and explicit run ids. The fluent API keeps a
  process-global "active run" stack, which breaks as soon as trials run in threads or the parent run was
  created by another worker process; run ids survive both.
* Nesting across processes is just the ``mlflow.parentRunId`` tag (what ``start_run(parent_run_id=...)`` sets
  and what the UI groups by), so any worker can attach trials to the study's parent run.
* Runs are found again by tags (``dtune.study``, ``dtune.trial_number``), which makes every write idempotent:
  resuming a study, a second worker, or a retried call reuses the existing run instead of adding another.
* Only :meth:`Tracker.open` raises. A tuning run can take hours; losing a tracking server halfway must cost a
  warning per call, not the study. Every later method retries with backoff, then logs one warning line and
  returns None.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import queue
import re
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

from . import file_lock
from .pareto import (
    TrialPoint,
    front_table,
    hypervolume_2d,
    pareto_figure,
    pareto_front,
    pick_knee,
    save_pareto_png,
)
from .redact import redact_url

__all__ = ["Backlog", "Tracker", "TrackingError"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag (mlflow.utils.mlflow_tags.MLFLOW_PARENT_RUN_ID)
STUDY_TAG = "dtune.study"
TRIAL_TAG = "dtune.trial_number"
# "study" | "trial": a caller tag such as dtune.study on a trial run must not make it look like a parent.
RUN_TYPE_TAG = "dtune.run_type"
STATE_TAG = "dtune.state"  # the exact Optuna state (MLflow's run status cannot tell WAITING from RUNNING)

# Optuna state -> MLflow terminal status; other states (RUNNING, WAITING) leave the run RUNNING.
_TERMINAL = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}

# MLflow's limits (mlflow.utils.validation): param values 6000 chars, tag values 8000, keys 250,
# at most 100 params/tags and 1000 entities per log_batch call.
_MAX_PARAM_VAL = 6000
_MAX_TAG_VAL = 8000
_MAX_KEY = 250
_MAX_PARAMS_PER_BATCH = 100
_MAX_ENTITIES_PER_BATCH = 1000

# Bound a dead tracking server's cost per call: MLflow's defaults (7 retries, 120 s timeout) stall a trial for
# minutes on every log call. Only set when the user has not chosen values (os.environ.setdefault).
_HTTP_ENV_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
_HTTP_CHECK_BUDGET_S = 8.0


class TrackingError(Exception):
    """The tracking store cannot be used at start-up; the message is one line naming the URI and the fix."""


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, short enough for a log line (SQL errors span dozens of lines)."""
    # SQLAlchemy prefixes the real cause with "(raised as a result of Query-invoked autoflush; ...)": skip it.
    lines = [
        ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("(raised as a result")
    ]
    first = lines[0] if lines else ""
    msg = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def _retryable(exc: BaseException) -> bool:
    """A rejected request (bad key, changed param) fails the same way every time: do not wait to retry it."""
    return not (isinstance(exc, MlflowException) and exc.error_code == "INVALID_PARAMETER_VALUE")


def _key(name: Any) -> str:
    """A key MLflow accepts on every OS: letters, digits, ``_ - .`` and spaces, not path-like, ≤ 250 chars."""
    key = re.sub(r"[^\w.\- ]", "_", str(name)).lstrip(". ") or "_"
    return key[:_MAX_KEY]


def _param_value(value: Any) -> str:
    """Params are strings in MLflow; containers as JSON so they stay readable and parseable."""
    if value is None:
        text = "none"
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    return text[:_MAX_PARAM_VAL]


def _metric_value(value: Any) -> float | None:
    """A finite float, or None to skip: MLflow stores NaN as a flag and inf as ±max-float, both misleading."""
    if isinstance(value, bool):
        return float(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _tag_value(value: Any) -> str:
    return ("none" if value is None else str(value))[:_MAX_TAG_VAL]


def _literal(value: str) -> str | None:
    """Quote a value for an MLflow filter string; None when it holds both quote kinds (filter in Python)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def _uri_scheme(uri: str) -> str:
    """``http``, ``sqlite``, ``postgresql+psycopg``..., ``databricks``, or ``file`` for plain paths."""
    if uri.startswith("databricks"):
        return "databricks"
    return uri.split(":", 1)[0].lower() if "://" in uri or uri.startswith("sqlite:") else "file"


def _fix_hint(uri: str) -> str:
    scheme = _uri_scheme(uri)
    if scheme in ("http", "https"):
        return "start the server (e.g. `mlflow server --host 127.0.0.1 --port 5000`) or pass another tracking URI"
    if scheme == "sqlite":
        return "fix the path or the database file, or pass another tracking URI such as sqlite:///mlflow.db"
    if scheme == "file":
        return (
            "MLflow >= 3.13 refuses the ./mlruns file store: use sqlite:///mlflow.db "
            "(`mlflow migrate-filestore` moves old runs) or set MLFLOW_ALLOW_FILE_STORE=true"
        )
    return "check the URI, its credentials and that the database is running"


def _check_reachable(uri: str, retries: int, backoff_s: float) -> None:
    """Fail fast (seconds, not MLflow's minutes of HTTP retries) when the store clearly cannot work."""
    scheme = _uri_scheme(uri)
    if scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        deadline = time.monotonic() + _HTTP_CHECK_BUDGET_S
        attempt = 0
        while True:
            try:
                with urllib.request.urlopen(url, timeout=max(0.5, min(5.0, deadline - time.monotonic()))):
                    return
            except urllib.error.HTTPError:
                return  # the server answered (404 behind a proxy, 401 with auth): reachable is all we check
            except OSError as exc:  # URLError, refused, timeouts
                if isinstance(getattr(exc, "reason", exc), ssl.SSLError):
                    return  # a TLS peer answered; certificates are MLflow's business (MLFLOW_TRACKING_*_CERT*)
                attempt += 1
                wait = backoff_s * 2 ** (attempt - 1)
                if attempt > retries or time.monotonic() + wait >= deadline:
                    reason = getattr(exc, "reason", exc)
                    raise TrackingError(
                        f"MLflow tracking server {redact_url(uri)} is unreachable ({reason}); {_fix_hint(uri)}"
                    ) from None
                time.sleep(wait)
    if scheme == "sqlite":
        from sqlalchemy.engine import make_url

        db = make_url(uri).database
        if not db or db == ":memory:" or db.startswith("file:"):
            return
        folder = Path(db).expanduser().parent
        if not folder.is_dir():
            raise TrackingError(
                f"MLflow tracking store {redact_url(uri)}: directory {folder} does not exist; create it "
                "(mkdir -p) or pass another tracking URI such as sqlite:///mlflow.db"
            )
        if not os.access(folder, os.W_OK):
            raise TrackingError(
                f"MLflow tracking store {redact_url(uri)}: directory {folder} is not writable; fix its permissions "
                "or pass another tracking URI such as sqlite:///mlflow.db"
            )


def _sqlite_lock_path(uri: str) -> Path | None:
    """Lock file beside a sqlite database file (None for other stores and in-memory databases)."""
    if _uri_scheme(uri) != "sqlite":
        return None
    return file_lock.lock_path_beside(uri, ".dtune-lock")


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
        settle_s: float = 1.0,
    ) -> None:
        self.client = client
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.experiment_name = experiment
        self.retries = max(0, int(retries))
        self.backoff_s = max(0.0, float(backoff_s))
        self.settle_s = max(0.0, float(settle_s))
        self._lock_path = _sqlite_lock_path(tracking_uri)

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
        settle_s: float = 1.0,
    ) -> Tracker:
        """Connect, check the store works now, and get or create ``experiment``.

        ``tracking_uri=None`` means MLflow's own resolution (``MLFLOW_TRACKING_URI``, else
        ``sqlite:///mlflow.db`` in the CWD). ``artifact_location`` only applies when the experiment is created
        (with a sqlite store MLflow otherwise puts artifacts under ``./mlruns`` of the CWD at that moment).
        ``settle_s`` is how long a process that just created a study's parent run waits before checking for a
        concurrent duplicate on server stores (see :meth:`parent_run`); sqlite stores use a file lock instead.
        Raises :class:`TrackingError` with a one-line, actionable message; never returns a half-working tracker.
        """
        uri = tracking_uri or mlflow.get_tracking_uri()
        _check_reachable(uri, retries, backoff_s)
        if _uri_scheme(uri) in ("http", "https"):
            for name, value in _HTTP_ENV_DEFAULTS.items():
                os.environ.setdefault(name, value)
        last: BaseException | None = None
        # One process at a time on a sqlite store: MLflow migrates a fresh file on first use, and several workers
        # doing it at once leave it broken for good (`table _alembic_tmp_experiments already exists`;
        # daizutabi/hydraflow#245). A holder hung for 5 minutes is gone round; the retries below still apply.
        with file_lock.held_lock(_sqlite_lock_path(uri), timeout_s=300):
            for attempt in range(max(0, retries) + 1):
                if attempt:
                    time.sleep(backoff_s * 2 ** (attempt - 1))
                try:
                    client = MlflowClient(tracking_uri=uri)
                    exp_id = cls._get_or_create_experiment(client, experiment, artifact_location)
                    return cls(client, uri, exp_id, experiment, retries, backoff_s, settle_s)
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
            f"cannot use MLflow tracking store {redact_url(uri)} ({_one_line(last)}); {_fix_hint(uri)}"
        )

    @staticmethod
    def _get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                return client.create_experiment(name, artifact_location=artifact_location)
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
                        _one_line(exc),
                    )
                    return None
                _log.debug("MLflow tracking: %s failed (%s), retrying", what, _one_line(exc))
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
        p = [Param(_key(k), _param_value(v)) for k, v in (params or {}).items()]
        m = [
            Metric(_key(k), fv, now, 0)
            for k, v in (metrics or {}).items()
            if (fv := _metric_value(v)) is not None
        ]
        t = [RunTag(_key(k), _tag_value(v)) for k, v in (tags or {}).items()]
        # Duplicate keys after sanitising would be rejected as a batch: last one wins.
        p = list({x.key: x for x in p}.values())
        t = list({x.key: x for x in t}.values())
        while p or m or t:
            p_chunk, p = p[:_MAX_PARAMS_PER_BATCH], p[_MAX_PARAMS_PER_BATCH:]
            room = _MAX_PARAMS_PER_BATCH - len(p_chunk)
            t_chunk, t = t[:room], t[room:]
            room = _MAX_ENTITIES_PER_BATCH - len(p_chunk) - len(t_chunk)
            m_chunk, m = m[:room], m[room:]
            self.client.log_batch(run_id, metrics=m_chunk, params=p_chunk, tags=t_chunk)

    def _add_missing_params(self, run: Any, params: dict) -> None:
        """Log only params the run lacks: MLflow params are write-once, and a resumed or retried call repeats
        them (the first value wins; a changed value is reported, not forced)."""
        have = run.data.params
        new: dict[str, Any] = {}
        for k, v in params.items():
            key, val = _key(k), _param_value(v)
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
        lit = _literal(study_name)
        cond = f"tags.`{RUN_TYPE_TAG}` = 'study'"
        runs = self._search(f"tags.`{STUDY_TAG}` = {lit} AND {cond}" if lit else cond, max_results=1000)
        return [r for r in runs if r.data.tags.get(STUDY_TAG) == study_name]

    def parent_run(self, study_name: str, *, params: dict, tags: dict) -> str | None:
        """The study's single parent run id, created on first use; None if tracking is unavailable.

        Idempotent across resumes and workers (found by tag ``dtune.study``; the oldest wins if several exist).
        Creation is the racy part when N workers start together:

        * sqlite stores: find-or-create runs under an exclusive file lock beside the database
          (``<db>.dtune-lock``), so exactly one process creates the run.
        * other stores (server, PostgreSQL): MLflow has no create-if-absent, so a creator waits ``settle_s``,
          re-reads, and if an older run exists deletes the one it created. Start times are taken client-side
          before the insert, so without the wait a creator that re-reads at once can miss a concurrent run
          that is older but commits later, and both workers keep their own (seen in tests: 11 of 30 races).
          A create request slower than ``settle_s`` can still slip through.

        Tags and params already on the run are kept (first writer wins); missing ones are added.
        """

        def work() -> str:
            with self._creation_lock() as locked:
                found = self._study_runs(study_name)
                mine = None
                if not found:
                    run_tags = {_key(k): _tag_value(v) for k, v in tags.items()}
                    run_tags.update({STUDY_TAG: study_name, RUN_TYPE_TAG: "study"})
                    run = self.client.create_run(self.experiment_id, tags=run_tags, run_name=study_name)
                    mine = run.info.run_id
                    if not locked and self.settle_s:
                        time.sleep(self.settle_s)
                    found = self._study_runs(study_name) or [run]
                keep = found[0]
                if mine is not None and keep.info.run_id != mine:
                    self.client.delete_run(mine)  # an older parent exists: ours is the duplicate
            missing_tags = {k: v for k, v in tags.items() if _key(k) not in keep.data.tags}
            if missing_tags:
                self._log_batch(keep.info.run_id, tags=missing_tags)
            self._add_missing_params(keep, params)
            return keep.info.run_id

        return self._attempt(f"parent run of study {study_name!r}", work)

    def _creation_lock(self, timeout_s: float = 30.0) -> contextlib.AbstractContextManager[bool]:
        """Exclusive inter-process lock for sqlite stores; yields whether it is held. After ``timeout_s`` (a
        holder stuck on a locked database) we go on unlocked and rely on the re-read; elsewhere (servers,
        no flock) the settle-and-re-read path applies."""
        return file_lock.held_lock(self._lock_path, timeout_s)

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
                run_tags = {_key(k): _tag_value(v) for k, v in tags.items()}
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

    # ------------------------------------------------------------------------------------------ artifacts

    def refresh_study_artifacts(self, parent_run_id: str, points: list[TrialPoint], *, title: str,
                                accuracy_scale: float | None = None) -> None:
        """(Re)write the study's Pareto artifacts and summary metrics on the parent run.

        Artifacts: pareto.html (self-contained plotly, works offline), pareto.png (matplotlib, since plotly
        PNG export needs kaleido + Chrome), trials.csv / trials.json (every point), front.json (front, knee,
        hypervolume). Metrics: n_complete, n_pruned, n_failed, n_feasible, front_size, best_accuracy,
        best_tokens_per_s (over the feasible front) and hypervolume (front vs the worst corner of all complete
        points). A failing file is skipped with a warning; the others are still uploaded. ``accuracy_scale``
        goes to :func:`pick_knee` (the knee in front.json is the one ``export --pick knee`` takes).
        """
        try:
            front = pareto_front(points)
            metrics = _study_metrics(points, front)
        except Exception as exc:  # noqa: BLE001 - odd points must not stop the study either
            _log.warning("MLflow tracking: study summary skipped: %s", _one_line(exc))
            return
        with tempfile.TemporaryDirectory(prefix="dtune-mlflow-") as tmp:
            folder = Path(tmp)
            _write_study_files(folder, points, front, title, metrics, accuracy_scale)

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

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        """Terminate a run (``FINISHED``, ``FAILED`` or ``KILLED``; Optuna state names are mapped)."""
        mlflow_status = _TERMINAL.get(status.upper(), status.upper())
        self._attempt("finish run", lambda: self.client.set_terminated(run_id, status=mlflow_status))


# ---------------------------------------------------------------------------------------------- helpers


def _study_metrics(points: Iterable[TrialPoint], front: list[TrialPoint]) -> dict[str, float]:
    pts = list(points)
    complete = [p for p in pts if p.state == "COMPLETE"]
    out: dict[str, float] = {
        "n_complete": len(complete),
        "n_pruned": sum(p.state == "PRUNED" for p in pts),
        "n_failed": sum(p.state == "FAIL" for p in pts),
        "n_feasible": sum(p.feasible for p in complete),
        "front_size": len(front),
    }
    if front:
        out["best_accuracy"] = max(p.accuracy for p in front)
        out["best_tokens_per_s"] = max(p.tokens_per_s for p in front)
    finite = [
        p
        for p in complete
        if _metric_value(p.accuracy) is not None and _metric_value(p.tokens_per_s) is not None
    ]
    if finite:
        ref = (min(p.accuracy for p in finite), min(p.tokens_per_s for p in finite))
        out["hypervolume"] = hypervolume_2d(front, ref)
    return out


def _jsonable(value: Any) -> Any:
    """NaN/inf -> None so trials.json stays strict JSON (a failed trial has NaN objectives)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _write_study_files(
    folder: Path, points: list[TrialPoint], front: list[TrialPoint], title: str, metrics: dict[str, float],
    accuracy_scale: float | None = None,
) -> None:
    """Write each artifact independently so one failure (say, a plotting bug) does not cost the others."""
    on_front = {p.number for p in front}
    rows = [_jsonable({**p.to_dict(), "on_front": p.number in on_front}) for p in points]

    def trials_csv(path: Path) -> None:
        param_names = sorted({str(k) for p in points for k in p.params})
        base = [
            "number",
            "label",
            "state",
            "feasible",
            "on_front",
            "accuracy",
            "tokens_per_s",
            "nfe",
            "ci_low",
            "ci_high",
        ]
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(base + [f"param.{n}" for n in param_names])
            for r in rows:
                params = {str(k): v for k, v in r["params"].items()}
                writer.writerow(
                    [_csv_cell(r[c]) for c in base] + [_csv_cell(params.get(n)) for n in param_names]
                )

    def front_json(path: Path) -> None:
        knee = pick_knee(front, accuracy_scale).number if front else None
        doc = {
            "title": title,
            "knee_trial": knee,
            "hypervolume": metrics.get("hypervolume"),
            "front": [_jsonable(p.to_dict()) for p in front],
            "table": front_table(front),
        }
        path.write_text(json.dumps(doc, indent=2, default=str))

    writers: dict[str, Callable[[Path], Any]] = {
        "trials.csv": trials_csv,
        "trials.json": lambda path: path.write_text(json.dumps(rows, indent=2, default=str)),
        "front.json": front_json,
        "pareto.html": lambda path: pareto_figure(points, front, title).write_html(
            str(path), include_plotlyjs=True
        ),
        "pareto.png": lambda path: save_pareto_png(points, front, path, title),
    }
    for name, write in writers.items():
        try:
            write(folder / name)
        except Exception as exc:  # noqa: BLE001 - a broken artifact must not stop the rest or the study
            (folder / name).unlink(missing_ok=True)
            _log.warning("MLflow tracking: could not build %s, skipped: %s", name, _one_line(exc))


class Backlog:
    """Runs tracking calls on one background thread, in order, so the next trial never waits for MLflow.

    A trial's nested run and the refreshed Pareto artifacts cost 0.1-0.4 s on a local store, more against a
    remote server and much more while an outage is retried; on the trial loop's thread that is dead time between
    trials. Calls run one at a time in submission order (MLflow clients are not shared across threads), errors are
    logged as warnings like every tracking failure, and :meth:`close` drains the queue, so a run that returns has
    logged everything. A process killed with SIGKILL loses at most the calls still queued; the trials themselves
    are safe in the study.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple, dict] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="dtune-tracking", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._queue.put((fn, args, kwargs))

    def close(self, timeout_s: float | None = None) -> None:
        """Run what is queued, then stop the thread (idempotent)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args, kwargs = item
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - tracking must never stop tuning
                _log.warning("MLflow tracking: %s failed: %s", getattr(fn, "__name__", fn), _one_line(exc))
