"""Typed errors of the task layer (kept apart so that loading and base can both raise them)."""

from __future__ import annotations

from ..base.errors import TunerError


class TaskError(TunerError):
    """A task was asked for something it does not have (unknown task, unknown split, bad option)."""


class DataUnavailableError(TaskError):
    """The records of a task cannot be obtained (no hub access and no local data directory, missing file)."""
