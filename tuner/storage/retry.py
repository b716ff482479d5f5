"""Trials a dead or interrupted worker left: failed, then queued again without what the failed attempt wrote."""

from __future__ import annotations

import logging
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial

from ..base.errors import db_error
from .optuna_internals import backend
from .record import retry_attrs, retry_count

log = logging.getLogger(__name__)


def queue_retry(study: optuna.Study, trial: FrozenTrial, max_retry: int | None = None) -> bool:
    """Queue a copy of failed `trial` as WAITING, as Optuna's RetryHeartbeatStaleTrialCallback does (same params
    and distributions, the first attempt and the retry history recorded), but without what the failed attempt
    wrote about its outcome (`record.retry_attrs`). False when `max_retry` is used up."""
    if max_retry is not None and retry_count(trial) > max_retry:
        return False
    user_attrs, system_attrs = retry_attrs(trial)
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


def stale_handler(storage: optuna.storages.BaseStorage) -> StaleTrialHandler | None:
    callback = getattr(backend(storage), "heartbeat_stale_trial_callback", None)
    return callback if isinstance(callback, StaleTrialHandler) else None
