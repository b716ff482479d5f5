"""MLflow tracking of studies: one parent run per study, one nested run per trial, the study's report as artifacts,
and profiles in the model registry.

Names are imported on first use (PEP 562), so `tuner promote` checks its arguments through `registry` before
MLflow, which `client` imports, costs its second or two. What the artifacts hold is `tuner.report.files`'s
business; the tracker only uploads them.
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
