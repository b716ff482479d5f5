"""Finding, checking and building an lm-evaluation-harness task, by lm-eval itself, with one-line refusals.

A task file (``path/to/task.yaml``) or a registered task (``lm-eval:NAME``) is built by lm-eval
(``TaskManager.load``); this module checks what it is handed first, so that a bad file, key or data line fails as
one line naming it before any model loads (the list: docs/tasks.md, "Bad input"). lm-eval, an optional extra, is
imported only here and only when such a task is asked for; its index of every task it ships is built once per
process.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..base.errors import one_line
from .errors import DataUnavailableError, TaskError
from .files import check_data_file, read_jsonl, read_yaml_mapping
from .loading import _quiet_datasets, require_hub

REGISTRY_PREFIX = "lm-eval:"  # `--task lm-eval:NAME`: a task lm-eval registers
INSTALL_HINT = 'pip install "dtune[lm-eval]"'
#: ``datasets`` builders that read local files named by ``dataset_kwargs.data_files``.
LOCAL_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow", "pandas"})
#: Keys whose values lm-eval renders as Jinja templates over a document.
TEMPLATE_KEYS = ("doc_to_text", "doc_to_target", "description", "gen_prefix")
_SPLIT_KEYS = ("test_split", "validation_split", "training_split", "fewshot_split")
_HUB_FIX = ("Give the task local data instead (dataset_path: json, dataset_kwargs: {data_files: {test: FILE}}), or "
            "set HF_HUB_OFFLINE=1 to use copies already in the Hugging Face cache.")


@dataclass
class Source:
    """Where a task came from, for messages: its ``label`` (the YAML path, or ``lm-eval task NAME``), the line of
    each key of its YAML, and for each split read from one JSONL file, that file and the line of each record."""

    label: str
    key_lines: dict[str, int] = field(default_factory=dict)
    data_lines: dict[str, tuple[Path, list[int]]] = field(default_factory=dict)
    registered: bool = False

    def key(self, name: str) -> str:
        """``name``, with its line where the YAML's top level holds it (``doc_to_text (line 7)``)."""
        line = self.key_lines.get(name.split(".")[0])
        return f"{name} (line {line})" if line else name


def import_lm_eval(what: str) -> Any:
    """``lm_eval.tasks`` (lm-eval's TaskManager lives there), or a one-line :class:`TaskError` naming the extra."""
    try:
        import lm_eval.tasks
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "lm_eval":
            raise TaskError(f"{what} needs lm-evaluation-harness, an optional extra of dtune: {INSTALL_HINT}") from None
        raise
    return lm_eval.tasks


@contextlib.contextmanager
def quiet_lm_eval() -> Iterator[None]:
    """lm-eval's warnings (a defaulted aggregation, ``until``) and ``datasets``' progress bars kept off stderr,
    where they would come before, and bury, the one line of an error."""
    _quiet_datasets()
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# ----------------------------------------------------------------------------------------- checks of keys
def check_is_task(cfg: dict[str, Any], src: Source) -> None:
    """The YAML describes one lm-eval generation task (not a dtune study spec, a group, or another file)."""
    if {"search_space", "references", "constraint", "objectives"} & set(cfg):
        raise TaskError(f"{src.label}: a dtune study spec, not an lm-eval task; pass it with --spec and name its "
                        "task with --task")
    if "group" in cfg:
        raise TaskError(f"{src.label}: an lm-eval group ({src.key('group')}: {cfg['group']}), not one task; give the "
                        "YAML of one of its tasks")
    if "task" not in cfg and "include" not in cfg:  # an included file may name it; checked again once merged
        keys = ", ".join(sorted(map(str, cfg))) or "none"
        raise TaskError(f"{src.label}: not an lm-eval task: it has no `task:` key (its keys: {keys})")
    output_type = cfg.get("output_type", "generate_until")
    if output_type != "generate_until":
        raise TaskError(f"{src.label}: {src.key('output_type')}: {output_type}; dtune tunes generation and needs "
                        "output_type: generate_until (a multiple-choice or loglikelihood task is scored without "
                        "generating)")


