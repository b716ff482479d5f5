"""The few Optuna internals dtune relies on, behind one adapter (checked against Optuna 5.1).

* `optuna.Study._storage` (the cache Optuna puts in front of an RDB storage) and its `_backend`, `Study._study_id`
  and `FrozenTrial._trial_id`: to reach the storage dtune opened from a study or trial object (`backend`,
  `study_id`, `trial_id`);
* the private storage calls through which that cache reads trials, creates them and sets params
  (`CACHED_STORAGE_CALLS`), which the resilient storage retries like the public API;
* the ORM metadata naming Optuna's tables (`optuna_tables`), and the logger of its RDB storage (`FallbackNotice`);
* `Study._get_trials`, which the GP sampler calls and `tuner.study.sampling.StudyView` overrides.

When an Optuna upgrade moves one of these, this module (and its tests) is where it shows.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import optuna

CACHED_STORAGE_CALLS = ("_get_trials", "_create_new_trial", "_set_trial_param", "_get_best_trial_id")
RDB_STORAGE_LOGGER = "optuna.storages._rdb.storage"


def backend(storage_or_study: Any) -> Any:
    """The storage behind a study (or behind Optuna's cache in front of it); the object itself otherwise."""
    storage = getattr(storage_or_study, "_storage", storage_or_study)
    return getattr(storage, "_backend", storage)


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: Any) -> int:
    """A trial's id in the storage (FrozenTrial._trial_id; a running Trial's too)."""
    return trial._trial_id


def optuna_tables() -> frozenset[str]:
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


class FallbackNotice(logging.Filter):
    """Drop Optuna's "Caught an error from sqlalchemy: … Falling back to a slower alternative." (with the SQL
    statement, several lines): it comes with every trial read a connection drop interrupts, and the outage is
    reported once by `OutageWatch` instead. The fallback itself (also taken for over-long IN lists) still runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Caught an error from sqlalchemy")


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines off for the block (dtune prints its own; the verbosity before is restored)."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(before, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def quiet_fallback_notices() -> None:
    """Install `FallbackNotice` on Optuna's RDB storage logger (idempotent; when a storage is opened)."""
    logger = logging.getLogger(RDB_STORAGE_LOGGER)
    if not any(isinstance(f, FallbackNotice) for f in logger.filters):
        logger.addFilter(FallbackNotice())
