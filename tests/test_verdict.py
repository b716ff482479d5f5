"""The one verdict (`Constraint.verdict`): racing, the sampler's constraint value, the front's feasible flag, the
pick and export's confirmation all read it, so they agree on the same paired counts, right at the boundary."""

from __future__ import annotations

import optuna
import pytest

from tuner.storage.record import LedgerState, StudyRecord, TrialMetrics, TrialWriter
from tuner.study.points import trial_points
from tuner.verdict import racing
from tuner.verdict.constraint import TOLERANCE, Constraint, Evidence, Interval, Verdict
from tuner.verdict.selection import confirm, pick
from tuner.verdict.stats import paired_drop_counts

N, ONLY_BASELINE, ONLY_CANDIDATE, BOTH = 400, 14, 4, 340


def paired_outcomes() -> tuple[list[bool], list[bool]]:
    """Per-item outcomes with the counts above: b items only the baseline solves, c only the candidate."""
    cand = [False] * ONLY_BASELINE + [True] * ONLY_CANDIDATE + [True] * BOTH
    base = [True] * ONLY_BASELINE + [False] * ONLY_CANDIDATE + [True] * BOTH
    rest = N - len(cand)
    return cand + [False] * rest, base + [False] * rest


def a_study(cand: list[bool], base: list[bool], constraint: Constraint) -> optuna.Study:
    """A study holding the baseline ledger, the baseline's trial and one candidate trial, as the objective writes
    them."""
    study = optuna.create_study(directions=["maximize", "maximize"])
    bits = lambda xs: "".join("1" if x else "0" for x in xs)  # noqa: E731
    StudyRecord(study).set_ledger(LedgerState(outcomes=bits(base)), "vanilla")
    for name, outcomes, speed in (("vanilla", base, 10.0), (None, cand, 100.0)):
        trial = study.ask()
        writer = TrialWriter(trial)
        if name:
            writer.reference(name)
        writer.configuration({"mode": "streaming"}, name or "candidate")
        accuracy = sum(outcomes) / len(outcomes)
        writer.result(TrialMetrics(accuracy=accuracy, tokens_per_s=speed), Evidence(tuple(outcomes)))
        paired = constraint.compare(outcomes, base)
        trial.set_constraint("accuracy", constraint.violation(paired))
        study.tell(trial, [accuracy, speed])
    return study


@pytest.mark.parametrize("beyond", [False, True])
def test_racing_sampler_front_pick_and_confirmation_agree_at_the_boundary(beyond):
    cand, base = paired_outcomes()
    upper = paired_drop_counts(ONLY_BASELINE, ONLY_CANDIDATE, N, 0.95).upper
    # The margin exactly at the bound (as points: /100 rounds), or a hair inside it.
    constraint = Constraint(max_drop=100 * upper - (1e-7 if beyond else 0.0))
    feasible = not beyond
    paired = constraint.compare(cand, base)
    assert (paired.baseline_only, paired.candidate_only, paired.n) == (ONLY_BASELINE, ONLY_CANDIDATE, N)
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
    assert (pick(list(points.values()), "fastest", constraint).number == 1) is feasible
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