def check_keys(cfg: dict[str, Any], src: Source) -> None:
    """The keys of a resolved task config (its includes merged) that dtune needs: a single-sample generation task
    with a prompt, a target and a split to evaluate."""
    check_is_task(cfg, src)
    if cfg.get("class") is not None:
        return  # a Python task of lm-eval's: its class supplies what the keys below would
    for key in ("dataset_path", "doc_to_text", "doc_to_target"):
        if key == "dataset_path" and cfg.get("custom_dataset") is not None:
            continue
        if cfg.get(key) is None:
            raise TaskError(f"{src.label}: no `{key}:` key; a generate_until task needs dataset_path, doc_to_text, "
                            "doc_to_target and test_split (or validation_split)")
    if cfg.get("test_split") is None and cfg.get("validation_split") is None:
        raise TaskError(f"{src.label}: no `test_split:` (nor `validation_split:`) key; dtune needs a split of the "
                        "data to evaluate")
    if cfg.get("unsafe_code"):
        raise TaskError(f"{src.label}: {src.key('unsafe_code')}: a code task (lm-eval runs the model's programs "
                        "unsandboxed); use dtune's sandboxed humaneval or mbpp tasks")
    repeats = cfg.get("repeats", 1)
    if repeats != 1:
        raise TaskError(f"{src.label}: {src.key('repeats')}: {repeats}; dtune decodes each prompt once (repeats: 1)")
    gen = cfg.get("generation_kwargs")
    if gen is not None and not isinstance(gen, dict):
        raise TaskError(f"{src.label}: {src.key('generation_kwargs')} must be a mapping (until, max_gen_toks, ...)")
    if isinstance(gen, dict):
        until = gen.get("until", [])
        if isinstance(until, str):
            until = [until]
        if not isinstance(until, list) or not all(isinstance(u, str) for u in until):
            raise TaskError(f"{src.label}: {src.key('generation_kwargs')}: until must be a list of strings")
        max_gen = gen.get("max_gen_toks")
        if max_gen is not None and (not isinstance(max_gen, int) or isinstance(max_gen, bool) or max_gen < 1):
            raise TaskError(f"{src.label}: {src.key('generation_kwargs')}: max_gen_toks must be a positive integer, "
                            f"got {max_gen!r}")


# -------------------------------------------------------------------------------------------- local data
def _as_split_map(files: Any) -> dict[str, list[str]] | None:
    """``data_files`` in its three shapes (a path, a list, a mapping split -> path(s)) as split -> paths."""
    if isinstance(files, str):
        return {"train": [files]}
    if isinstance(files, list) and all(isinstance(f, str) for f in files):
        return {"train": list(files)}
    if isinstance(files, dict):
        out = {}
        for split, value in files.items():
            paths = [value] if isinstance(value, str) else value
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                return None
            out[str(split)] = list(paths)
        return out
    return None


def _resolve(name: str, base: Path) -> list[Path]:
    """The file(s) a ``data_files`` entry names: next to the YAML if it is there, else from the working directory
    (lm-eval's rule); glob patterns are expanded the same way."""
    for root in (base, Path.cwd()):
        candidate = Path(name) if Path(name).is_absolute() else root / name
        if glob.has_magic(name):
            matches = sorted(Path(p) for p in glob.glob(str(candidate), recursive=True))
            if matches:
                return matches
        elif candidate.exists():
            return [candidate.resolve()]
    return [Path(name) if Path(name).is_absolute() else base / name]


