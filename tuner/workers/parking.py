"""A test hook: park a worker's trial where its evaluation starts until the test releases it, so that a fault test
places its fault (SIGKILL, a PostgreSQL stop, Ctrl-C) by an event rather than by the machine's speed.

Does nothing unless the environment variable DTUNE_TEST_PARK names a folder (the test's). Then:

* while `<folder>/hold` exists, a worker whose trial is about to evaluate (its configuration recorded, so the
  trial is RUNNING with a `config_key` in the storage) writes `<folder>/<pid>-<trial>.parked` (JSON: pid, trial,
  worker label) and waits;
* it goes on once its own marker is removed (the test releases that one trial) or `hold` is removed (all of them,
  and no trial parks any more);
* Ctrl-C and SIGTERM interrupt the wait like any other point of a trial, and after DTUNE_TEST_PARK_TIMEOUT seconds
  (default 300) it goes on by itself, so that a test that died never leaves a worker parked for good.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .interrupts import interrupts

ENV = "DTUNE_TEST_PARK"
TIMEOUT_ENV = "DTUNE_TEST_PARK_TIMEOUT"
HOLD = "hold"


def park(trial: int, label: str = "") -> None:
    """Wait here while the test holds trials (a no-op without DTUNE_TEST_PARK)."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    hold = Path(folder) / HOLD
    if not hold.exists():
        return
    marker = Path(folder) / f"{os.getpid()}-{trial}.parked"
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "trial": trial, "worker": label}))
    tmp.rename(marker)  # atomic: the test never reads half a marker
    deadline = time.monotonic() + float(os.environ.get(TIMEOUT_ENV) or 300)
    try:
        while marker.exists() and hold.exists() and time.monotonic() < deadline:
            interrupts.check()
            time.sleep(0.05)
    finally:
        marker.unlink(missing_ok=True)
