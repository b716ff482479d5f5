"""Hide passwords in database and tracking URLs before they reach a log line, an error, MLflow or a profile."""

from __future__ import annotations

import re


def redact_url(url: str) -> str:
    """``scheme://user:password@host/...`` → ``scheme://user:***@host/...``; other strings unchanged."""
    return re.sub(r"(://[^/:@]*):[^/@]*@", r"\1:***@", url)
