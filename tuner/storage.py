"""The study database: Optuna's RDB storage made fit for long studies shared by many workers.

* `open_storage`: a SQLite file or any SQLAlchemy URL (PostgreSQL), with heartbeats so a killed worker's trial is
  failed and re-queued, pre-pinged pooled connections, and every call retried through a database outage.
* `StudyLock`: mutual exclusion among a study's workers (a PostgreSQL advisory lock, a file lock beside a SQLite
  file) for study set-up and trial claims, so the references are enqueued once and the budget is exact.

Kept apart from `tuner.study` (what a trial does) because this is about the database only and is the one place that
knows Optuna's schema (`_orphan_trial_ids`): look here when an Optuna upgrade moves its tables.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import logging
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial

from . import file_lock
from .errors import TunerError, db_error, one_line
from .urls import redact_url, sqlite_file

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///dtune.db"


class StorageError(TunerError):
    """The study database can't be reached or used."""


class ForeignStorageError(StorageError):
    """The database holds another program's tables: dtune writes nothing into it."""


class EmptyStorageError(StorageError):
    """A command that only reads a study (`show`, `export`) was pointed at a database without any."""




def _optuna_tables() -> frozenset[str]:
    """Optuna's tables (its ORM's metadata; alembic_version is its migrations' own): a database holding other
    tables and not Optuna's belongs to another program. The names of Optuna 5.1 if its module moves."""
    try:
        from optuna.storages._rdb.models import BaseModel

        names = frozenset(BaseModel.metadata.tables)
    except (ImportError, AttributeError):  # pragma: no cover - a future Optuna layout
        names = frozenset({"studies", "study_directions", "study_system_attributes", "study_user_attributes",
                           "trial_heartbeats", "trial_intermediate_values", "trial_params", "trial_system_attributes",
                           "trial_user_attributes", "trial_values", "trials", "version_info"})
    return names | {"alembic_version"}


OPTUNA_TABLES = _optuna_tables()
_SQLITE_MAGIC = b"SQLite format 3\x00"


# Connection-level failures (server restarting, network blip, SQLite writer holding the file): the statement never
# ran or was rolled back, so calling again is safe. Everything else (bad data, schema) fails the same way again.
_TRANSIENT = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError)
# File systems whose locks SQLite can't rely on across hosts (sqlite.org/faq.html#q5): a shared file corrupts.
_NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "glusterfs", "fuse.glusterfs", "lustre", "ceph",
               "fuse.ceph", "gpfs", "beegfs", "fuse.s3fs", "fuse.gcsfuse"}
DEFAULT_HEARTBEAT_S = 10
DEFAULT_OUTAGE_S = 300.0
_MAX_BACKOFF_S = 4.0  # short, so heartbeats resume within seconds of the database coming back


def is_transient(exc: BaseException) -> bool:
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


class OutageWatch:
    """How every path that waits on the study database through an outage reports it: one warning when it starts
    failing, retries until `outage_s` have passed, and once it answers again one "is back" warning and the
    storage marked recovered (`ResilientRDBStorage.mark_recovered`), so no trial is judged stale for a grace
    period afterwards — nobody could write heartbeats meanwhile. Storage calls, heartbeats and the study lock
    all wait through this one class, so none of them can skip the grace period.
    """

    def __init__(self, storage: Any, url: str, outage_s: float) -> None:
        self.storage, self.url, self.outage_s = storage, url, outage_s
        self.deadline: float | None = None

    def failed(self, exc: BaseException) -> bool:
        """A transient failure: True to retry (warned once), False once the outage has lasted `outage_s`."""
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.outage_s
            log.warning("study storage %s unreachable (%s); retrying for up to %.0f s", redact_url(self.url),
                        db_error(exc), self.outage_s)
        return now < self.deadline

    def remaining(self) -> float:
        return 0.0 if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def answered(self) -> None:
        """The database answered: if it had been failing, say it is back and mark the storage recovered."""
        if self.deadline is None:
            return
        self.deadline = None
        log.warning("study storage %s is back", redact_url(self.url))
        mark = getattr(self.storage, "mark_recovered", None)
        if mark is not None:
            mark()


