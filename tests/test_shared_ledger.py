"""One baseline, many studies: the baseline's evidence is decoded once per model × split content × prompt and
baseline settings, kept in the storage every worker shares, and reused by any study, worker or export of the same
key; a changed model, split or baseline never matches, and workers growing it together never decode an item twice."""

from __future__ import annotations

import dataclasses
import threading
import time

import optuna

from decoder import Counters
from tuner.storage.database import open_storage
from tuner.storage.locks import held_study_lock
from tuner.storage.record import LedgerState, StudyRecord
from tuner.storage.shared_ledger import SharedLedger, adopt, baseline_summary, is_ledger_study, study_ledger
from tuner.study.baseline import BaselineLedger, baseline_key
from tuner.study.evaluate import EvalResult
from tuner.study.spec import load_spec
from tuner.tasks import Item

SPEC = load_spec("arith")
VANILLA = SPEC.reference_config(SPEC.reference("vanilla"))
ITEMS = [Item(str(i), {"question": f"{i} + 1"}) for i in range(60)]


class CountingEvaluator:
    """Decodes nothing: item i is right unless i % 7 == 0; every item it is asked for is counted (slowly, so that
    two workers asking at once overlap)."""

    def __init__(self) -> None:
        self.decoded: list[str] = []
        self._lock = threading.Lock()

    def evaluate(self, items, config, *, chunk_size=None, warmup=True, on_progress=None) -> EvalResult:
        time.sleep(0.05)
        with self._lock:
            self.decoded.extend(it.id for it in items)
        outcomes = [int(it.id) % 7 != 0 for it in items]
        return EvalResult(n=len(items), correct=sum(outcomes), total_items=len(items), counted_tokens=10 * len(items),
                          counters=Counters(row_forwards=len(items), wall_time_s=0.01 * len(items)),
                          scoring_time_s=0.0, outcomes=outcomes, item_ids=[it.id for it in items],
                          answers=[f"{int(it.id) % 97:08x}" for it in items])


def key(**changed) -> str:
    ident = {"spec": SPEC, "config": VANILLA, "model": "fp-1", "split": "split-1", **changed}
    return baseline_key(ident["spec"], ident["config"], ident["model"], ident["split"])


def test_the_key_follows_the_model_the_split_the_prompts_and_the_baseline_and_nothing_else():
    base = key()
    assert key() == base
    assert key(model="fp-2") != base
    assert key(split="split-2") != base
    assert key(config=dataclasses.replace(VANILLA, steps=64)) != base
    assert key(spec=dataclasses.replace(SPEC, chat_template=True)) != base
    assert key(spec=dataclasses.replace(SPEC, few_shot=3)) != base
    # What a study may change without changing the baseline's decodings: its margin, budget, search space.
    assert key(spec=dataclasses.replace(SPEC, trials=5, constraint=SPEC.constraint.with_margin(4.0))) == base


