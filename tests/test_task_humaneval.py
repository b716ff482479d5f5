"""HumanEval: seeded half split, prompt, program assembly and pass@1 in the sandbox on real fixture items."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.tasks import get_task
from tuner.tasks.code_extract import strip_markdown

pytestmark = pytest.mark.usefixtures("scoring_sandbox")  # scoring, not isolation (conftest.py)

FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(scope="module")
def task():
    return get_task("humaneval", data_dir=FIXTURES, timeout_s=5.0)


def _item(task, task_id):
    return next(it for split in ("validation", "test") for it in task.load(split) if it.id == task_id)


def test_half_split(task):
    val, test = task.load("validation"), task.load("test")
    assert len(val) == 15 and len(test) == 15
    assert not {it.id for it in val} & {it.id for it in test}
    assert len({it.id for it in val} | {it.id for it in test}) == 30
    numbers = [int(it.id.split("/")[1]) for it in val]
    assert numbers == sorted(numbers)
    again = get_task("humaneval", data_dir=FIXTURES)
    assert again.split_info("validation") == task.split_info("validation")
    other = get_task("humaneval", data_dir=FIXTURES, seed=5)
    assert {it.id for it in other.load("validation")} != {it.id for it in val}


def test_prompt_is_the_stub(task):
    item = _item(task, "HumanEval/0")
    assert task.prompt(item) == item.data["prompt"]
    assert task.prompt(item).rstrip().endswith('"""')


def test_canonical_solutions_pass(task):
    items = task.load("validation") + task.load("test")
    results = task.score_batch(items, [task.reference_completion(it) for it in items])
    failed = [(it.id, r.reason) for it, r in zip(items, results, strict=True) if not r.correct]
    assert not failed


def test_wrong_solution_fails(task):
    res = task.score(_item(task, "HumanEval/0"), "    return False\n")
    assert not res.correct
    assert res.details["status"] == "failed" and "AssertionError" in res.details["output"]


def test_stop_sequences_cut_raw_completion(task):
    item = _item(task, "HumanEval/0")
    completion = item.data["canonical_solution"] + "\n\ndef broken(:\n    pass\nprint(undefined)\n"
    res = task.score(item, completion)
    assert res.correct, res
    assert "broken" not in res.extracted


def test_markdown_fenced_full_function(task):
    item = _item(task, "HumanEval/0")
    completion = (
        "Here is the implementation:\n\n```python\n"
        + item.data["prompt"]
        + item.data["canonical_solution"]
        + "```\n\nIt compares all pairs."
    )
    res = task.score(item, completion)
    assert res.correct, res
    assert res.details["code_source"] == "fenced+full-function"


def test_fenced_body_only(task):
    item = _item(task, "HumanEval/2")
    res = task.score(item, "```python\n" + item.data["canonical_solution"] + "```")
    assert res.correct, res


def test_closing_fence_only(task):
    item = _item(task, "HumanEval/2")
    res = task.score(item, item.data["canonical_solution"] + "```\n\nExplanation: ...")
    assert res.correct, res


def test_redefined_signature_is_not_duplicated(task):
    item = _item(task, "HumanEval/0")
    completion = (
        "def has_close_elements(numbers, threshold):\n"
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
        "\n\nif __name__ == '__main__':\n    print('demo')\n"
    )
    program, code, how = task.build_program(item, completion)
    assert how == "completion+full-function"
    assert program.count("def has_close_elements") == 1
    assert program.startswith("from typing import List")
    assert "demo" not in program  # stop sequences still cut after the function
    assert task.score(item, completion).correct


def test_redefinition_keeps_prompt_helpers(task):
    item = _item(task, "HumanEval/10")  # the stub follows a helper, is_palindrome
    completion = "def make_palindrome(string: str) -> str:\n" + item.data["canonical_solution"]
    program, _, how = task.build_program(item, completion)
    assert "def is_palindrome" in program and program.count("def make_palindrome") == 1
    assert task.score(item, completion).correct


def test_early_exit_does_not_pass(task):
    item = _item(task, "HumanEval/0")
    res = task.score(item, "    import sys\n    sys.exit(0)\n")
    assert not res.correct
    res = task.score(item, "    return False\nimport os\nos._exit(0)\n")
    assert not res.correct


def test_infinite_loop_times_out():
    task = get_task("humaneval", data_dir=FIXTURES, timeout_s=1.0)
    item = _item(task, "HumanEval/0")
    res = task.score(item, "    while True:\n        pass\n")
    assert not res.correct and res.details["status"] == "timeout"


def test_strip_markdown_shapes():
    assert strip_markdown("no fences") is None
    assert strip_markdown("```py\nx = 1\n```") == "x = 1\n"
    assert strip_markdown("text\n```\nx = 1\n```\nmore") == "x = 1\n"
    assert strip_markdown("```python\nx = 1\n") == "x = 1\n"  # never closed
    assert strip_markdown("    return 1\n```\n") == "    return 1\n"  # only the closing fence
    two = "```python\ndef g(): pass\n```\n```python\ndef f(): return 1\n```"
    assert strip_markdown(two, prefer=lambda c: "def f" in c) == "def f(): return 1\n"
    assert strip_markdown("```text\nhello\n```\n```python\ny = 2\n```") == "y = 2\n"
