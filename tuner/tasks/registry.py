"""Name -> task factory registry, filled lazily from the built-in task modules.

Importing ``tuner.tasks`` stays cheap: built-in modules are imported only on the first :func:`get_task` /
:func:`list_tasks` call, and they themselves import ``datasets``/``sympy`` only when data is loaded or scored.
Each built-in module registers its task(s) at import time with :func:`register_task`. A module listed in
:data:`OPTIONAL_MODULES` may be absent (``arith`` is written separately); any other import error surfaces.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .base import Task
from .errors import TaskError

BUILTIN_MODULES: tuple[str, ...] = (
    "tuner.tasks.arith",
    "tuner.tasks.gsm8k",
    "tuner.tasks.minerva_math",
    "tuner.tasks.humaneval",
    "tuner.tasks.mbpp",
)
OPTIONAL_MODULES: frozenset[str] = frozenset({"tuner.tasks.arith"})

TaskFactory = Callable[..., Task]
F = TypeVar("F", bound=TaskFactory)

_lock = threading.RLock()
_factories: dict[str, TaskFactory] = {}
_aliases: dict[str, str] = {}
_builtins_loaded = False


def register_task(
    name: str, factory: TaskFactory | None = None, *, aliases: tuple[str, ...] = (), overwrite: bool = False
) -> Any:
    """Register ``factory`` (a Task subclass or any callable returning a Task) under ``name``.

    The factory is called as ``factory(data_dir=..., **options)``; a factory without a ``data_dir``
    parameter is called without it when no data directory is given. Usable directly or as a decorator
    (``@register_task("arith")`` on a class). Registering a taken name raises unless ``overwrite``.
    """

    def _register(fac: F) -> F:
        key = name.strip().lower()
        if not key:
            raise TaskError("task name must be non-empty")
        with _lock:
            for n in (key, *(a.strip().lower() for a in aliases)):
                existing = _factories.get(n) or _factories.get(_aliases.get(n, ""))
                if existing is not None and existing is not fac and not overwrite:
                    raise TaskError(f"task name {n!r} is already registered")
            _factories[key] = fac
            for alias in aliases:
                _aliases[alias.strip().lower()] = key
        return fac

    if factory is None:
        return _register
    return _register(factory)


def _load_builtins() -> None:
    global _builtins_loaded
    with _lock:
        if _builtins_loaded:
            return
        for module in BUILTIN_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if module in OPTIONAL_MODULES and exc.name == module:
                    continue
                raise
        _builtins_loaded = True


def list_tasks() -> list[str]:
    """Sorted names of all registered tasks (built-ins included)."""
    _load_builtins()
    with _lock:
        return sorted(_factories)


def _accepts_data_dir(factory: TaskFactory) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return True
    return "data_dir" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def get_task(name: str, data_dir: str | Path | None = None, **options: Any) -> Task:
    """A new task object for ``name``.

    ``data_dir`` (or ``$DTUNE_DATA_DIR``) selects local files laid out like ``shared/data``; without either
    the task loads from the Hugging Face Hub. ``options`` are task-specific (e.g. ``metric="flexible"`` for
    gsm8k, ``seed``, ``validation_size``). Unknown names raise :class:`TaskError` listing the known ones.
    """
    _load_builtins()
    key = name.strip().lower()
    with _lock:
        key = _aliases.get(key, key)
        factory = _factories.get(key)
        known = sorted(_factories)
    if factory is None:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(known) or '(none)'}")
    if data_dir is None and not _accepts_data_dir(factory):
        task = factory(**options)
    else:
        try:
            task = factory(data_dir=data_dir, **options)
        except TypeError as exc:
            if "unexpected keyword" in str(exc):
                raise TaskError(f"task {key!r} does not accept these options: {exc}") from exc
            raise
    if not isinstance(task, Task):
        raise TaskError(f"factory of task {key!r} returned {type(task).__name__}, not a Task")
    return task
