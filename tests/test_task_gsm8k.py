"""GSM8K: splits, prompt format and lm-eval's strict/flexible scoring on real fixture items."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.tasks import TaskError, get_task
from tuner.tasks.gsm8k import FLEXIBLE_RE, STRICT_RE, normalize, regex_filter

FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(scope="module")
def task():
    return get_task("gsm8k", data_dir=FIXTURES, validation_size=20)


def _item(task, split, index):
    return next(
        it for it in task.load(split) if it.id == f"gsm8k/{split if split == 'test' else 'train'}/{index}"
    )


def test_split_sizes_and_disjointness(task):
    val, test, shots = task.load("validation"), task.load("test"), task.fewshot_items
    assert len(val) == 20 and len(test) == 32 and len(shots) == 5
    val_ids, shot_ids = {it.id for it in val}, {it.id for it in shots}
    assert not val_ids & shot_ids
    assert all(i.startswith("gsm8k/train/") for i in val_ids | shot_ids)
    assert all(it.id.startswith("gsm8k/test/") for it in test)
    assert [it.id for it in val] == sorted((it.id for it in val), key=lambda s: int(s.rsplit("/", 1)[1]))


def test_split_hash_is_deterministic_and_seeded(task):
    again = get_task("gsm8k", data_dir=FIXTURES, validation_size=20)
    for split in ("validation", "test"):
        assert task.split_info(split) == again.split_info(split)
    other = get_task("gsm8k", data_dir=FIXTURES, validation_size=20, seed=7)
    assert other.split_info("validation").content_hash != task.split_info("validation").content_hash
    assert other.split_info("test").content_hash == task.split_info("test").content_hash
    info = task.split_info("validation")
    assert info.size == 20 and len(info.content_hash) == 64 and "seed 1234" in info.source


def test_too_small_train_set_is_an_error():
    with pytest.raises(TaskError):
        get_task("gsm8k", data_dir=FIXTURES, validation_size=39).load("validation")


def test_prompt_format(task):
    item = task.load("test")[0]
    text = task.prompt(item)
    assert text.startswith("Question: ")
    assert text.endswith(f"Question: {item.data['question']}\nAnswer:")
    assert text.count("Question: ") == 6
    for shot in task.fewshot_items:
        assert f"Question: {shot.data['question']}\nAnswer: {shot.data['answer']}\n\n" in text
    for val in task.load("validation"):
        assert val.data["question"] not in text
    assert task.stop_sequences == ["Question:", "</s>", "<|im_end|>"]


def test_reference_answers_score_correct(task):
    for item in task.load("test"):
        res = task.score(item, " " + item.data["answer"] + "\n\nQuestion: next one")
        assert res.correct, (item.id, res)
        assert res.details["flexible"]["correct"]


def test_filters_match_lm_eval():
    assert regex_filter(STRICT_RE, "x #### 5\n#### 7", 0) == "5"
    assert regex_filter(FLEXIBLE_RE, "I have $1,234.50 and 7 apples, so 12.", -1) == "12."
    assert regex_filter(FLEXIBLE_RE, "no digits", -1) is None
    assert regex_filter(STRICT_RE, "The answer is 5", 0) is None
    assert normalize("$1,000.") == "1000"
    assert normalize("Janet makes $18 a day.\n#### 18") == "18"


@pytest.mark.parametrize(
    ("completion", "strict", "flexible"),
    [
        (" 70000 - 0 = 70,000 dollars.\n#### 70,000", True, True),  # thousands comma
        (" The profit is $70,000.\n#### $70,000", False, True),  # "$" breaks the strict regex (as lm-eval)
        (" So he made #### 70000.", True, True),  # trailing period stripped
        (" #### 5\nOops, recompute.\n#### 70000", False, True),  # several ####: strict takes the first
        (" He made 70000 dollars, then 70001.", False, False),  # flexible takes the last number
        (" He made 70000", False, True),  # no #### at all
        (" #### 70000\n\nQuestion: what about 3?\nAnswer: #### 3", True, True),  # cut at the stop sequence
    ],
)
def test_hard_cases_on_a_real_item(task, completion, strict, flexible):
    item = _item(task, "test", 2)
    assert item.data["answer"].endswith("#### 70000")
    res = task.score(item, completion)
    assert res.details["strict"]["correct"] is strict
    assert res.details["flexible"]["correct"] is flexible
    assert res.correct is strict
    assert (
        get_task("gsm8k", data_dir=FIXTURES, validation_size=20, metric="flexible")
        .score(item, completion)
        .correct
        is flexible
    )


def test_negative_answer_and_reasons(task):
    item = next(it for it in task.load("test") if it.data["answer"].endswith("#### -3"))
    assert task.score(item, " It drops to -3 degrees.\n#### -3").correct
    wrong = task.score(item, " #### 3")
    assert not wrong.correct and wrong.extracted == "3" and "wrong answer" in wrong.reason
    missing = task.score(item, " I do not know.")
    assert not missing.correct and missing.extracted is None and "####" in missing.reason


def test_bad_metric():
    with pytest.raises(TaskError):
        get_task("gsm8k", data_dir=FIXTURES, metric="exact")