def test_a_second_study_on_the_same_storage_reuses_the_baseline_and_another_model_decodes_afresh(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    evaluator = CountingEvaluator()
    first = optuna.create_study(storage=storage, study_name="margin-5", directions=["maximize", "maximize"])
    BaselineLedger(adopt(first, key()), VANILLA, evaluator, ITEMS).ensure(40)
    assert len(evaluator.decoded) == 40
    second = optuna.create_study(storage=storage, study_name="margin-4", directions=["maximize", "maximize"])
    ledger = BaselineLedger(adopt(second, key()), VANILLA, evaluator, ITEMS)
    assert ledger.ensure(40).n == 40 and len(evaluator.decoded) == 40  # nothing decoded again
    ledger.ensure(50)
    assert evaluator.decoded[40:] == [str(i) for i in range(40, 50)]  # only the items it lacked
    assert study_ledger(first).n == 50  # and the first study sees them too
    assert baseline_summary(second).n == 50 and baseline_summary(second).accuracy == study_ledger(second).accuracy
    other = optuna.create_study(storage=storage, study_name="other-model", directions=["maximize", "maximize"])
    BaselineLedger(adopt(other, key(model="fp-2")), VANILLA, evaluator, ITEMS).ensure(10)
    assert evaluator.decoded[50:] == [str(i) for i in range(10)]  # another model: decoded afresh
    tuning = [s.study_name for s in optuna.get_all_study_summaries(storage) if not is_ledger_study(s.study_name)]
    assert sorted(tuning) == ["margin-4", "margin-5", "other-model"]


def test_two_workers_growing_the_shared_baseline_never_decode_an_item_twice(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(storage=open_storage(url), study_name="s", directions=["maximize", "maximize"])
    evaluator, errors = CountingEvaluator(), []

    def worker(target: int) -> None:
        try:
            storage = open_storage(url)  # each worker its own connection and lock handle, as two processes
            study = optuna.load_study(study_name="s", storage=storage)
            ledger = BaselineLedger(adopt(study, key()), VANILLA, evaluator, ITEMS,
                                    lock=lambda: held_study_lock(storage, f"ledger:{key()}"))
            for n in range(10, target + 1, 10):
                ledger.ensure(n)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in (60, 40, 60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert sorted(evaluator.decoded, key=int) == [str(i) for i in range(60)]  # each item exactly once
    assert SharedLedger(open_storage(url), key()).read().n == 60


def test_a_study_written_with_its_own_ledger_hands_it_over(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="old", directions=["maximize", "maximize"])
    StudyRecord(study).set_own_ledger(LedgerState(outcomes="1101" * 5))
    evaluator = CountingEvaluator()
    ledger = BaselineLedger(adopt(study, key()), VANILLA, evaluator, ITEMS)
    assert ledger.ensure(20).outcomes == "1101" * 5 and not evaluator.decoded
    assert StudyRecord(study).ledger_key == key() and study_ledger(study).n == 20


def test_a_killed_export_resumes_its_stages_from_the_study(tmp_path):
    """Export's staged confirmation keeps the pick's test evidence in the study after every stage
    (`tuner.export.confirm.StudyStages`): an export killed mid-way, run again on a fresh load of the study, decodes
    only the stages it had not reached and takes the same decisions."""
    from tuner.export.confirm import StudyStages
    from tuner.verdict.constraint import Constraint, Evidence
    from tuner.verdict.sequential import Design, confirm_in_stages

    url = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(storage=open_storage(url), study_name="s", directions=["maximize", "maximize"])
    constraint, total = Constraint(max_drop=5.0), 400
    pick = Evidence(tuple(i % 19 != 0 for i in range(total)), tuple(f"{i:08x}" for i in range(total)))
    base = Evidence(tuple(i % 23 != 0 for i in range(total)), tuple(f"{i:08x}" for i in range(total)))
    design = Design.for_constraint(constraint, looks=(0.25, 0.5, 0.75, 1.0), futility=False)
    decoded: list[tuple[int, int]] = []

    def decode(start: int, stop: int, kill_at: int | None = None) -> Evidence:
        if kill_at is not None and start >= kill_at:
            raise KeyboardInterrupt
        decoded.append((start, stop))
        return Evidence(pick.outcomes[start:stop], pick.answers[start:stop])

    def run(kill_at: int | None = None):
        study = optuna.load_study(study_name="s", storage=open_storage(url))
        return confirm_in_stages(design, total, constraint, pick=lambda a, b: decode(a, b, kill_at),
                                 baseline=lambda n: base.head(n), store=StudyStages(study, "pick:key"))

    try:
        run(kill_at=200)  # killed at the third stage
    except KeyboardInterrupt:
        pass
    assert decoded == [(0, 100), (100, 200)]
    again = run()
    assert decoded[2:] == [(200, 300), (300, 400)][: len(decoded) - 2] and again.resumed == 200
    fresh = confirm_in_stages(design, total, constraint, pick=lambda a, b: decode(a, b),
                              baseline=lambda n: base.head(n))
    assert [d.action for d in again.decisions] == [d.action for d in fresh.decisions]
