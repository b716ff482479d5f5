"""Ctrl-C and SIGTERM for a worker: raise KeyboardInterrupt at once, and remember it."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Interrupts:
    """Python swallows a KeyboardInterrupt that lands inside a finalizer (`Exception ignored in ... __del__`), so the
    worker also checks the flag after every evaluated chunk and between trials, and an interrupt is never lost.
    SIGTERM (a scheduler preempting, `kill`, the `--n-workers` parent forwarding) ends a run like Ctrl-C: the
    running trial is re-queued rather than left running until its heartbeat goes stale."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def request(self, signum: int | None = None, frame: Any = None) -> None:
        self._event.set()
        raise KeyboardInterrupt

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[None]:
        """Install the handler for SIGINT and SIGTERM for the block (fresh: an earlier interrupt is forgotten)."""
        self._event.clear()
        previous = {sig: signal.signal(sig, self.request) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


interrupts = Interrupts()
