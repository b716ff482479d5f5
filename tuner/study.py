"""One tuning study: an Optuna multi-objective study (maximise accuracy and tokens/s) over a spec's search space.

* Storage: Optuna's RDB storage through SQLAlchemy — a SQLite file by default, any SQLAlchemy URL (PostgreSQL)
  otherwise — so re-running the same command resumes the study and Ctrl-C keeps every finished trial.
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
import datetime as dt
import functools
import hashlib
import json
import logging
import random
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from decoder import DecodeConfig

from . import file_lock
from .evaluate import EvalResult, Evaluator
from .pareto import TrialPoint, pareto_front
from .sampling import make_sampler
from .spec import StudySpec
from .stats import cannot_reach

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///dtune.db"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class StorageError(RuntimeError):
    """The study database can't be reached or used."""


def default_study_name(spec: StudySpec) -> str:
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.model.rstrip("/").split("/")[-1])
    return f"{spec.task}-{model}-{spec.fingerprint()}"


# Connection-level failures (server restarting, network blip, SQLite writer holding the file): the statement never
# ran or was rolled back, so calling again is safe. Everything else (bad data, schema) fails the same way again.
_TRANSIENT = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError)
# File systems whose locks SQLite can't rely on across hosts (sqlite.org/faq.html#q5): a shared file corrupts.
_NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "glusterfs", "fuse.glusterfs", "lustre", "ceph",
               "fuse.ceph", "gpfs", "beegfs", "fuse.s3fs", "fuse.gcsfuse"}
DEFAULT_HEARTBEAT_S = 10
DEFAULT_OUTAGE_S = 300.0
_MAX_BACKOFF_S = 4.0  # short, so heartbeats resume within seconds of the database coming back


