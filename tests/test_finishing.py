"""Finishing before the pick (tuner.verdict.finishing): the front's fast points that could still be feasible are
raced to a verdict, fastest first, within the pool and a budget, so a faster confirmed point is not left behind."""

from __future__ import annotations

from dataclasses import replace

from tuner.verdict.constraint import Constraint
from tuner.verdict.finishing import finish, open_points
from tuner.verdict.pareto import TrialPoint
from tuner.verdict.selection import pick
from tuner.verdict.stats import paired_drop_counts

RUNGS = [150, 300, 600, 1200]
C = Constraint(max_drop=5.0)
TRUTH = {1: (0.03, 0.053), 2: (0.03, 0.053), 3: (0.09, 0.11), 4: (0.035, 0.06)}  # trial -> (drop, discordance)


def at(number: int, n: int, tps: float, state: str = "PRUNED") -> TrialPoint:
    """Trial `number` judged on its first n items, with the counts its true drop and discordance give."""
    drop, disc = TRUTH[number]
    b, c = round(n * (disc + drop) / 2), round(n * (disc - drop) / 2)
    p = paired_drop_counts(b, c, n, C.confidence)
    return TrialPoint(number, 0.965 - p.drop, tps, state=state, n=n, drop=p.drop, drop_lower=p.lower,
                      drop_upper=p.upper, discordance=p.discordance)


def study() -> list[TrialPoint]:
    return [TrialPoint(0, 0.965, 32.0, label="vanilla", n=1200, drop=0.0, drop_lower=0.0, drop_upper=0.0),
            at(1, 1200, 900.0, "COMPLETE"),  # resolved feasible: the pick so far
            at(2, 300, 1800.0),  # stopped undecided (dominated while a lucky rival looked better): truly fine
            at(3, 150, 2100.0),  # the fastest, undecided after one rung: truly beyond the margin
            at(4, 300, 500.0)]  # undecided but slower than the pick: nothing to gain


class Extender:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, p: TrialPoint, n: int) -> TrialPoint:
        self.calls.append((p.number, n))
        return replace(at(p.number, n, p.tokens_per_s, p.state), label=p.label)


def test_the_open_points_are_the_undecided_ones_faster_than_the_pick():
    points = study()
    assert pick(points, "fastest", C).number == 1
    assert [p.number for p in open_points(points, C, 1200, faster_than=900.0)] == [3, 2]
    assert [p.number for p in open_points(points, C, 1200, faster_than=None)] == [3, 2, 4]


def test_finishing_races_the_fast_open_points_and_a_faster_pick_follows():
    extend = Extender()
    done = finish(study(), C, rule="fastest", rungs=RUNGS, extend=extend, budget=10_000)
    by = {p.number: p for p in done.points}
    assert extend.calls[0] == (3, 300)  # fastest first; it is shown infeasible and stops there
    assert C.verdict(by[3].bound()).value == "infeasible" and by[3].state == "PRUNED"
    assert [c for c in extend.calls if c[0] == 2] == [(2, 600), (2, 1200)]  # a candidate earns the whole pool
    assert by[2].state == "COMPLETE" and by[2].feasible and by[2].n == 1200
    assert 4 not in {c[0] for c in extend.calls}  # slower than the pick: never raced
    assert pick(done.points, "fastest", C).number == 2
    assert done.items == (300 - 150) + (1200 - 300)
    assert done.races == [(3, 150, 300, "infeasible"), (2, 300, 1200, "feasible")]
    # Without finishing the study would export trial 1, at half the speed.


def test_finishing_stays_within_its_budget():
    extend = Extender()
    done = finish(study(), C, rule="fastest", rungs=RUNGS, extend=extend, budget=400)
    assert done.items <= 400 and extend.calls == [(3, 300)]
    assert done.races[-1] == (2, 300, 300, "budget") and pick(done.points, "fastest", C).number == 1
