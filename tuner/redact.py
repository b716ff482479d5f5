"""Hide passwords in database and tracking URLs before they reach a log line, an error, MLflow or a profile."""

from __future__ import annotations

import re


def redact_url(url: str) -> str:
    """``scheme://user:password@host/...`` → ``scheme://user:***@host/...``; other strings unchanged.

    The password runs to the first ``@`` (an ``@`` in it must be percent-encoded), as SQLAlchemy parses it, so
    one with a ``/`` in it is hidden too: hiding a little more (an ``@`` later in a path) beats printing a secret.
    """
    return re.sub(r"(://[^/:@]*):[^@]*@", r"\1:***@", url)
