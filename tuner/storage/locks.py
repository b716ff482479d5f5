"""Mutual exclusion among a study's workers, wherever they run: a PostgreSQL advisory lock, or a file lock beside
a SQLite database."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from ..base import file_lock
from ..base.errors import db_error
from ..base.urls import redact_url
from .errors import StorageError
from .resilience import DEFAULT_OUTAGE_S, OutageWatch, is_transient

log = logging.getLogger(__name__)


@contextlib.contextmanager
def schema_lock(url: str, connect_args: dict[str, Any]) -> Iterator[None]:
    """Serialise Optuna's table creation among workers: a PostgreSQL advisory lock, or the study lock file
    beside a SQLite database (concurrent first use otherwise fails with a duplicate `alembic_version` row).

    Also where an unreachable PostgreSQL server is first reported: the same one-line error either way.
    """
    if url.startswith("sqlite"):
        # Not held after 60 s (a hung holder): go on, the caller retries a failed creation.
        with file_lock.held_lock(sqlite_lock_path(url), timeout_s=60):
            yield
        return
    if not url.startswith(("postgresql", "postgres")):
        yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": lock_key("optuna-schema")})
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key("optuna-schema")})
    finally:
        engine.dispose()


def sqlite_lock_path(url: str) -> Path | None:
    """`<db>.dtune-study.lock` beside a SQLite file (None in memory): the schema and study lock of its studies."""
    return file_lock.lock_path_beside(url, ".dtune-study.lock")


def lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for `name`, the same in every process and on every machine."""
    return int.from_bytes(hashlib.sha256(f"dtune:{name}".encode()).digest()[:8], "big", signed=True)


class StudyLock:
    """Mutual exclusion among all workers of one study, wherever they run.

    Study set-up, MLflow parent-run creation and each trial claim run under it, so N workers that start together
    create one study, enqueue each reference once and never claim more trials than the budget.

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
        self.key = lock_key(f"study:{study_name}")
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
        elif self.url.startswith("sqlite") and (path := sqlite_lock_path(self.url)) is not None:
            self.kind, self._path = "file", path
        if self.kind == "none":
            log.info("no cross-worker lock for %s: concurrent claims may overshoot the trial budget",
                     redact_url(self.url))

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
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
        """Release the lock and the connection pool behind it."""
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