def _retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a storage method: transient errors are retried with backoff for up to `self.outage_s` seconds."""

    @functools.wraps(method)
    def wrapper(self: ResilientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        watch, wait = OutageWatch(self, self.url, self.outage_s), 0.5
        while True:
            try:
                result = method(self, *args, **kwargs)
            except Exception as exc:
                if not is_transient(exc) or not watch.failed(exc):
                    raise
                time.sleep(min(wait, watch.remaining()) * random.uniform(0.8, 1.2))
                wait = min(wait * 2, _MAX_BACKOFF_S)
                continue
            watch.answered()
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

    def mark_recovered(self) -> None:
        """An outage just ended (`OutageWatch.answered`): start the post-outage grace period."""
        self.recovered_at = time.monotonic()

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self._record_heartbeat_retrying(trial_id)
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            log.warning("heartbeat of trial id %d not recorded: %s", trial_id, db_error(exc))

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

    @_retrying
    def silent_running_trials(self, study_id: int, silent_s: float) -> dict[int, float]:
        """Numbers of the study's RUNNING trials whose last heartbeat is more than `silent_s` old (their worker
        looks dead; they are failed and re-queued once stale), with that age in seconds, on the database's
        clock as Optuna's stale check is."""
        query = sqlalchemy.text(
            "SELECT t.number, h.heartbeat FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
            "WHERE t.study_id = :study AND t.state = 'RUNNING'")
        with self.engine.connect() as conn:
            now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar_one()
            rows = list(conn.execute(query, {"study": study_id}))
        now = now.replace(tzinfo=None) if isinstance(now, dt.datetime) else dt.datetime.fromisoformat(str(now))
        ages = {}
        for number, beat in rows:
            beat = beat if isinstance(beat, dt.datetime) else dt.datetime.fromisoformat(str(beat))
            age = (now - beat.replace(tzinfo=None)).total_seconds()
            if age > silent_s:
                ages[int(number)] = age
        return ages

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


# Every storage call: the abstract API, and the private methods through which Optuna's cache in front of an RDB
# storage (`optuna.storages._CachedStorage`, what `optuna.Study` holds) reads trials, creates them and sets params.
# Left unwrapped, `study.get_trials()` or a claim during an outage ended the worker instead of waiting.
_CACHE_CALLS = ("_get_trials", "_create_new_trial", "_set_trial_param", "_get_best_trial_id")
for _name in sorted({*optuna.storages.BaseStorage.__abstractmethods__, *_CACHE_CALLS}):
    if hasattr(optuna.storages.RDBStorage, _name):
        setattr(ResilientRDBStorage, _name, _retrying(getattr(optuna.storages.RDBStorage, _name)))


class _NoFallbackNotice(logging.Filter):
    """Drop Optuna's "Caught an error from sqlalchemy: … Falling back to a slower alternative." (with the SQL
    statement, several lines): it comes with every trial read a connection drop interrupts, and the outage is
    reported once by `OutageWatch` instead. The fallback itself (also taken for over-long IN lists) still runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Caught an error from sqlalchemy")


logging.getLogger("optuna.storages._rdb.storage").addFilter(_NoFallbackNotice())


# What one attempt of a trial wrote about its own outcome; a retry starts without them. Optuna keeps constraints in
# system attrs (`constraints:<key>`, or `constraints` from create_trial), and `set_constraint` ignores a key already
# set (with a UserWarning): a retry that inherited them would carry the failed attempt's constraint, not its own.
ATTEMPT_USER_ATTRS = ("metrics", "outcomes", "race", "pruned_after", "duplicate_of", "worker")


def _attempt_system_attr(key: str) -> bool:
    return key == "constraints" or key.startswith("constraints:")


def queue_retry(study: optuna.Study, trial: FrozenTrial, max_retry: int | None = None) -> bool:
    """Queue a copy of failed `trial` as WAITING, as Optuna's RetryHeartbeatStaleTrialCallback does (same params
    and distributions, `system_attrs["failed_trial"]` = the first attempt, `["retry_history"]`), but without what
    the failed attempt wrote about its outcome (see ATTEMPT_USER_ATTRS). False when `max_retry` is used up."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if max_retry is not None and len(history) > max_retry:
        return False
    system_attrs = {k: v for k, v in trial.system_attrs.items() if not _attempt_system_attr(k)}
    system_attrs.update(failed_trial=trial.system_attrs.get("failed_trial", trial.number), retry_history=history)
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in ATTEMPT_USER_ATTRS}
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING, params=trial.params,
                                              distributions=trial.distributions, user_attrs=user_attrs,
                                              system_attrs=system_attrs))
    return True


