"""MLflow tracking of studies: one parent run per study, one nested run per trial, the study's report as artifacts.

* `client`  — the run lifecycle through an explicit MlflowClient (`Tracker`);
* `store`   — start-up checks of the tracking URI and the fix to suggest (`TrackingError`);
* `values`  — keys and values as MLflow accepts them;
* `backlog` — tracking calls on a background thread, so trials don't wait for MLflow.

What the artifacts hold is `tuner.report`'s business; the tracker only uploads them.
"""

from .backlog import Backlog
from .client import PARENT_TAG, RUN_TYPE_TAG, STATE_TAG, STUDY_TAG, TRIAL_TAG, Tracker
from .store import TrackingError

__all__ = ["PARENT_TAG", "RUN_TYPE_TAG", "STATE_TAG", "STUDY_TAG", "TRIAL_TAG", "Backlog", "Tracker", "TrackingError"]
