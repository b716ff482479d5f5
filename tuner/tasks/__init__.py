"""Benchmark tasks: loading, splits, prompts and scoring (GSM8K, MATH, HumanEval, MBPP, and ``arith``).

::

    from tuner.tasks import get_task
    task = get_task("gsm8k", data_dir=None)      # or data_dir="/path/to/shared/data", or $DTUNE_DATA_DIR
    items = task.load("validation")
    text = task.prompt(items[0])
    res = task.score(items[0], completion)       # ScoreResult(correct, extracted, reason, details)

Importing this package is cheap: task modules are imported on the first ``get_task``/``list_tasks`` call, and
``datasets``/``sympy`` only when data is loaded or answers compared. See ``docs/tasks.md`` for the splits.
"""

from .base import Item, ScoreResult, SplitInfo, Task
from .errors import DataUnavailableError, TaskError
from .registry import get_task, list_tasks, register_task

__all__ = [
    "DataUnavailableError",
    "Item",
    "ScoreResult",
    "SplitInfo",
    "Task",
    "TaskError",
    "get_task",
    "list_tasks",
    "register_task",
]