def check_local_data(cfg: dict[str, Any], src: Source, base: Path) -> None:
    """Check and pin down the local files of a ``json``/``csv``/... dataset: every file readable (its line named
    otherwise), each split the YAML names present; ``data_files`` is rewritten to absolute paths in ``cfg``."""
    kwargs = cfg.get("dataset_kwargs") or {}
    key = src.key("dataset_kwargs.data_files")
    split_map = _as_split_map(kwargs.get("data_files"))
    if split_map is None:
        raise TaskError(f"{src.label}: dataset_path: {cfg['dataset_path']} reads local files; name them as "
                        "dataset_kwargs: {data_files: {test: FILE}} (a path, a list, or a mapping of split to paths)")
    resolved: dict[str, list[str]] = {}
    for split, names in split_map.items():
        paths = [p for name in names for p in _resolve(name, base)]
        for path in paths:
            try:
                check_data_file(path, "data file")
            except TaskError as exc:
                raise TaskError(f"{src.label}: {key}: {exc}") from None
        resolved[split] = [str(p) for p in paths]
        if len(paths) == 1 and paths[0].suffix in {".jsonl", ".ndjson"}:
            src.data_lines[split] = (paths[0], [n for n, _ in read_jsonl(paths[0], "data file")])
    cfg["dataset_kwargs"] = {**kwargs, "data_files": resolved}
    fewshot = cfg.get("fewshot_config") or {}
    named = [(k, cfg.get(k)) for k in _SPLIT_KEYS] + [("fewshot_config.split", fewshot.get("split"))]
    for k, split in named:
        if split is not None and split not in resolved:
            raise TaskError(f"{src.label}: {src.key(k)}: {split}, but {key} has the split(s) "
                            f"{', '.join(resolved)}; name the file of each split the YAML uses")


def _check_data_source(cfg: dict[str, Any], src: Source, base: Path) -> None:
    """Local files checked (and made absolute); a hub id only when the hub can be reached."""
    if cfg.get("class") is not None or cfg.get("custom_dataset") is not None:
        return
    dataset = str(cfg["dataset_path"])
    if dataset in LOCAL_BUILDERS:
        check_local_data(cfg, src, base)
    elif (base / dataset).exists() or Path(dataset).exists():
        cfg["dataset_path"] = str((base / dataset) if (base / dataset).exists() else Path(dataset).resolve())
    else:
        require_hub(f"{src.label} (dataset {dataset})", fix=_HUB_FIX)


# ------------------------------------------------------------------------------------------------ building
def _undefined_field(exc: Exception, cfg: dict[str, Any], src: Source) -> TaskError:
    """The one line for a template that names a field the documents lack (lm-eval renders with StrictUndefined)."""
    match = re.search(r"'([^']+)' is undefined", str(exc))
    name = match.group(1) if match else "?"
    keys = [k for k in TEMPLATE_KEYS if name in template_fields(cfg.get(k))]
    where = src.key(keys[0]) if keys else "a template"
    return TaskError(f"{src.label}: {where} names the field '{name}', which the documents lack")


def template_fields(template: Any) -> set[str]:
    """The document fields a Jinja template reads (its undeclared names), as lm-eval's environment parses it."""
    if not isinstance(template, str) or "{" not in template:
        return set()
    import jinja2.meta
    from lm_eval.utils import env

    try:
        return set(jinja2.meta.find_undeclared_variables(env.parse(template)))
    except Exception:  # noqa: BLE001 - a template lm-eval cannot parse fails in lm-eval, with its own message
        return set()


def _parses(env: Any, template: str) -> bool:
    try:
        env.parse(template)
    except Exception:  # noqa: BLE001 - any syntax error
        return False
    return True


