"""Benchmark tasks: loading, splits, prompts and scoring (GSM8K, MATH, HumanEval, MBPP, ``arith``, and your own).

Importing this package is cheap: task modules are imported on the first ``get_task``/``list_tasks`` call, and
``datasets``/``sympy`` only when data is loaded or answers compared. The API, the splits and the scoring rules:
``docs/tasks.md``.
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
