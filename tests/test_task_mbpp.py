"""MBPP: task_id-range splits, lm-eval 3-shot prompt and pass@1 in the sandbox on real fixture items."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.tasks import get_task

pytestmark = pytest.mark.usefixtures("scoring_sandbox")  # scoring, not isolation (conftest.py)

FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(scope="module")
def task():
    return get_task("mbpp", data_dir=FIXTURES, timeout_s=5.0)


def _item(task, tid):
    split = "test" if tid <= 510 else "validation"
    return next(it for it in task.load(split) if it.id == f"Mbpp/{tid}")


def test_splits_by_task_id(task):
    test, val = task.load("test"), task.load("validation")
    assert len(test) == 20 and len(val) == 20
    test_ids = [int(it.id.split("/")[1]) for it in test]
    val_ids = [int(it.id.split("/")[1]) for it in val]
    assert all(11 <= t <= 510 for t in test_ids) and all(511 <= t <= 600 for t in val_ids)
    assert test_ids == sorted(test_ids)
    assert not set(test_ids) & {2, 3, 4} and not set(val_ids) & {2, 3, 4}
    assert task.split_info("test") == get_task("mbpp", data_dir=FIXTURES).split_info("test")
    assert "task_ids 11-510" in task.split_info("test").source


def test_prompt_matches_lm_eval_format(task):
    item = _item(task, 11)
    text = task.prompt(item)
    first = (
        "You are an expert Python programmer, and here is your task: Write a function to find the similar elements"
        " from the given two tuple lists. Your code should pass these tests:\n\n"
        "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n"
        "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)\n"
        "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)\n[BEGIN]\n"
        "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n"
        "  return (res) \n[DONE]\n\n"
    )
    assert text.startswith(first)
    assert text.count("[DONE]\n\n") == 3 and text.count("[BEGIN]\n") == 4
    tests = "\n".join(item.data["test_list"])
    assert text.endswith(
        f"task: {item.data['text']} Your code should pass these tests:\n\n{tests}\n[BEGIN]\n"
    )
    assert task.stop_sequences == ["[DONE]"]


def test_reference_solutions_pass(task):
    items = task.load("test") + task.load("validation")
    results = task.score_batch(items, [task.reference_completion(it) for it in items])
    assert not [(it.id, r.reason) for it, r in zip(items, results, strict=True) if not r.correct]


def test_setup_code_is_run(task):
    item = _item(task, 367)
    assert item.data["test_setup_code"]
    assert task.score(item, item.data["code"]).correct


def test_wrong_solution_fails(task):
    item = _item(task, 11)
    res = task.score(item, "def remove_Occ(s, ch):\n    return s\n")
    assert not res.correct and res.details["status"] == "failed"


def test_fences_begin_and_done(task):
    item = _item(task, 11)
    code = item.data["code"]
    assert task.score(item, f"```python\n{code}\n```\n[DONE]").correct
    assert task.score(item, f"[BEGIN]\n{code}\n[DONE]\nprint(undefined_name)").correct
    assert task.score(item, f"{code}\n[DONE]\n\nYou are an expert Python programmer").correct


def test_early_exit_does_not_pass(task):
    item = _item(task, 11)
    assert not task.score(item, "import sys\nsys.exit(0)\n").correct
