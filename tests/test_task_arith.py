"""The built-in ``arith`` task: registration, seeded disjoint splits, the train stream, prompts and scoring."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from tuner.tasks import Task, TaskError, get_task, list_tasks
from tuner.tasks.arith import (
    DEFAULT_MODEL,
    ArithConfig,
    ArithTask,
    make_problem,
    partition_of,
    sample_partition,
    train_stream,
)

EQUATION = re.compile(r"(\d+) ([+-]) (\d+) = (\d+)\.")


@pytest.fixture(scope="module")
def task() -> ArithTask:
    return get_task("arith")


def test_registered_with_defaults(task):
    assert "arith" in list_tasks()
    assert isinstance(task, Task) and task.name == "arith"
    assert task.default_model == DEFAULT_MODEL == "dtune/tiny-arith"
    assert (task.default_gen_length, task.default_block_size) == (128, 32)


def test_data_dir_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("DTUNE_DATA_DIR", str(tmp_path / "missing"))
    assert len(get_task("arith", validation_size=3).load("validation")) == 3


def test_splits_are_seeded_sized_and_disjoint(task):
    val, test = task.load("validation"), task.load("test")
    assert len(val) == len(test) == 500
    assert [it.id for it in val[:2]] == ["arith/validation/0", "arith/validation/1"]
    val_q, test_q = {it.data["question"] for it in val}, {it.data["question"] for it in test}
    assert len(val_q) == 500 and len(test_q) == 500 and not val_q & test_q
    assert all(partition_of(q) == "validation" for q in val_q)
    assert all(partition_of(q) == "test" for q in test_q)
    again = get_task("arith")
    assert again.split_info("test") == task.split_info("test")
    other = get_task("arith", seed=7)
    assert other.split_info("test").content_hash != task.split_info("test").content_hash
    info = task.split_info("validation")
    assert info.size == 500 and len(info.content_hash) == 64 and "seed 1234" in info.source


def test_small_split_is_a_prefix_of_the_default(task):
    small = get_task("arith", test_size=20).load("test")
    assert [it.data for it in small] == [it.data for it in task.load("test")[:20]]


def test_train_stream_never_yields_evaluation_problems(task):
    held_out = {it.data["question"] for split in ("validation", "test") for it in task.load(split)}
    first = list(itertools.islice(train_stream(0), 3000))
    assert all(partition_of(r["question"]) == "train" for r in first)
    assert not held_out & {r["question"] for r in first}
    assert first[:5] == list(itertools.islice(train_stream(0), 5))
    assert first[:5] != list(itertools.islice(train_stream(1), 5))


@pytest.mark.parametrize("style", ["echo", "equations"])
def test_worked_answers_are_consistent(style):
    rng = random.Random(0)
    for _ in range(300):
        rec = make_problem(rng, ArithConfig(max_ops=4, answer_style=style))
        body, final = rec["answer"].split("\n#### ")
        assert final == rec["target"]
        equations = EQUATION.findall(body)
        assert 2 <= len(equations) <= 4
        events = rec["question"].split(". ")[1:-1]
        assert all((event + ".") in body for event in events) == (style == "echo")
        total = int(re.search(r"starts with (\d+) ", body).group(1))
        for a, sign, b, c in equations:
            assert int(a) == total
            total = int(a) + int(b) if sign == "+" else int(a) - int(b)
            assert int(c) == total and 0 <= total <= 99
            assert f" {b} " in rec["question"]
        assert int(final) == total


def test_prompt_and_stops(task):
    item = task.load("test")[0]
    assert task.prompt(item) == f"Question: {item.data['question']}\nAnswer:"
    assert task.stop_sequences == ["Question:", "<|endoftext|>"]
    assert task.cut(" 1 + 1 = 2.\n#### 2\n\nQuestion: more") == " 1 + 1 = 2.\n#### 2\n\n"


def test_scoring_uses_gsm8k_strict_match(task):
    item = task.load("test")[0]
    target = item.data["target"]
    assert task.score(item, " " + item.data["answer"]).correct
    assert task.score(item, f" whatever\n#### {target}.").correct
    wrong = task.score(item, f" x\n#### {int(target) + 1}")
    assert not wrong.correct and wrong.reason.startswith("wrong answer")
    missing = task.score(item, f" the answer is {target}")
    assert not missing.correct and missing.extracted is None and "####" in missing.reason
    cut = task.score(item, f" y\n\nQuestion: z\n#### {target}")
    assert not cut.correct


def test_bad_options_raise():
    with pytest.raises(TaskError):
        get_task("arith", validation_size=0)
    with pytest.raises(TaskError):
        get_task("arith", config=ArithConfig(min_ops=3, max_ops=2))
    with pytest.raises(TaskError):
        get_task("arith").load("train")
    with pytest.raises(TaskError):
        sample_partition("nope", 1, 0)
    with pytest.raises(TaskError):
        get_task("arith", config=ArithConfig(answer_style="prose"))
