"""Database and tracking URLs: hide their passwords, and find the file behind a SQLite URL."""

from __future__ import annotations

import re
from pathlib import Path

DEFAULT_STORAGE = "sqlite:///dtune.db"  # the study database when no --storage / $OPTUNA_STORAGE is given


def redact_url(url: str) -> str:
    """``scheme://user:password@host/...`` → ``scheme://user:***@host/...``; other strings unchanged.

    The password runs to the first ``@`` (an ``@`` in it must be percent-encoded), as SQLAlchemy parses it, so
    one with a ``/`` in it is hidden too: hiding a little more (an ``@`` later in a path) beats printing a secret.
    """
    return re.sub(r"(://[^/:@]*):[^@]*@", r"\1:***@", url)


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite SQLAlchemy URL, made absolute (a later chdir must not move it); None for
    other databases and for in-memory or ``file:`` URI databases."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a SQLAlchemy URL at all: certainly not a SQLite file
        return None
    if not parsed.drivername.startswith("sqlite"):
        return None
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).expanduser().absolute()
