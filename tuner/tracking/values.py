"""Values as MLflow accepts them: keys it allows, params as strings, finite metrics, tags within its limits.

MLflow rejects a whole batch for one bad key or an over-long value, and stores NaN/inf metrics misleadingly; every
value the tracker logs goes through these first.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# MLflow's limits (mlflow.utils.validation): param values 6000 chars, tag values 8000, keys 250,
# at most 100 params/tags and 1000 entities per log_batch call.
MAX_PARAM_VAL = 6000
MAX_TAG_VAL = 8000
MAX_KEY = 250
MAX_PARAMS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000


def mlflow_key(name: Any) -> str:
    """A key MLflow accepts on every OS: letters, digits, ``_ - .`` and spaces, not path-like, ≤ 250 chars."""
    key = re.sub(r"[^\w.\- ]", "_", str(name)).lstrip(". ") or "_"
    return key[:MAX_KEY]


def param_value(value: Any) -> str:
    """Params are strings in MLflow; containers as JSON so they stay readable and parseable."""
    if value is None:
        text = "none"
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    return text[:MAX_PARAM_VAL]


def metric_value(value: Any) -> float | None:
    """A finite float, or None to skip: MLflow stores NaN as a flag and inf as ±max-float, both misleading."""
    if isinstance(value, bool):
        return float(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def tag_value(value: Any) -> str:
    """A tag as MLflow keeps it: a string within its length limit (None as ``"none"``)."""
    return ("none" if value is None else str(value))[:MAX_TAG_VAL]


def literal(value: str) -> str | None:
    """Quote a value for an MLflow filter string; None when it holds both quote kinds (filter in Python)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


