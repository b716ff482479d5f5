"""Checks that a tracking store can work before a study starts, and the one-line fix for each kind of store: a wrong
URI or a server that is down must fail in seconds, not after MLflow's minutes of HTTP retries."""

from __future__ import annotations

import os
import ssl
import time
import urllib.error
import urllib.request

from ..base.errors import TunerError
from ..base.urls import redact_url, sqlite_file


class TrackingError(TunerError):
    """The tracking store cannot be used at start-up; the message is one line naming the URI and the fix."""


# Bound a dead tracking server's cost per call: MLflow's defaults (7 retries, 120 s timeout) stall a trial for
# minutes on every log call. And no "🏃 View run … / 🧪 View experiment …" lines on every terminated run (one per
# trial, burying the study's own lines): a worker prints its study's link once (store.run_link). Only set when the
# user has not chosen values (os.environ.setdefault).
HTTP_ENV_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
                     "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
HTTP_CHECK_BUDGET_S = 8.0


def uri_scheme(uri: str) -> str:
    """``http``, ``sqlite``, ``postgresql+psycopg``..., ``databricks``, or ``file`` for plain paths."""
    if uri.startswith("databricks"):
        return "databricks"
    return uri.split(":", 1)[0].lower() if "://" in uri or uri.startswith("sqlite:") else "file"


def fix_hint(uri: str) -> str:
    """The one-line fix to suggest for a tracking store of this kind that can't be used."""
    scheme = uri_scheme(uri)
    if scheme in ("http", "https"):
        return "start the server (e.g. `mlflow server --host 127.0.0.1 --port 5000`) or pass another tracking URI"
    if scheme == "sqlite":
        return "fix the path or the database file, or pass another tracking URI such as sqlite:///mlflow.db"
    if scheme == "file":
        return (
            "MLflow >= 3.13 refuses the ./mlruns file store: use sqlite:///mlflow.db "
            "(`mlflow migrate-filestore` moves old runs) or set MLFLOW_ALLOW_FILE_STORE=true"
        )
    return "check the URI, its credentials and that the database is running"


def check_reachable(uri: str, retries: int, backoff_s: float) -> None:
    """Fail fast (seconds, not MLflow's minutes of HTTP retries) when the store clearly cannot work."""
    scheme = uri_scheme(uri)
    if scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        deadline = time.monotonic() + HTTP_CHECK_BUDGET_S
        attempt = 0
        while True:
            try:
                with urllib.request.urlopen(url, timeout=max(0.5, min(5.0, deadline - time.monotonic()))):
                    return
            except urllib.error.HTTPError:
                return  # the server answered (404 behind a proxy, 401 with auth): reachable is all we check
            except OSError as exc:  # URLError, refused, timeouts
                if isinstance(getattr(exc, "reason", exc), ssl.SSLError):
                    return  # a TLS peer answered; certificates are MLflow's business (MLFLOW_TRACKING_*_CERT*)
                attempt += 1
                wait = backoff_s * 2 ** (attempt - 1)
                if attempt > retries or time.monotonic() + wait >= deadline:
                    reason = getattr(exc, "reason", exc)
                    raise TrackingError(
                        f"MLflow tracking server {redact_url(uri)} is unreachable ({reason}); {fix_hint(uri)}"
                    ) from None
                time.sleep(wait)
    if scheme == "sqlite":
        db = sqlite_file(uri)
        if db is None:
            return
        folder = db.parent
        if not folder.is_dir():
            raise TrackingError(
                f"MLflow tracking store {redact_url(uri)}: directory {folder} does not exist; create it "
                "(mkdir -p) or pass another tracking URI such as sqlite:///mlflow.db"
            )
        if not os.access(folder, os.W_OK):
            raise TrackingError(
                f"MLflow tracking store {redact_url(uri)}: directory {folder} is not writable; fix its permissions "
                "or pass another tracking URI such as sqlite:///mlflow.db"
            )




def run_link(uri: str, experiment_id: str, run_id: str) -> str:
    """Where a reviewer opens a run: its page on a tracking server, else the `mlflow ui` command for a local store."""
    if uri_scheme(uri) in ("http", "https"):
        return f"{redact_url(uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"run {run_id} (open with `mlflow ui --backend-store-uri {redact_url(uri)}`)"
