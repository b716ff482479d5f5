"""Keep libraries' chatter off a command's stderr, where a bad input must read as one line.

Two sources: MLflow's (and alembic's) table set-up lines on a SQLite tracking store's first use, printed before
any error that follows, and Optuna's traceback for a trial "failed" by Ctrl-C or SIGTERM (the worker re-queues
it and the CLI says what happened in one line; any other failed trial is still logged in full). `datasets`'
progress bars are switched off where it is imported (tuner.tasks.loading), so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import re

# Loggers whose INFO lines are routine set-up of a store, not news to a user.
QUIET_LOGGERS = ("mlflow.store.db.utils", "mlflow.store.db.db_types", "alembic", "alembic.runtime.migration")
OPTUNA_TRIAL_LOGGER = "optuna.study._optimize"  # where Optuna logs a failed trial (optuna/study/_optimize.py)
_FAILED_WITH_VALUE = re.compile(r"Trial (\d+) failed with value ")
_FAILED_WITH_PARAMS = re.compile(r"Trial (\d+) failed with parameters")


class BelowWarning(logging.Filter):
    """Drop a logger's DEBUG/INFO records. A filter, not a level: MLflow configures its loggers with dictConfig
    when it is imported, which resets the level of every existing child logger (but keeps its filters)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


class DropInterruptedTrials(logging.Filter):
    """Drop Optuna's two lines about a trial that "failed" because the run was interrupted."""

    def __init__(self) -> None:
        super().__init__()
        self._interrupted: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        exc = record.exc_info[1] if record.exc_info else None
        started = _FAILED_WITH_PARAMS.match(message)
        if started and (isinstance(exc, KeyboardInterrupt) or "KeyboardInterrupt" in message):
            self._interrupted.add(started.group(1))
            return False
        after = _FAILED_WITH_VALUE.match(message)
        if after and after.group(1) in self._interrupted:
            self._interrupted.discard(after.group(1))
            return False
        return True


_installed: DropInterruptedTrials | None = None


def quiet_libraries() -> None:
    """Install the filters above (idempotent); called by each CLI before a command runs."""
    global _installed
    if _installed is None:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).addFilter(BelowWarning())
        _installed = DropInterruptedTrials()
        logging.getLogger(OPTUNA_TRIAL_LOGGER).addFilter(_installed)