class StaleTrialHandler:
    """Re-queue a heartbeat-stale trial (`queue_retry`: Optuna's RetryHeartbeatStaleTrialCallback without the
    failed attempt's outcome), plus listeners so a run can log the failed trial (to MLflow)."""

    def __init__(self, max_retry: int | None) -> None:
        self.max_retry = max_retry
        self.listeners: list[Callable[[FrozenTrial], None]] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        log.warning("trial %d lost its worker (no heartbeat); failed and re-queued", trial.number)
        queue_retry(study, trial, self.max_retry)
        for listener in self.listeners:
            try:
                listener(trial)
            except Exception as exc:  # noqa: BLE001 - a logging hook must not break the retry
                log.warning("stale-trial listener failed: %s", db_error(exc))


def open_storage(url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 retry_stale: int | None = 2, outage_s: float = DEFAULT_OUTAGE_S, create: bool = True,
                 write: bool = True) -> ResilientRDBStorage:
    """RDB storage with the options many workers need.

    * Heartbeats (`heartbeat_interval`, stale after `grace_period`, default 3 intervals): a killed worker's
      trial is failed and re-queued (at most `retry_stale` times) by whichever worker next looks for work.
    * Pre-pinged pooled connections (PostgreSQL drops idle ones during long trials, optuna#5600), a connect
      timeout and TCP keepalives so a vanished server is noticed, and retried calls (`outage_s`).
    * Creating the schema on a fresh PostgreSQL database is serialised with an advisory lock: N workers starting
      together otherwise race on CREATE TABLE (optuna#1092, #4621).

    Raises StorageError with one line when the database can't be reached or used now: at start-up a wrong URL
    or a server that is down should say so at once rather than wait out an outage. Only an empty database or one
    holding Optuna's schema is used (`check_storage`): `create=False` (a command that reads a study) creates no
    file and no table, `write=False` doesn't ask for write access.
    """
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    dialect = url.split(":", 1)[0].split("+", 1)[0].lower()
    if dialect == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": 30}
    elif dialect in ("postgresql", "postgres"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30,
                                         "keepalives_interval": 10, "keepalives_count": 3}
    if dialect == "sqlite":
        _check_sqlite_path(url)
    # Before Optuna creates a table: only an empty database or one holding Optuna's schema is used.
    check_storage(url, create=create, write=write, connect_args=engine_kwargs.get("connect_args", {}))
    handler = None
    if heartbeat_interval:
        grace_period = grace_period or 3 * heartbeat_interval
        handler = StaleTrialHandler(retry_stale)
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # heartbeat_interval is "experimental" since Optuna 2.9, stable in use
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # A reader finds the tables there (checked above): no table creation, so no lock for it either.
                with _schema_lock(url, engine_kwargs.get("connect_args", {})) if create else contextlib.nullcontext():
                    storage = ResilientRDBStorage(url, engine_kwargs=engine_kwargs,
                                                  heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                                  heartbeat_stale_trial_callback=handler,
                                                  skip_table_creation=not create)
            break
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # A table-creation race the locks don't cover (another database): the next try finds the tables.
            if attempt == 2:
                raise StorageError(f"can't create the study tables in {redact_url(url)}") from None
            time.sleep(random.uniform(0.2, 1.0))
        except Exception as exc:  # SQLAlchemy raises many types: bad URL, refused connection, auth, corrupt file
            raise StorageError(f"can't open the study storage {redact_url(url)}: {one_line(exc, first=True)}") from None
    storage.outage_s = outage_s
    if heartbeat_interval:
        storage.orphan_after_s = max(300.0, 10.0 * (grace_period or 0))
    return storage


