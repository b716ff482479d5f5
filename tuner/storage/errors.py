"""The study database's errors: each one line on the CLI, exit 2."""

from __future__ import annotations

from ..base.errors import TunerError


class StorageError(TunerError):
    """The study database can't be reached or used."""


class ForeignStorageError(StorageError):
    """The database holds another program's tables: dtune writes nothing into it."""


class EmptyStorageError(StorageError):
    """A command that only reads a study (`show`, `export`) was pointed at a database without any."""
