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
from .lm_eval_config import REGISTRY_PREFIX

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


def task_source(name: str) -> str:
    """What a task name names: ``"lm-eval"`` (``lm-eval:NAME``, a task lm-eval registers), ``"lm-eval-file"`` (an
    lm-eval task YAML, ``*.yaml``/``*.yml``), ``"prompts"`` (an unlabelled prompts file, ``*.jsonl``), or
    ``"builtin"`` (a registered name). Decided from the name alone, without reading anything."""
    text = name.strip()
    if text.startswith(REGISTRY_PREFIX):
        return "lm-eval"
    suffix = Path(text).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "lm-eval-file"
    if suffix == ".jsonl":
        return "prompts"
    return "builtin"


def _file_task(source: str, name: str, data_dir: str | Path | None, options: dict[str, Any]) -> Task:
    """A task from a file or from lm-eval, every check of its input done (before any model loads)."""
    if source == "prompts":
        from .prompts_file import PromptsFile as factory
    elif source == "lm-eval-file":
        from .lm_eval_task import from_yaml as factory
    else:
        from .lm_eval_task import from_registry as factory
    try:
        return factory(name.strip(), data_dir=data_dir, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise TaskError(f"task {name!r} does not accept these options: {exc}") from exc
        raise


def get_task(name: str, data_dir: str | Path | None = None, **options: Any) -> Task:
    """A new task object for ``name``: a registered task, or (:func:`task_source`) an lm-eval task YAML file, a
    task lm-eval registers (``lm-eval:NAME``) or a JSONL file of unlabelled prompts.

    ``data_dir`` (or ``$DTUNE_DATA_DIR``) selects local files laid out like ``shared/data``; without either
    the task loads from the Hugging Face Hub. ``options`` are task-specific (e.g. ``metric="flexible"`` for
    gsm8k, ``seed``, ``validation_size``). Unknown names raise :class:`TaskError` listing the known ones. A task
    from a file or from lm-eval is read and checked in full here, so that bad input fails as one line naming the
    file and line (or key) before any model loads.
    """
    source = task_source(name)
    if source != "builtin":
        return _file_task(source, name, data_dir, options)
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
