"""`Task.answer`, the key an agreement constraint compares two decodings by, on every built-in task (real fixture
items): it is what the scorer reads, so two completions with the same key get the same verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.tasks import Item, ScoreResult, Task, get_task
from tuner.tasks.base import NO_ANSWER, normalize_whitespace

FIXTURES = Path(__file__).parent / "fixtures" / "data"


class _Plain(Task):
    """A task without an extraction step: the base class's default key."""

    name = "plain-for-answer-test"
    _stop_sequences = ("\n\n", "STOP")

    def _load_split(self, split):
        return [Item(f"plain/{split}/0", {"q": "hi"})]

    def prompt(self, item):
        return item.data["q"]

    def score(self, item, completion):
        return ScoreResult(False, None)


def test_the_default_key_is_the_cut_completion_whitespace_normalised():
    task, item = _Plain(), Item("x", {})
    assert task.answer(item, "  The  answer\tis\n 42 .\n\nmore text") == "The answer is 42 ."
    assert task.answer(item, "a STOP b") == "a"
    assert task.answer(item, "   ") == ""
    assert normalize_whitespace(" a \n b ") == "a b"
    assert Task.labelled and _Plain.labelled


def test_arith_key_is_the_strict_match_answer_and_decides_the_verdict():
    task = get_task("arith", validation_size=5, test_size=5)
    item = task.load("test")[0]
    target = item.data["target"]
    right = f" some working\n#### {target}"
    assert task.answer(item, right) == target
    assert task.answer(item, f" other working, same answer\n#### {target}\nQuestion: #### 99") == target
    assert task.answer(item, " no marker 12") == NO_ANSWER
    completions = [right, f"#### {target}", " #### 1", "#### 1.", "garbage", "", f"#### {target}Question:"]
    by_key: dict[str, bool] = {}
    for c in completions:  # equal keys, equal verdicts
        assert by_key.setdefault(task.answer(item, c), task.score(item, c).correct) == task.score(item, c).correct


@pytest.mark.parametrize("metric", ["strict", "flexible"])
def test_gsm8k_key_follows_the_metric(metric):
    task = get_task("gsm8k", data_dir=FIXTURES, metric=metric, validation_size=5)
    item = task.load("test")[0]
    completion = " She has 3 + 4 = 7 apples.\n#### 1,234 and then 56"
    assert task.answer(item, completion) == ("1,234" if metric == "strict" else "56")
    assert task.answer(item, "no digits") == NO_ANSWER
    assert task.answer(item, "#### 5\nQuestion: #### 6") == ("5" if metric == "strict" else "5")
    assert task.score(item, completion).extracted == task.answer(item, completion)


def test_math_key_is_the_normalised_final_answer():
    task = get_task("math", data_dir=FIXTURES, validation_size=5, use_sympy=False)
    item = task.load("test")[0]
    phrase = " so.\nFinal Answer: The final answer is $\\frac{1}{2}$. I hope it is correct."
    assert task.answer(item, phrase) == "\\frac{1}{2}"
    assert task.answer(item, " the answer is \\boxed{7}") == "7"
    assert task.answer(item, " nothing here") == NO_ANSWER
    assert task.answer(item, phrase + "\nProblem: Final Answer: The final answer is 9. I hope it is correct.") \
        == "\\frac{1}{2}"
    assert task.score(item, phrase).extracted == task.answer(item, phrase)


def test_code_keys_are_the_extracted_program():
    he = get_task("humaneval", data_dir=FIXTURES)
    item = next(it for split in ("validation", "test") for it in he.load(split) if it.id == "HumanEval/0")
    body = "    return any(abs(a - b) < threshold for a in numbers for b in numbers if a is not b)"
    assert he.answer(item, body + "   \n\nprint('x')") == body
    fenced = f"Here you go:\n```python\ndef has_close_elements(numbers, threshold):\n{body}\n```\nDone."
    assert he.answer(item, fenced) == f"def has_close_elements(numbers, threshold):\n{body}"
    mbpp = get_task("mbpp", data_dir=FIXTURES)
    item = mbpp.load("test")[0]
    assert mbpp.answer(item, "[BEGIN]\ndef f(x):\n    return x  \n[DONE] trailing") == "def f(x):\n    return x"
