"""Registry, lazy import, data-dir resolution and the offline error of ``tuner.tasks``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import tuner.tasks as tasks
from tuner.tasks import (
    DataUnavailableError,
    Item,
    ScoreResult,
    Task,
    TaskError,
    get_task,
    list_tasks,
    loading,
    register_task,
    registry,
)

FIXTURES = Path(__file__).parent / "fixtures" / "data"
REPO = Path(__file__).resolve().parents[1]


def test_import_is_cheap():
    code = (
        "import sys, tuner.tasks, tuner.sandbox; "
        "heavy = [m for m in ('datasets', 'sympy', 'torch', 'tuner.tasks.gsm8k') if m in sys.modules]; "
        "print(heavy); assert not heavy, heavy"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_builtin_tasks_are_listed():
    names = list_tasks()
    for name in ("gsm8k", "math", "humaneval", "mbpp"):
        assert name in names


def test_unknown_task_lists_known_names():
    with pytest.raises(TaskError) as err:
        get_task("no-such-task")
    for name in ("gsm8k", "math", "humaneval", "mbpp"):
        assert name in str(err.value)


def test_alias_and_case():
    assert get_task("MINERVA_MATH", data_dir=FIXTURES).name == "math"


def test_optional_arith_module_is_tolerated():
    assert "tuner.tasks.arith" in registry.BUILTIN_MODULES
    assert "tuner.tasks.arith" in registry.OPTIONAL_MODULES
    list_tasks()  # must not raise whether or not tuner/tasks/arith.py exists yet


class _Toy(Task):
    name = "toy-for-test"
    _stop_sequences = ("STOP",)

    def _load_split(self, split):
        return [Item(f"toy/{split}/0", {"q": "1+1", "a": "2"})]

    def prompt(self, item):
        return item.data["q"] + " ="

    def score(self, item, completion):
        got = self.cut(completion).strip()
        return ScoreResult(got == item.data["a"], got)


def test_register_custom_task_and_duplicates():
    register_task("toy-for-test", _Toy)
    task = get_task("toy-for-test")
    assert task.load("validation")[0].id == "toy/validation/0"
    assert task.score(task.load("test")[0], " 2 STOP 3").correct
    register_task("toy-for-test", _Toy)  # same factory again: fine (module reloads)
    with pytest.raises(TaskError):
        register_task("toy-for-test", lambda data_dir=None: _Toy(data_dir))
    with pytest.raises(TaskError):
        task.load("train")


def test_register_as_decorator_without_data_dir_parameter():
    @register_task("toy-no-datadir")
    def make() -> Task:
        return _Toy()

    assert isinstance(get_task("toy-no-datadir"), _Toy)


def test_cut_takes_earliest_stop():
    task = get_task("humaneval", data_dir=FIXTURES)
    assert task.cut("    return 1\nprint(2)\ndef f(): pass") == "    return 1"
    assert task.cut("no stop here") == "no stop here"
    assert task.stop_sequences == ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
    task.stop_sequences.append("x")  # a copy: the task is unchanged
    assert len(task.stop_sequences) == 5


def test_hub_unreachable_raises_data_unavailable(monkeypatch):
    monkeypatch.delenv(loading.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    task = get_task("gsm8k")
    with pytest.raises(DataUnavailableError) as err:
        task.load("test")
    msg = str(err.value)
    assert "cannot be reached" in msg and "--data-dir" in msg and "DTUNE_DATA_DIR" in msg


def test_data_dir_from_environment(monkeypatch):
    monkeypatch.setenv(loading.DATA_DIR_ENV, str(FIXTURES))
    task = get_task("mbpp")
    assert task.data_dir == FIXTURES.resolve()
    assert len(task.load("validation")) == 20


def test_missing_data_dir_or_file(tmp_path):
    with pytest.raises(DataUnavailableError):
        get_task("gsm8k", data_dir=tmp_path / "nope")
    with pytest.raises(DataUnavailableError) as err:
        get_task("gsm8k", data_dir=tmp_path).load("test")
    assert "gsm8k/test.jsonl" in str(err.value)


def test_splits_are_cached_per_task_object():
    task = get_task("humaneval", data_dir=FIXTURES)
    first = task.load("test")
    first.pop()  # callers get a copy
    assert len(task.load("test")) == 15
    assert task.load("test")[0] is task.load("test")[0]


def test_public_names():
    for name in (
        "get_task",
        "list_tasks",
        "register_task",
        "Task",
        "Item",
        "ScoreResult",
        "TaskError",
        "DataUnavailableError",
        "SplitInfo",
    ):
        assert hasattr(tasks, name)
