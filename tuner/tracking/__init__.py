"""MLflow tracking of studies: one parent run per study, one nested run per trial, the study's report as artifacts.

* `client`  — the run lifecycle through an explicit MlflowClient (`Tracker`);
* `store`   — start-up checks of the tracking URI and the fix to suggest (`TrackingError`);
* `values`  — keys and values as MLflow accepts them;
* `backlog` — tracking calls on a background thread, so trials don't wait for MLflow;
* `registry` — profiles as registered-model versions, and the aliases production loads them by.

What the artifacts hold is `tuner.report.files`'s business; the tracker only uploads them.

Names are imported on first use (PEP 562): `tuner promote` checks its arguments through `registry` before MLflow
(which `client` imports) costs its second or two.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {"Backlog": "backlog", "TrackingError": "store",
            **{name: "client" for name in ("PARENT_TAG", "RUN_TYPE_TAG", "STATE_TAG", "STUDY_TAG", "TRIAL_TAG",
                                           "Tracker")}}
__all__ = ["PARENT_TAG", "RUN_TYPE_TAG", "STATE_TAG", "STUDY_TAG", "TRIAL_TAG", "Backlog", "Tracker", "TrackingError"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from .backlog import Backlog
    from .client import PARENT_TAG, RUN_TYPE_TAG, STATE_TAG, STUDY_TAG, TRIAL_TAG, Tracker
    from .store import TrackingError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tuner.tracking' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
