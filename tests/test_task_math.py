"""MATH (minerva_math style): splits, prompt, answer extraction, normalisation and equivalence."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tuner.tasks import get_task
from tuner.tasks.math_answers import (
    extract_answer,
    final_answer_phrase,
    last_boxed,
    normalize_final_answer,
    reference_answer,
    unbox,
)
from tuner.tasks.math_equiv import as_fraction, is_equiv
from tuner.tasks.minerva_math import MINERVA_EXEMPLARS

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def _sympy_latex_available() -> bool:
    try:
        from sympy.parsing.latex import parse_latex

        parse_latex("1")
    except Exception:  # noqa: BLE001
        return False
    return True


needs_sympy = pytest.mark.skipif(
    not _sympy_latex_available(), reason="needs sympy's LaTeX parser: pip install sympy antlr4-python3-runtime==4.11.*"
)


@pytest.fixture(scope="module")
def task():
    return get_task("math", data_dir=FIXTURES, validation_size=10)


def _half_item(task):
    """Real validation-pool problem whose reference solution ends in \\boxed{\\frac12}."""
    for split in ("validation", "test"):
        for item in task.load(split):
            if "\\boxed{\\frac12}" in item.data["solution"]:
                return item
    big = get_task("math", data_dir=FIXTURES, validation_size=25)
    return next(it for it in big.load("validation") if "\\boxed{\\frac12}" in it.data["solution"])


def test_splits(task):
    test, val = task.load("test"), task.load("validation")
    assert len(test) == 15 and len(val) == 10
    assert all(it.id.startswith("test/") and it.id.endswith(".json") for it in test)
    assert all(it.id.startswith("math/") for it in val)
    test_problems = {it.data["problem"].strip() for it in test}
    assert not test_problems & {it.data["problem"].strip() for it in val}
    assert len({it.id for it in val}) == 10


def test_split_hash_deterministic(task):
    again = get_task("math", data_dir=FIXTURES, validation_size=10)
    assert task.split_info("validation") == again.split_info("validation")
    assert task.split_info("test") == again.split_info("test")
    other = get_task("math", data_dir=FIXTURES, validation_size=10, seed=99)
    assert other.split_info("validation").content_hash != task.split_info("validation").content_hash
    assert "not in MATH-500" in task.split_info("validation").source


def test_prompt(task):
    item = task.load("test")[0]
    text = task.prompt(item)
    assert text.startswith("Problem:\nFind the domain of the expression")
    assert text.endswith(f"Problem:\n{item.data['problem']}\n\nSolution:")
    assert text.count("Problem:\n") == 5
    assert text.count("I hope it is correct.\n\nProblem:\n") == 4
    assert "Solution: We have that $\\det (\\mathbf{A} \\mathbf{B})" in text
    assert len(MINERVA_EXEMPLARS) == 4
    assert task.stop_sequences == ["Problem:"]


def test_reference_solutions_score_correct(task):
    for split in ("validation", "test"):
        for item in task.load(split):
            res = task.score(item, " " + item.data["solution"])
            assert res.correct, (item.id, res)
            assert res.details["found_by"] == "boxed"


def test_math500_answer_field_agrees_with_boxed_target(task):
    for item in task.load("test"):
        assert normalize_final_answer(item.data["answer"]) == task.target(item)


def test_normalize_final_answer():
    assert normalize_final_answer("\\frac12") == "\\frac{1}{2}"
    assert normalize_final_answer("$x = 10,000$") == "10000"
    assert normalize_final_answer("5\\text{ units}") == "5"
    assert normalize_final_answer("\\boxed{24}") == "24"
    assert normalize_final_answer("90^\\circ") == "90"
    assert normalize_final_answer("\\sqrt2") == "\\sqrt{2}"
    assert normalize_final_answer("\\text{(A)}") == "(A)"


def test_boxed_helpers():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}} c") == "\\boxed{\\frac{1}{2}}"
    assert unbox(last_boxed("\\fbox{7}")) == "7"
    assert unbox(last_boxed("$\\boxed 5$")) == "5"
    assert last_boxed("\\boxed{unterminated") is None
    assert reference_answer("so $\\boxed{\\frac12}$.") == "\\frac{1}{2}"


def test_final_answer_phrase_as_harness():
    assert final_answer_phrase("Final Answer: The final answer is $5$. I hope it is correct.") == "$5$"
    assert final_answer_phrase("blah\nFinal Answer: The final answer is $5$. ") == "$5$"
    # the harness pattern needs a character + space before the appended end phrase
    assert final_answer_phrase("Final Answer: The final answer is $5$.") is None
    assert extract_answer("Final Answer: The final answer is $5$.") == ("5", "final-answer-lenient")
    assert extract_answer("Final Answer: The final answer is $5$.", fallbacks=False) == (None, "none")


@pytest.mark.parametrize(
    ("completion", "how"),
    [
        ("The probability is $\\boxed{\\frac12}$.", "boxed"),
        ("The probability is $\\boxed{\\frac{1}{2}}$.", "boxed"),
        ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "final-answer"),
        ("Final Answer: The final answer is $0.5$. I hope it is correct.", "final-answer"),
        ("Final Answer: The final answer is $\\dfrac{1}{2}$. I hope it is correct.", "final-answer"),
        ("Final Answer: The final answer is $1/2$. I hope it is correct.", "final-answer"),
        ("Final Answer: The final answer is $\\frac12$.", "final-answer-lenient"),
        (
            "$\\boxed{7}$ no wait.\nFinal Answer: The final answer is $.5$. I hope it is correct.",
            "final-answer",
        ),
    ],
)
def test_one_half_in_many_spellings(task, completion, how):
    item = _half_item(task)
    assert task.target(item) == "\\frac{1}{2}"
    res = task.score(item, " " + completion)
    assert res.correct, res
    assert res.details["found_by"] == how


def test_wrong_and_missing_answers(task):
    item = _half_item(task)
    res = task.score(item, " Final Answer: The final answer is $0.25$. I hope it is correct.")
    assert not res.correct and res.extracted == "0.25" and "not equivalent" in res.reason
    res = task.score(item, " I am not sure.")
    assert not res.correct and res.extracted is None
    harness_only = get_task("math", data_dir=FIXTURES, validation_size=10, fallbacks=False)
    assert not harness_only.score(item, " so $\\boxed{\\frac12}$").correct


def test_stop_sequence_cut(task):
    item = _half_item(task)
    completion = (
        " Final Answer: The final answer is $\\frac12$. I hope it is correct.\n\nProblem:\nNext\n\nSolution: "
        "Final Answer: The final answer is $3$. I hope it is correct."
    )
    assert task.score(item, completion).correct
    assert not task.score(item, " Final Answer: The final answer is $3$. I hope it is correct.").correct


def test_numeric_fast_path():
    assert (
        as_fraction("\\frac{1}{2}")
        == as_fraction("0.5")
        == as_fraction("1/2")
        == as_fraction("\\dfrac{2}{4}")
    )
    assert as_fraction("-\\frac{3}{2}") == as_fraction("-1.5")
    assert as_fraction("x") is None and as_fraction("\\frac{1}{0}") is None
    assert is_equiv("\\frac{1}{2}", "0.5").method == "numeric"
    assert is_equiv("[2,5)", "[2,5)").equal  # string step (the harness's sympy step cannot parse intervals)


@needs_sympy
def test_sympy_equivalence():
    res = is_equiv("x^2+1", "1+x^2")
    assert res.equal and res.method == "sympy"
    assert is_equiv("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}").equal
    assert not is_equiv("\\pi", "3.14").equal


@needs_sympy
def test_sympy_timeout_is_enforced():
    start = time.monotonic()
    res = is_equiv("10^{10^{10}}", "1", timeout_s=0.5)
    assert not res.equal and res.error == "timeout"
    assert time.monotonic() - start < 10
    assert is_equiv("2x", "x+x").equal  # the worker is usable again afterwards
