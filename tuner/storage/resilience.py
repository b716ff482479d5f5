"""Optuna's RDB storage through database outages: every call retried for up to `outage_s`, heartbeats that never
raise, stale trials that include orphans, and no trial judged stale right after an outage."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy

from ..base.errors import db_error
from ..base.urls import redact_url
from .optuna_internals import CACHED_STORAGE_CALLS

log = logging.getLogger(__name__)

DEFAULT_OUTAGE_S = 300.0
MAX_BACKOFF_S = 4.0  # short, so heartbeats resume within seconds of the database coming back

# Connection-level failures (server restarting, network blip, SQLite writer holding the file): the statement never
# ran or was rolled back, so calling again is safe. Everything else (bad data, schema) fails the same way again.
_TRANSIENT = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError)


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
        """Seconds left before the current outage is given up on (0 when none is under way)."""
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
    """Wrap a storage method: transient errors are retried with backoff for up to `self.outage_s` seconds.

    Only the outermost retried call of a thread retries: Optuna's storage calls call each other (a trial's
    creation reads trials), and nested retry loops would each wait out a whole outage in turn."""

    @functools.wraps(method)
    def wrapper(self: ResilientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        depth = self.__dict__.setdefault("_retry_depth", threading.local())
        if getattr(depth, "inside", False):
            return method(self, *args, **kwargs)
        depth.inside = True
        try:
            watch, wait = OutageWatch(self, self.url, self.outage_s), 0.5
            while True:
                try:
                    result = method(self, *args, **kwargs)
                except Exception as exc:
                    if not is_transient(exc) or not watch.failed(exc):
                        raise
                    time.sleep(min(wait, watch.remaining()) * random.uniform(0.8, 1.2))
                    wait = min(wait * 2, MAX_BACKOFF_S)
                    continue
                watch.answered()
                return result
        finally:
            depth.inside = False

    return wrapper


def _retried_calls(cls: type[optuna.storages.RDBStorage]) -> type[optuna.storages.RDBStorage]:
    """Class decorator: every storage call of Optuna's API (and the private ones its cache uses) retried."""
    for name in sorted({*optuna.storages.BaseStorage.__abstractmethods__, *CACHED_STORAGE_CALLS}):
        if name not in cls.__dict__ and hasattr(optuna.storages.RDBStorage, name):
            setattr(cls, name, _retrying(getattr(optuna.storages.RDBStorage, name)))
    return cls


@_retried_calls
class ResilientRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage for long multi-worker studies.

    * Every storage call retries connection-level errors for up to `outage_s` seconds, so a PostgreSQL restart
      or a network blip costs a pause, not a worker (nor a trial whose final write failed); after an outage no
      trial is judged stale for one grace period, since nobody could write heartbeats meanwhile.
    * A heartbeat that still fails is logged, not raised: Optuna beats in a thread, and an exception there would
      end a live trial's heartbeats, so other workers would retry it.
    * Stale trials include *orphans*: RUNNING trials with no heartbeat row, started over `orphan_after_s` ago
      (a worker killed before its first beat), which Optuna never judges and which would hold a budget slot
      forever.
    """

    outage_s: float = DEFAULT_OUTAGE_S
    orphan_after_s: float = 300.0
    recovered_at: float | None = None  # monotonic time the last outage ended

    def mark_recovered(self) -> None:
        """An outage just ended (`OutageWatch.answered`): start the post-outage grace period."""
        self.recovered_at = time.monotonic()

    def record_heartbeat(self, trial_id: int) -> None:
        """Record the trial's heartbeat, retrying through an outage; a failure after that is a warning, never raised."""
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
        if self.recovered_at is not None and time.monotonic() - self.recovered_at < grace + MAX_BACKOFF_S:
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