def _is_transient(exc: BaseException) -> bool:
    """A storage error worth retrying: a connection-level SQLAlchemy error, also when Optuna wrapped it.

    SQLite reports everything as OperationalError, "no such table" and a read-only file included; of its
    errors only a busy or locked database passes.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, _TRANSIENT):
            orig = getattr(cur, "orig", None)
            if type(orig).__module__ == "sqlite3":
                return any(word in str(orig).lower() for word in ("locked", "busy"))
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def _first_line(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    text = str(cause).strip()
    return f"{type(cause).__name__}: {text.splitlines()[0]}" if text else type(cause).__name__


def _retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a storage method: transient errors are retried with backoff for up to `self.outage_s` seconds."""

    @functools.wraps(method)
    def wrapper(self: ResilientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        deadline, wait, warned = None, 0.5, False
        while True:
            try:
                result = method(self, *args, **kwargs)
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                now = time.monotonic()
                deadline = deadline or now + self.outage_s
                if now >= deadline:
                    raise
                if not warned:
                    log.warning("study storage %s unreachable (%s); retrying for up to %.0f s",
                                _redact(self.url), _first_line(exc), self.outage_s)
                    warned = True
                time.sleep(min(wait, max(0.0, deadline - now)) * random.uniform(0.8, 1.2))
                wait = min(wait * 2, _MAX_BACKOFF_S)
                continue
            if warned:
                log.warning("study storage %s is back", _redact(self.url))
                self.recovered_at = time.monotonic()
            return result

    return wrapper


class ResilientRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage for long multi-worker studies.

    * Every storage call retries connection-level errors for up to `outage_s` seconds, so a PostgreSQL restart or
      a network blip mid-study costs a pause, not a worker (a trial whose final write failed would otherwise be
      lost and re-run after its heartbeat went stale). After an outage no trial is judged stale for one grace
      period: nobody could write heartbeats meanwhile.
    * A heartbeat that still fails after that is logged, not raised: Optuna records heartbeats in a thread, and
      an exception there would end the heartbeats of a trial that is still running, so other workers would
      retry a live trial.
    * Stale trials also include *orphans*: RUNNING trials without any heartbeat row that started more than
      `orphan_after_s` ago. Optuna only judges trials that have a heartbeat, but a worker killed between
      creating its trial and its first heartbeat, or a run before heartbeats were on, leaves such a trial, and
      it would otherwise hold a slot of the budget forever.
    """

    outage_s: float = DEFAULT_OUTAGE_S
    orphan_after_s: float = 300.0
    recovered_at: float | None = None  # monotonic time the last outage ended

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self._record_heartbeat_retrying(trial_id)
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            log.warning("heartbeat of trial id %d not recorded: %s", trial_id, _first_line(exc))

    @_retrying
    def _record_heartbeat_retrying(self, trial_id: int) -> None:
        super().record_heartbeat(trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = self._stale_and_orphans(study_id)
        # Right after an outage every heartbeat looks old: the other workers couldn't write theirs either. Judge
        # none until they have had a grace period (plus a retry) to catch up, or live trials would be retried.
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        if self.recovered_at is not None and time.monotonic() - self.recovered_at < grace + _MAX_BACKOFF_S:
            return []
        return stale

    @_retrying
    def _stale_and_orphans(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        return stale + [t for t in self._orphan_trial_ids(study_id) if t not in stale]

    def _orphan_trial_ids(self, study_id: int) -> list[int]:
        # Optuna's schema (tables `trials`, `trial_heartbeats`; versioned by its alembic migrations) rather than
        # its ORM classes, whose Python attributes change between releases.
        query = sqlalchemy.text(
            "SELECT t.trial_id FROM trials t WHERE t.study_id = :study AND t.state = 'RUNNING' "
            "AND NOT EXISTS (SELECT 1 FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)")
        with self.engine.connect() as conn:
            candidates = [row[0] for row in conn.execute(query, {"study": study_id})]
        # datetime_start comes from the worker's clock; the margin is minutes, so clock skew doesn't matter.
        cutoff = dt.datetime.now() - dt.timedelta(seconds=self.orphan_after_s)
        orphans = []
        for trial_id in candidates:
            start = self.get_trial(trial_id).datetime_start
            if start is not None and start < cutoff:
                orphans.append(trial_id)
        return orphans


for _name in sorted(optuna.storages.BaseStorage.__abstractmethods__):
    setattr(ResilientRDBStorage, _name, _retrying(getattr(optuna.storages.RDBStorage, _name)))


class StaleTrialHandler:
    """Optuna's RetryHeartbeatStaleTrialCallback (re-queue the stale trial as WAITING with its params, user
    attrs and `system_attrs["failed_trial"]`), plus listeners so a run can log the failed trial (to MLflow)."""

    def __init__(self, max_retry: int | None) -> None:
        with warnings.catch_warnings():  # "experimental" since Optuna 2.8, unchanged since
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.listeners: list[Callable[[FrozenTrial], None]] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        log.warning("trial %d lost its worker (no heartbeat); failed and re-queued", trial.number)
        self._retry(study, trial)
        for listener in self.listeners:
            try:
                listener(trial)
            except Exception as exc:  # noqa: BLE001 - a logging hook must not break the retry
                log.warning("stale-trial listener failed: %s", _first_line(exc))


def open_storage(url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 retry_stale: int | None = 2, outage_s: float = DEFAULT_OUTAGE_S) -> ResilientRDBStorage:
    """RDB storage with the options many workers need.

    * Heartbeats (`heartbeat_interval`, stale after `grace_period`, default 3 intervals): a killed worker's
      trial is failed and re-queued (at most `retry_stale` times) by whichever worker next looks for work.
    * Pre-pinged pooled connections (PostgreSQL drops idle ones during long trials, optuna#5600), a connect
      timeout and TCP keepalives so a vanished server is noticed, and retried calls (`outage_s`).
    * Creating the schema on a fresh PostgreSQL database is serialised with an advisory lock: N workers starting
      together otherwise race on CREATE TABLE (optuna#1092, #4621).

    Raises StorageError with one line when the database can't be reached or used now: at start-up a wrong URL
    or a server that is down should say so at once rather than wait out an outage.
    """
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    dialect = url.split(":", 1)[0].split("+", 1)[0].lower()
    if dialect == "sqlite":
        _check_sqlite_path(url)
        engine_kwargs["connect_args"] = {"timeout": 30}
    elif dialect in ("postgresql", "postgres"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30,
                                         "keepalives_interval": 10, "keepalives_count": 3}
    handler = None
    if heartbeat_interval:
        grace_period = grace_period or 3 * heartbeat_interval
        handler = StaleTrialHandler(retry_stale)
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # heartbeat_interval is "experimental" since Optuna 2.9, stable in use
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                with _schema_lock(url, engine_kwargs.get("connect_args", {})):
                    storage = ResilientRDBStorage(url, engine_kwargs=engine_kwargs,
                                                  heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                                  heartbeat_stale_trial_callback=handler)
            break
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # A table-creation race the locks don't cover (another database): the next try finds the tables.
            if attempt == 2:
                raise StorageError(f"can't create the study tables in {_redact(url)}") from None
            time.sleep(random.uniform(0.2, 1.0))
        except Exception as exc:  # SQLAlchemy raises many types: bad URL, refused connection, auth, corrupt file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StorageError(f"can't open the study storage {_redact(url)}: {first}") from None
    storage.outage_s = outage_s
    if heartbeat_interval:
        storage.orphan_after_s = max(300.0, 10.0 * (grace_period or 0))
    return storage


def stale_handler(storage: optuna.storages.BaseStorage) -> StaleTrialHandler | None:
    backend = getattr(storage, "_backend", storage)  # optuna.Study wraps an RDBStorage in a cache
    callback = getattr(backend, "heartbeat_stale_trial_callback", None)
    return callback if isinstance(callback, StaleTrialHandler) else None


def _check_sqlite_path(url: str) -> None:
    """Refuse a SQLite file on a network file system: its locks don't hold there and the file corrupts."""
    from sqlalchemy.engine import make_url

    db = make_url(url).database
    if not db or db == ":memory:" or db.startswith("file:"):
        return
    fs = _fs_type(Path(db).expanduser().absolute().parent)
    if fs in _NETWORK_FS:
        raise StorageError(f"the study storage {url} is a SQLite file on a network file system ({fs}), where "
                           "SQLite's locking is unreliable and a shared file corrupts; put it on a local disk or "
                           "use PostgreSQL (README, \"Scale out\")")


def _fs_type(path: Path) -> str | None:
    """The type of the file system holding `path` (longest mount point in /proc/mounts), None if unknown."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    best, fs = "", None
    target = str(path.resolve()) if path.exists() else str(path)
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best, fs = point, parts[2]
    return fs


@contextlib.contextmanager
def _schema_lock(url: str, connect_args: dict[str, Any]) -> Iterator[None]:
    """Serialise Optuna's table creation among workers: a PostgreSQL advisory lock, or the study lock file
    beside a SQLite database (concurrent first use otherwise fails with a duplicate `alembic_version` row).

    Also where an unreachable PostgreSQL server is first reported: the same one-line error either way.
    """
    if url.startswith("sqlite"):
        # Not held after 60 s (a hung holder): go on, the caller retries a failed creation.
        with file_lock.held_lock(_sqlite_lock_path(url), timeout_s=60):
            yield
        return
    if not url.startswith(("postgresql", "postgres")):
        yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _lock_key("optuna-schema")})
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key("optuna-schema")})
    finally:
        engine.dispose()


def _sqlite_lock_path(url: str) -> Path | None:
    """`<db>.dtune-study.lock` beside a SQLite file (None in memory): the schema and study lock of its studies."""
    return file_lock.lock_path_beside(url, ".dtune-study.lock")


def _lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for `name`, the same in every process and on every machine."""
    return int.from_bytes(hashlib.sha256(f"dtune:{name}".encode()).digest()[:8], "big", signed=True)


class StudyLock:
    """Mutual exclusion among all workers of one study, wherever they run.

    Study set-up (create or load, enqueue the references), MLflow parent-run creation and each trial claim
    (count finished + running trials, then ask for one) run under it, so N workers that start together create one
    study, enqueue each reference once, and never claim more trials than the budget.

    * PostgreSQL: a session advisory lock keyed by the study name, on a connection of its own; a killed worker's
      connection closes and the server drops its lock at once.
    * SQLite: `flock` on `<db>.dtune-study.lock`; the kernel drops it when the holder dies (same machine only,
      which is all SQLite supports).
    * Other databases: no lock (logged once); a claim race can then overshoot the budget by a trial or two.

    A lock not obtained within `timeout_s` (a holder hung, not dead) is skipped with a warning rather than
    stalling every worker.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str, timeout_s: float = 120.0) -> None:
        self.url = storage.url
        self.key = _lock_key(f"study:{study_name}")
        self.timeout_s = timeout_s
        self.outage_s = getattr(storage, "outage_s", DEFAULT_OUTAGE_S)
        self._engine: sqlalchemy.Engine | None = None
        self._conn: sqlalchemy.Connection | None = None
        self._fh: Any = None
        self.kind = "none"
        if self.url.startswith(("postgresql", "postgres")):
            self.kind = "postgresql"
            self._engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool,
                                                    connect_args=storage.engine_kwargs.get("connect_args", {}))
        elif self.url.startswith("sqlite") and (path := _sqlite_lock_path(self.url)) is not None:
            self.kind, self._path = "file", path
        if self.kind == "none":
            log.info("no cross-worker lock for %s: concurrent claims may overshoot the trial budget",
                     _redact(self.url))

    @property
    def held(self) -> bool:
        return self._conn is not None or self._fh is not None

    def acquire(self) -> bool:
        """Take the lock; False when it was skipped after `timeout_s` (or there is none for this database)."""
        if self.held:
            return True
        if self.kind == "postgresql":
            return self._acquire_pg()
        if self.kind == "file":
            return self._acquire_file()
        return False

    def release(self) -> None:
        """Release if held; idempotent, so the objective can release early and the caller again in `finally`."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):  # a dead connection already lost the lock with its session
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            with contextlib.suppress(Exception):
                conn.close()
        if self._fh is not None:
            fh, self._fh = self._fh, None
            file_lock.release(fh)

    def close(self) -> None:
        self.release()
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _acquire_pg(self) -> bool:
        assert self._engine is not None
        deadline = time.monotonic() + self.timeout_s
        outage_deadline, wait = None, 0.05
        while True:
            try:
                if self._conn is None:
                    self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                got = self._conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
            except Exception as exc:
                self._drop_conn()
                if not _is_transient(exc):
                    raise
                now = time.monotonic()
                if outage_deadline is None:
                    outage_deadline = now + self.outage_s
                    log.warning("study storage %s unreachable (%s); retrying for up to %.0f s", _redact(self.url),
                                _first_line(exc), self.outage_s)
                if now >= outage_deadline:
                    raise StorageError(f"lost the study storage {_redact(self.url)} for {self.outage_s:.0f} s: "
                                       f"{_first_line(exc)}") from None
                time.sleep(2.0)
                continue
            if outage_deadline is not None:
                log.warning("study storage %s is back", _redact(self.url))
                outage_deadline = None
            if got:
                return True
            if time.monotonic() >= deadline:
                self._drop_conn()
                log.warning("study lock not obtained in %.0f s (a worker holding it seems hung); going on without",
                            self.timeout_s)
                return False
            time.sleep(wait * random.uniform(0.5, 1.5))
            wait = min(wait * 1.5, 0.5)

    def _drop_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
            with contextlib.suppress(Exception):
                conn.close()

    def _acquire_file(self) -> bool:
        fh = open(self._path, "a+")  # noqa: SIM115 - kept open while held, closed by release()
        if file_lock.acquire(fh, self.timeout_s):
            self._fh = fh
            return True
        fh.close()
        log.warning("study lock %s not obtained in %.0f s; going on without", self._path, self.timeout_s)
        return False


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


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
    return json.dumps(config.normalized().to_dict(), sort_keys=True)


def create_study(spec: StudySpec, storage: optuna.storages.RDBStorage, name: str, seed: int | None, *,
                 worker: int | None = 0, lock: StudyLock | None = None) -> tuple[optuna.Study, int]:
    """Create the study, or load it (resume, or another worker created it first); returns it and the worker index.

    Runs under the study lock, so of N workers starting together exactly one creates the study, records the
    spec and enqueues the reference points; the others load a fully set-up study. A creator killed half-way
    leaves no `initialized` mark, and the next worker finishes the set-up (enqueuing only missing references).

    `worker=None` allocates the next free index from the study (`workers_started`), so workers started on
    several machines without `--worker-index` still get distinct sampler seeds (identical seeds propose
    identical points, optuna#1547). The sampler is seeded with `seed + worker`.
    """
    own_lock = lock is None
    lock = lock or StudyLock(storage, name)
    try:
        with lock:
            try:
                study = optuna.create_study(storage=storage, study_name=name, directions=["maximize", "maximize"])
            except optuna.exceptions.DuplicatedStudyError:
                study = optuna.load_study(study_name=name, storage=storage)
            if not study.user_attrs.get("initialized"):
                _initialize(study, spec)
            if worker is None:
                worker = int(study.user_attrs.get("workers_started", 0))
                study.set_user_attr("workers_started", worker + 1)
    finally:
        if own_lock:
            lock.close()
    study.sampler = make_sampler(spec.sampler, None if seed is None else seed + worker, spec.trials)
    return study, worker


def _initialize(study: optuna.Study, spec: StudySpec) -> None:
    with warnings.catch_warnings():  # set_metric_names is "experimental" since Optuna 3.2, and stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", "tokens_per_s"])
    study.set_user_attr("spec", spec.to_dict())
    present = {t.user_attrs.get("reference") for t in study.get_trials(deepcopy=False)}
    for ref in spec.references:
        if ref.name not in present:
            study.enqueue_trial(reference_params(spec, ref.name), user_attrs={"reference": ref.name})
    study.set_user_attr("initialized", True)


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def budget_counts(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials: what counts against the budget now, and what may still add to it."""
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    finished = sum(t.state in FINISHED for t in trials)
    return finished, len(trials) - finished


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.RetryHeartbeatStaleTrialCallback()(study, trial)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail trials whose worker stopped sending heartbeats and re-queue them (Optuna does this only right before
    a worker asks for a new trial; idle workers waiting for the last trials call it so a dead worker's trial is
    still retried)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@dataclass
class TrialOutcome:
    number: int
    config: DecodeConfig
    result: EvalResult | None
    reused_from: int | None = None


class Objective:
    """Evaluates one trial: suggest knobs → DecodeConfig → (dedupe) → chunked evaluation → constraint."""

    def __init__(self, spec: StudySpec, evaluator: Evaluator, items: list, *,
                 on_progress: Callable[[int, int, int], None] | None = None,
                 on_trial_start: Callable[[int, DecodeConfig], None] | None = None):
        self.spec, self.evaluator, self.items = spec, evaluator, items
        self.on_progress, self.on_trial_start = on_progress, on_trial_start
        self.dists = distributions(spec)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        params = {name: suggest(trial, name, dist) for name, dist in self.dists.items()}
        trials = trial.study.get_trials(deepcopy=False)  # one read for the reference and duplicate look-ups
        reference = self.reference_of(trial, trials)
        if reference is not None:
            config = self.spec.reference_config(self.spec.reference(reference))
        else:
            config = self.spec.config_for(params)
        key = config_key(config)
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("config_key", key)
        earlier = self._earlier(trials, key, trial.number)
        if earlier is not None:
            return self._reuse(trial, earlier)

        baseline = self.baseline_accuracy(trial.study)
        is_baseline = reference == self.spec.constraint.baseline
        target = None if baseline is None or is_baseline else baseline - self.spec.constraint.max_drop / 100
        if self.on_trial_start:
            self.on_trial_start(trial.number, config)
        stop = None if target is None else (lambda c, seen, total: cannot_reach(c, seen, total, target))
        result = self.evaluator.evaluate(self.items, config, chunk_size=self.spec.chunk_size, should_stop=stop,
                                         on_progress=self.on_progress)
        metrics = result.metrics()
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("outcomes", "".join("1" if o else "0" for o in result.outcomes))
        if is_baseline:
            trial.study.set_user_attr("baseline", {"trial": trial.number, "accuracy": result.accuracy,
                                                   "reference": reference})
            target = result.accuracy - self.spec.constraint.max_drop / 100
        elif target is None:
            # With several workers the baseline may finish while this trial runs: use its bar if it's known now.
            baseline = self.baseline_accuracy(trial.study)
            target = None if baseline is None else baseline - self.spec.constraint.max_drop / 100
        # <= 0 is feasible: how far the accuracy falls short of the bar. A trial that ends before the baseline
        # (another worker still runs it) can't know the bar and records 0 (feasible) for the sampler; fronts and
        # exports re-judge every trial against the baseline once it is known (trial_points).
        trial.set_constraint("accuracy", 0.0 if target is None else target - result.accuracy)
        if result.stopped_early:
            trial.set_user_attr("pruned_after", result.n)
            raise optuna.TrialPruned(f"accuracy {result.accuracy:.3f} after {result.n} items can't reach {target:.3f}")
        return result.accuracy, result.tokens_per_s

    @staticmethod
    def reference_of(trial: optuna.Trial, trials: list[FrozenTrial] | None = None) -> str | None:
        """The reference this trial evaluates, if any. A retry of a stale trial is a copy that keeps the original's
        params and user attrs (Optuna's RetryHeartbeatStaleTrialCallback); should an attr be missing, the
        original trial (`system_attrs["failed_trial"]`) still knows, so a retried baseline stays the baseline."""
        reference = trial.user_attrs.get("reference")
        if reference is not None:
            return reference
        by_number = {t.number: t for t in (trial.study.get_trials(deepcopy=False) if trials is None else trials)}
        me = by_number.get(trial.number)
        original = None if me is None else me.system_attrs.get("failed_trial")
        if original is not None and original in by_number:
            reference = by_number[original].user_attrs.get("reference")
            if reference is not None:
                trial.set_user_attr("reference", reference)
        return reference

    @staticmethod
    def baseline_accuracy(study: optuna.Study) -> float | None:
        base = study.user_attrs.get("baseline")
        return None if base is None else float(base["accuracy"])

    @staticmethod
    def _earlier(trials: list[FrozenTrial], key: str, number: int) -> FrozenTrial | None:
        for t in trials:
            if t.state == TrialState.COMPLETE and t.number != number and t.user_attrs.get("config_key") == key:
                return t
        return None

    def _reuse(self, trial: optuna.Trial, earlier: FrozenTrial) -> tuple[float, float]:
        trial.set_user_attr("duplicate_of", earlier.number)
        trial.set_user_attr("metrics", earlier.user_attrs.get("metrics", {}))
        for key, value in (earlier.constraints or {}).items():
            trial.set_constraint(key, value)
        return tuple(earlier.values)  # type: ignore[return-value]


def trial_points(study: optuna.Study) -> list[TrialPoint]:
    """Every finished trial as a TrialPoint (pruned ones carry their partial accuracy).

    Feasibility is judged against the study's baseline when it is known: a trial that finished before the
    baseline (another worker still running it) could only record an unknown bar in its constraint.
    """
    base = study.user_attrs.get("baseline")
    spec = study.user_attrs.get("spec") or {}
    max_drop = float((spec.get("constraint") or {}).get("max_drop", 1.0))
    bar = None if base is None else float(base["accuracy"]) - max_drop / 100
    points = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        m = t.user_attrs.get("metrics", {})
        acc = t.values[0] if t.values else m.get("accuracy", 0.0)
        tps = t.values[1] if t.values else m.get("tokens_per_s", 0.0)
        if bar is not None:
            feasible = acc >= bar - 1e-12
        else:
            feasible = all(v <= 0 for v in (t.constraints or {}).values())
        points.append(TrialPoint(
            number=t.number, accuracy=float(acc), tokens_per_s=float(tps), feasible=feasible, state=t.state.name,
            params=_shown_params(t), label=t.user_attrs.get("reference"), nfe=m.get("nfe"),
            ci_low=m.get("accuracy_ci_low"), ci_high=m.get("accuracy_ci_high"),
        ))
    return points


def _shown_params(t: FrozenTrial) -> dict[str, Any]:
    """The knobs a trial ran with. A vanilla reference reports placeholder streaming knobs to the sampler
    (Knob.most_vanilla_like); people looking at a front or a trials table see its real settings instead."""
    config = t.user_attrs.get("config") or {}
    if config.get("mode", "streaming") == "streaming":
        return dict(t.params)
    return {"mode": config["mode"], **{k: config[k] for k in ("steps", "block_size", "early_exit") if k in config}}


def front(study: optuna.Study) -> list[TrialPoint]:
    return pareto_front(trial_points(study))


def wait_for(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()