def _build(manager: Any, spec: Any, cfg: dict[str, Any], src: Source) -> Any:
    """lm-eval's task object for ``spec`` (a config dict or a registered name), errors made one line."""
    import jinja2

    try:
        with quiet_lm_eval():
            built = manager.load([spec])["tasks"]
    except jinja2.exceptions.UndefinedError as exc:
        raise _undefined_field(exc, cfg, src) from None
    except jinja2.exceptions.TemplateError as exc:
        from lm_eval.utils import env

        bad = [k for k in TEMPLATE_KEYS if isinstance(cfg.get(k), str) and not _parses(env, cfg[k])]
        where = src.key(bad[0]) if bad else "a template"
        raise TaskError(f"{src.label}: {where} is not valid Jinja: {one_line(exc)}") from None
    except DataUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001 - lm-eval and datasets raise anything; the user gets one line
        unknown = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
        if isinstance(exc, TypeError) and unknown:
            raise TaskError(f"{src.label}: {src.key(unknown.group(1))}: not a key of an lm-eval task") from None
        raise TaskError(f"{src.label}: lm-eval could not build the task: {one_line(exc, with_type=True)}") from None
    if len(built) != 1:
        raise TaskError(f"{src.label}: lm-eval built {len(built)} tasks from it ({', '.join(built)}); give one task")
    task = next(iter(built.values()))
    if getattr(task, "OUTPUT_TYPE", None) != "generate_until":
        raise TaskError(f"{src.label}: output_type {getattr(task, 'OUTPUT_TYPE', None)}; dtune tunes generation and "
                        "needs output_type: generate_until")
    return task


def load_yaml_task(path: Path) -> tuple[Any, Source]:
    """lm-eval's task object for a task YAML file, and where it came from; every check above done first."""
    src = Source(str(path))
    raw, src.key_lines = read_yaml_mapping(path, "lm-eval task file")
    check_is_task(raw, src)  # before lm-eval resolves anything: a spec or a group is named as such
    tasks = import_lm_eval(f"{path} (an lm-eval task)")
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        cfg = load_yaml(path.resolve(), resolve_func=True, recursive=True)
    except Exception as exc:  # noqa: BLE001 - a missing include, a !function that does not import
        raise TaskError(f"{path}: lm-eval could not read it: {one_line(exc, with_type=True)}") from None
    check_keys(cfg, src)  # again with its includes merged
    _check_data_source(cfg, src, path.resolve().parent)
    manager = tasks.TaskManager(include_defaults=False)  # the file alone: no index of lm-eval's own tasks
    return _build(manager, cfg, cfg, src), src


_manager_lock = threading.Lock()
_manager: Any = None


def registry_manager() -> Any:
    """A TaskManager that indexes every task lm-eval ships (seconds to build; built once per process)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            tasks = import_lm_eval("an lm-eval: task")
            with quiet_lm_eval():
                _manager = tasks.TaskManager()
        return _manager


def load_registered_task(name: str) -> tuple[Any, Source]:
    """lm-eval's task object for a task it registers (``lm-eval:NAME``), and where it came from."""
    label = f"lm-eval task {name}"
    import_lm_eval(f"{REGISTRY_PREFIX}{name}")
    manager = registry_manager()
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = manager.task_index.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, manager.all_subtasks, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (`lm-eval ls tasks` lists them)"
        raise TaskError(f"lm-eval has no task {name!r}{hint}")
    if entry.kind in (Kind.GROUP, Kind.TAG):
        members = sorted(entry.tags) if entry.kind is Kind.TAG else []
        listed = f" (its tasks: {', '.join(members[:8])}{', ...' if len(members) > 8 else ''})" if members else ""
        raise TaskError(f"{label}: an lm-eval {entry.kind.name.lower()}, not one task; name one of its tasks{listed}")
    src = Source(f"{label} ({entry.yaml_path})" if entry.yaml_path else label, registered=True)
    cfg: dict[str, Any] = {}
    if entry.yaml_path is not None:
        with contextlib.suppress(TaskError):  # its lines, for messages; lm-eval's own files parse
            src.key_lines = read_yaml_mapping(Path(entry.yaml_path), "lm-eval task file")[1]
        with quiet_lm_eval():
            cfg = load_yaml(entry.yaml_path, resolve_func=False, recursive=True)
        check_keys(cfg, src)
        if cfg.get("class") is None and str(cfg.get("dataset_path")) not in LOCAL_BUILDERS:
            require_hub(f"{label} (dataset {cfg.get('dataset_path')})", fix=_HUB_FIX)
    return _build(manager, name, cfg, src), src
