"""Opening the study database: a SQLite file or any SQLAlchemy URL (PostgreSQL), checked before anything is
written, with heartbeats so a killed worker's trial is failed and re-queued."""

from __future__ import annotations

import contextlib
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from ..base.errors import one_line
from ..base.urls import redact_url, sqlite_file
from .errors import EmptyStorageError, ForeignStorageError, StorageError
from .locks import schema_lock
from .optuna_internals import optuna_tables, quiet_fallback_notices
from .resilience import DEFAULT_OUTAGE_S, ResilientRDBStorage
from .retry import StaleTrialHandler

_OPTUNA_TABLES = optuna_tables()
_SQLITE_MAGIC = b"SQLite format 3\x00"
# File systems whose locks SQLite can't rely on across hosts (sqlite.org/faq.html#q5): a shared file corrupts.
_NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "glusterfs", "fuse.glusterfs", "lustre", "ceph",
               "fuse.ceph", "gpfs", "beegfs", "fuse.s3fs", "fuse.gcsfuse"}
DEFAULT_HEARTBEAT_S = 10


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
    quiet_fallback_notices()
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
                with schema_lock(url, engine_kwargs.get("connect_args", {})) if create else contextlib.nullcontext():
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
    check_url(url)
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
            ours = tables & _OPTUNA_TABLES
            foreign = tables - _OPTUNA_TABLES
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


def check_url(url: str) -> None:
    """Refuse, in one line, a storage string SQLAlchemy can't parse as a database URL (`sqlite///x.db`)."""
    try:
        sqlalchemy.engine.make_url(url)
    except Exception as exc:  # noqa: BLE001 - ArgumentError, or ValueError for a bad port
        raise StorageError(f"the study storage {redact_url(url)!r} is not a database URL ({one_line(exc, first=True)});"
                           " use sqlite:///path/to/file.db or postgresql+psycopg://user@host/db") from None


def _check_sqlite_path(url: str) -> None:
    """Refuse a SQLite file on a network file system: its locks don't hold there and the file corrupts."""
    db = sqlite_file(url)
    if db is None:
        return
    fs = _fs_type(db.parent)
    if fs in _NETWORK_FS:
        raise StorageError(f"the study storage {url} is a SQLite file on a network file system ({fs}), where "
                           "SQLite's locking is unreliable and a shared file corrupts; put it on a local disk or "
                           "use PostgreSQL (docs/scale-out.md)")


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
