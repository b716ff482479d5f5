"""Full splits on the offline benchmark copy (``../shared/data``); skipped where it is absent.

Prints every split's size and content hash (run with ``-s`` to see them) and pins both: a changed hash means
the split definition changed (seed, sampling, source file). If that was intended, update the pin here and in
``docs/tasks.md``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.tasks import get_task

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"needs the data folder ../shared/data beside the checkout (gsm8k, math, humaneval, mbpp as docs/tasks.md lays them out); {SHARED_DATA} is missing"),
    pytest.mark.usefixtures("scoring_sandbox"),
]

EXPECTED = {
    ("gsm8k", "validation"): (500, "9bd7894862fb685be7498ef517182b6a43c8531e38a43954f93a9fbaa407237d"),
    ("gsm8k", "test"): (1319, "979d0e566efbbd37c7b5a34a480cff11268d46d641a796d2a3a1f514a26a82af"),
    ("math", "validation"): (500, "eced4bcba1f7eb0c15b5c11571a670f212b3a1998d64d64b786848bda9bb8032"),
    ("math", "test"): (500, "a2727b05c78707677fd416ecfd91165f1bdd77a688bfbfbb6e92eefd2ebbe099"),
    ("humaneval", "validation"): (82, "d0fa2cf7da365210ac27e66f3aa4f4c414ebe63c28693bc70638b0110fa23e96"),
    ("humaneval", "test"): (82, "461ccb7e9cd620bfa20d808dc43291a263e1f87c837a1ff6607f964ced8c7849"),
    ("mbpp", "validation"): (90, "1bc7418143628e81f9d26d3254139ed06ad180656a02333d4f2e1e4d8ae6fece"),
    ("mbpp", "test"): (500, "207ff7f541f644aa173df413a397c10a6a065c804d77111c8fff36fb88a23cd0"),
}


@pytest.fixture(scope="module")
def shared_tasks():
    return {name: get_task(name, data_dir=SHARED_DATA) for name in ("gsm8k", "math", "humaneval", "mbpp")}


@pytest.mark.parametrize(("name", "split"), sorted(EXPECTED))
def test_split_size_and_hash(shared_tasks, name, split):
    task = shared_tasks[name]
    info = task.split_info(split)
    print(f"\n{name:9s} {split:10s} size={info.size:5d} sha256={info.content_hash}  [{info.source}]")
    size, digest = EXPECTED[(name, split)]
    assert info.size == size
    assert info.content_hash == digest, (
        "split definition changed: update the pin and docs/tasks.md if intended"
    )
    assert len({it.id for it in task.load(split)}) == size
    prompt = task.prompt(task.load(split)[0])
    assert prompt and isinstance(prompt, str)


def test_splits_are_disjoint(shared_tasks):
    for name, task in shared_tasks.items():
        val = {it.id for it in task.load("validation")}
        test = {it.id for it in task.load("test")}
        assert not val & test, name
    gsm = shared_tasks["gsm8k"]
    assert not {it.id for it in gsm.fewshot_items} & {it.id for it in gsm.load("validation")}
    math = shared_tasks["math"]
    assert not {it.data["problem"].strip() for it in math.load("validation")} & {
        it.data["problem"].strip() for it in math.load("test")
    }


@pytest.mark.slow
def test_reference_solutions_pass_in_sandbox(shared_tasks):
    he, mb = shared_tasks["humaneval"], shared_tasks["mbpp"]
    for task, items in ((he, he.load("validation") + he.load("test")), (mb, mb.load("validation"))):
        results = task.score_batch(items, [task.reference_completion(it) for it in items])
        failed = [(it.id, r.reason) for it, r in zip(items, results, strict=True) if not r.correct]
        print(f"\n{task.name}: {len(items) - len(failed)}/{len(items)} reference solutions pass")
        assert not failed
