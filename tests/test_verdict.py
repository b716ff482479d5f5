"""The one verdict (`Constraint.verdict`): racing, the sampler's constraint value, the front's feasible flag, the
pick and export's confirmation all read it, so they agree on the same paired counts, right at the boundary."""

from __future__ import annotations

import optuna
import pytest

from tuner.storage.record import LedgerState, StudyRecord, TrialMetrics, TrialWriter, bits, join_answers
from tuner.study.points import trial_points
from tuner.verdict import racing
from tuner.verdict.constraint import TOLERANCE, Constraint, Evidence, Interval, Verdict
from tuner.verdict.selection import PickError, confirm, pick
from tuner.verdict.stats import disagreement, paired_drop_counts

N, ONLY_BASELINE, ONLY_CANDIDATE, BOTH = 400, 14, 4, 340
DIFFERENT_ANSWERS = ONLY_BASELINE + ONLY_CANDIDATE + 5  # and 5 where both are wrong with different answers


def paired_evidence() -> tuple[Evidence, Evidence]:
    """Per-item evidence with the counts above: b items only the baseline solves, c only the candidate, and
    answers that differ on those and on 5 items both get wrong."""
    cand = [False] * ONLY_BASELINE + [True] * ONLY_CANDIDATE + [True] * BOTH
    base = [True] * ONLY_BASELINE + [False] * ONLY_CANDIDATE + [True] * BOTH
    rest = N - len(cand)
    cand, base = cand + [False] * rest, base + [False] * rest
    base_answers = [f"a{i}" for i in range(N)]
    cand_answers = [f"b{i}" if i < DIFFERENT_ANSWERS else a for i, a in enumerate(base_answers)]
    return Evidence(tuple(cand), tuple(cand_answers)), Evidence(tuple(base), tuple(base_answers))


def a_study(cand: Evidence, base: Evidence, constraint: Constraint) -> optuna.Study:
    """A study holding the baseline ledger, the baseline's trial and one candidate trial, as the objective writes
    them."""
    study = optuna.create_study(directions=["maximize", "maximize"])
    StudyRecord(study).set_own_ledger(LedgerState(outcomes=bits(base.outcomes), answers=join_answers(base.answers)))
    for name, evidence, speed in (("vanilla", base, 10.0), (None, cand, 100.0)):
        trial = study.ask()
        writer = TrialWriter(trial)
        if name:
            writer.reference(name)
        writer.configuration({"mode": "streaming"}, name or "candidate")
        accuracy = sum(evidence.outcomes) / evidence.n
        writer.result(TrialMetrics(accuracy=accuracy, tokens_per_s=speed), evidence)
        trial.set_constraint("accuracy", constraint.violation(constraint.compare(evidence, base)))
        study.tell(trial, [accuracy, speed])
    return study


@pytest.mark.parametrize("metric", ["accuracy", "agreement"])
@pytest.mark.parametrize("beyond", [False, True])
def test_racing_sampler_front_pick_and_confirmation_agree_at_the_boundary(beyond, metric):
    cand, base = paired_evidence()
    if metric == "accuracy":
        upper = paired_drop_counts(ONLY_BASELINE, ONLY_CANDIDATE, N, 0.95).upper
    else:
        upper = disagreement(cand.answers, base.answers, 0.95).upper
    # The margin exactly at the bound (as points: /100 rounds), or a hair inside it.
    constraint = Constraint(max_drop=100 * upper - (1e-7 if beyond else 0.0), metric=metric)
    feasible = not beyond
    paired = constraint.compare(cand, base)
    assert paired.n == N and paired.upper == upper
    assert (constraint.verdict(paired) is Verdict.FEASIBLE) is feasible
    # racing: the last rung's verdict
    assert (racing.judge(constraint.verdict(paired), last=True, dominated=False, front=True)
            == racing.FEASIBLE) is feasible
    # the sampler: Optuna reads a constraint value <= 0 as feasible
    assert (constraint.violation(paired) <= 0) is feasible
    # the front's flag and the pick, from a real study re-judged against its ledger
    study = a_study(cand, base, constraint)
    points = {p.number: p for p in trial_points(study, constraint)}
    assert points[1].feasible is feasible and points[0].feasible
    if feasible:
        assert pick(list(points.values()), "fastest", constraint).number == 1
    else:  # the baseline is never the pick: nothing to export
        with pytest.raises(PickError, match="only the baseline"):
            pick(list(points.values()), "fastest", constraint)
    # export's confirmation
    assert confirm(cand, base, constraint).confirmed is feasible


def test_the_verdict_is_undecided_between_its_bounds_and_infeasible_beyond_the_lower_one():
    c = Constraint(max_drop=5.0)
    assert c.verdict(Interval(0.02, 0.049)) is Verdict.FEASIBLE
    assert c.verdict(Interval(0.02, 0.08)) is Verdict.UNDECIDED
    assert c.verdict(Interval(0.051, 0.09)) is Verdict.INFEASIBLE
    assert c.verdict(Interval(0.05 + TOLERANCE / 2, 0.09)) is Verdict.UNDECIDED  # float noise is not a verdict
    assert racing.judge(Verdict.INFEASIBLE, last=False, dominated=False, front=True) == racing.INFEASIBLE
    assert racing.judge(Verdict.FEASIBLE, last=False, dominated=False, front=True) == racing.CONTINUE
    assert racing.judge(Verdict.UNDECIDED, last=False, dominated=True, front=False) == racing.DOMINATED
    assert racing.judge(Verdict.UNDECIDED, last=True, dominated=False, front=True) == racing.UNRESOLVED


def test_the_disagreement_rate_bounds_the_drop_whatever_the_labels():
    """The agreement promise: accuracy(baseline) − accuracy(candidate) ≤ P(answers differ), item by item, for any
    labelling consistent with the answers (an item is right for whichever side matches its label)."""
    import random

    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 60)
        base = [rng.choice("abc") for _ in range(n)]
        cand = [b if rng.random() < 0.8 else rng.choice("abc") for b in base]
        labels = [rng.choice("abc") for _ in range(n)]
        drop = (sum(b == y for b, y in zip(base, labels, strict=True))
                - sum(c == y for c, y in zip(cand, labels, strict=True))) / n
        assert drop <= disagreement(cand, base).rate + 1e-12