def check_storage(url: str, *, create: bool = True, write: bool = True,
                  connect_args: dict[str, Any] | None = None) -> None:
    """Refuse, before anything is written, a database dtune must not use:

    * one holding another program's tables and not Optuna's (`--storage sqlite:///other-app.db`): Optuna would add
      its tables to it (ForeignStorageError); a SQLite path that is not a SQLite file at all;
    * for a reader (`create=False`): a missing file or an empty database (EmptyStorageError; nothing is created);
    * for a writer (`write=True`): a database it can't write (a read-only file, folder or connection), found by a
      no-op UPDATE in a rolled-back transaction, rather than Optuna's 100-line error half-way through set-up.
    """
    shown = redact_url(url)
    db = sqlite_file(url)
    if db is not None:
        if db.is_dir():
            raise StorageError(f"the study storage {shown} names a directory, not a database file")
        if not db.exists():
            if not create:
                raise EmptyStorageError(f"no study database at {db}")
            if not db.parent.is_dir():
                raise StorageError(f"the study storage {shown}: directory {db.parent} does not exist")
            if not os.access(db.parent, os.W_OK | os.X_OK):
                raise StorageError(f"the study storage {shown}: directory {db.parent} is not writable")
            return
        try:
            with open(db, "rb") as fh:
                head = fh.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise StorageError(f"the study storage {shown} can't be read: {exc.strerror or exc}") from None
        if head and head != _SQLITE_MAGIC:
            raise ForeignStorageError(f"the study storage {shown} is not a SQLite database ({db} holds something "
                                      "else); refusing to write into it: pass another --storage")
        if write and not (os.access(db, os.W_OK) and os.access(db.parent, os.W_OK | os.X_OK)):
            raise StorageError(f"the study database {db} is read-only (file or folder permissions); fix them or "
                               "pass another --storage")
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args or {})
    try:
        with engine.connect() as conn:
            tables = set(sqlalchemy.inspect(conn).get_table_names())
            ours = tables & OPTUNA_TABLES
            foreign = tables - OPTUNA_TABLES
            if foreign and not {"studies", "version_info"} <= ours:
                listed = ", ".join(sorted(foreign)[:5]) + (", …" if len(foreign) > 5 else "")
                raise ForeignStorageError(
                    f"the study storage {shown} holds another program's tables ({listed}) and no Optuna study "
                    "tables; refusing to write into it: pass another --storage (e.g. sqlite:///dtune.db)")
            if not create and "studies" not in tables:
                raise EmptyStorageError(f"no study tables in {shown}")
            if write and "version_info" in tables:
                try:
                    conn.execute(sqlalchemy.text("UPDATE version_info SET schema_version = schema_version "
                                                 "WHERE 1 = 0"))
                finally:
                    conn.rollback()
    except StorageError:
        raise
    except Exception as exc:  # connection refused, auth, a corrupt file, a read-only database
        text = one_line(exc, cause=True, first=True)
        if "readonly" in text.replace("-", "").replace(" ", "").lower() or "read-only" in text.lower():
            raise StorageError(f"the study storage {shown} is read-only ({text}); fix its permissions or pass "
                               "another --storage") from None
        raise StorageError(f"can't open the study storage {shown}: {text}") from None
    finally:
        engine.dispose()


def stale_handler(storage: optuna.storages.BaseStorage) -> StaleTrialHandler | None:
    backend = getattr(storage, "_backend", storage)  # optuna.Study wraps an RDBStorage in a cache
    callback = getattr(backend, "heartbeat_stale_trial_callback", None)
    return callback if isinstance(callback, StaleTrialHandler) else None


def _check_sqlite_path(url: str) -> None:
    """Refuse a SQLite file on a network file system: its locks don't hold there and the file corrupts."""
    db = sqlite_file(url)
    if db is None:
        return
    fs = _fs_type(db.parent)
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
        self.storage, self.url = storage, storage.url
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
                     redact_url(self.url))

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
        watch, wait = OutageWatch(self.storage, self.url, self.outage_s), 0.05
        while True:
            try:
                if self._conn is None:
                    self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                got = self._conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
            except Exception as exc:
                self._drop_conn()
                if not is_transient(exc):
                    raise
                if not watch.failed(exc):
                    raise StorageError(f"lost the study storage {redact_url(self.url)} for {self.outage_s:.0f} s: "
                                       f"{db_error(exc)}") from None
                time.sleep(min(2.0, watch.remaining()))
                continue
            watch.answered()
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


@contextlib.contextmanager
def held_study_lock(storage: optuna.storages.RDBStorage, name: str, timeout_s: float = 120.0) -> Iterator[bool]:
    """A `StudyLock` on `name` for the block (yields whether it is held), closed afterwards: for the long, rare
    sections that need their own lock (growing the baseline ledger), apart from the claim lock."""
    lock = StudyLock(storage, name, timeout_s=timeout_s)
    try:
        yield lock.acquire()
    finally:
        lock.close()
