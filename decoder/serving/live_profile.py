"""The profile a server decodes with, re-read without a restart: on request (SIGHUP) or every `interval_s` seconds.

A re-read happens on a thread of its own (a `models:/NAME@ALIAS` URI goes through MLflow, which may take a while),
and swaps the config in one assignment: the decode thread reads `current` once per batch, so a promotion reaches
the next batch and never a batch in flight. A re-read that fails (registry down, a profile for another model)
keeps the config in use and is logged and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import DecodeConfig
from ..errors import DecoderError
from ..profile import load_profile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedProfile:
    config: DecodeConfig
    source: str
    loaded_at: float  # time.time() of the read that produced it
    generation: int  # 1 for the profile read at start, +1 for each re-read that changed the config


class LiveProfile:
    """`current` is the profile read last; `request_reload()` wakes the re-reading thread."""

    def __init__(self, source: str, model_source: dict[str, Any], *, allow_mismatch: bool = False,
                 interval_s: float | None = None, on_reload: Callable[[bool], None] | None = None):
        self.source = source
        self._model_source = model_source
        self._allow_mismatch = allow_mismatch
        self._interval_s = interval_s
        self._on_reload = on_reload or (lambda ok: None)
        self.current = LoadedProfile(self._read(), source, time.time(), 1)  # a bad profile fails the start
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> DecodeConfig:
        return load_profile(self.source, self._model_source, allow_mismatch=self._allow_mismatch)

    def reload(self) -> bool:
        """Read the profile again now; True when it was read (changed or not), False when it failed."""
        try:
            config = self._read()
        except DecoderError as exc:
            log.warning("profile %s not re-read, still decoding with the previous one: %s", self.source, exc)
            self._on_reload(False)
            return False
        old = self.current
        if config != old.config:
            changed = {k: v for k, v in config.to_dict().items() if old.config.to_dict()[k] != v}
            log.info("profile %s re-read: the next batch decodes with %s", self.source, changed)
            self.current = LoadedProfile(config, self.source, time.time(), old.generation + 1)
        self._on_reload(True)
        return True

    def request_reload(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dtune-profile", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval_s)
            if self._stopping.is_set():
                return
            self._wake.clear()
            self.reload()
