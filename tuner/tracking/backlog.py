"""Tracking calls on a background thread, so the next trial never waits for MLflow."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from ..base.errors import one_line

_log = logging.getLogger("tuner.tracking")


class Backlog:
    """Runs tracking calls on one background thread, in submission order, so the next trial never waits for MLflow.

    A trial's run and the refreshed artifacts cost 0.1-0.4 s on a local store and far more while an outage is
    retried. One thread, because MLflow clients are not shared across threads; errors are warnings, like every
    tracking failure; :meth:`close` drains the queue, so a run that returns has logged everything (SIGKILL loses
    at most what is queued; the trials themselves are safe in the study).
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple, dict] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="dtune-tracking", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)`` to run after everything submitted before it."""
        self._queue.put((fn, args, kwargs))

    def close(self, timeout_s: float | None = None) -> None:
        """Run what is queued, then stop the thread (idempotent)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args, kwargs = item
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - tracking must never stop tuning
                _log.warning("MLflow tracking: %s failed: %s", getattr(fn, "__name__", fn), one_line(exc, with_type=True, limit=300))
