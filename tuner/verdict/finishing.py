"""Finishing a study before its pick: the front's fast points that could still be feasible are raced to a verdict.

Racing stops a trial as soon as a resolved rival makes it pointless (`dominated`), and a study's budget can end
with trials whose bound still straddles the margin. When such a trial is faster than the point the rule would
pick, the study may end by exporting something slower (vanilla itself, in 9 of 100 replayed arith studies) while a
faster confirmed point was within reach. `finish` gives those trials the rest of their race:

* open: a trial faster than the current pick (`tuner.verdict.selection.pick`; any trial when nothing is picked
  yet) whose bound the constraint judges *undecided* (`Constraint.verdict`: the lower bound
  within the margin, the upper beyond it) and that used fewer items than the pool;
* fastest first, each raced rung by rung (`tuner.verdict.racing.rungs`) until the constraint judges it
  infeasible or it has the whole pool (a candidate for the pick earns the whole pool, as in racing, so its bound
  rests on every validation item);
* after each finished race the pick is made again, and only trials faster than it stay open;
* within `budget` validation items (the trials' decoding; the baseline's ledger grows with them).

The pick afterwards is the usual one over the updated points, and the held-out test still confirms it: racing more
trials to a verdict adds candidates, as more trials would, and the test split (untouched by tuning) is what keeps
the selection honest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .constraint import Constraint, Verdict
from .pareto import TrialPoint
from .selection import PickError, pick

Extend = Callable[[TrialPoint, int], TrialPoint]  # the trial raced on to n items, its paired bound recomputed

__all__ = ["Extend", "Finished", "finish", "open_points"]


def open_points(points: Sequence[TrialPoint], constraint: Constraint, pool: int,
                faster_than: float | None) -> list[TrialPoint]:
    """Trials that could still be feasible and would beat the pick on speed (module docstring), fastest first."""
    out = []
    for p in points:
        bound = p.bound()
        if bound is None or p.n is None or p.n >= pool or p.state not in ("COMPLETE", "PRUNED"):
            continue
        if faster_than is not None and p.tokens_per_s <= faster_than:
            continue
        if constraint.verdict(bound) is Verdict.UNDECIDED:
            out.append(p)
    return sorted(out, key=lambda p: (-p.tokens_per_s, p.number))


@dataclass
class Finished:
    """The points after finishing, and what it did: (trial, items before, items after, verdict) per race."""

    points: list[TrialPoint]
    races: list[tuple[int, int, int, str]] = field(default_factory=list)
    items: int = 0  # validation items decoded

    def to_dict(self) -> dict[str, object]:
        return {"items": self.items, "races": [{"trial": t, "from": a, "to": b, "verdict": v}
                                               for t, a, b, v in self.races]}


def _current(points: Sequence[TrialPoint], rule: str, constraint: Constraint, **kw: object) -> TrialPoint | None:
    try:
        return pick(points, rule, constraint, **kw)  # type: ignore[arg-type]
    except PickError:
        return None


def finish(points: Sequence[TrialPoint], constraint: Constraint, *, rule: str, rungs: Sequence[int], extend: Extend,
           budget: int, test_items: int | None = None, min_confirmation: float = 0.0) -> Finished:
    """Race the open trials to a verdict (module docstring); `extend(point, n)` decodes the trial's configuration
    on the validation pool's items [point.n, n) and returns the point with its bound over the first n items."""
    pool = rungs[-1]
    by_number = {p.number: p for p in points}
    done = Finished(list(points))
    raced: set[int] = set()
    kw = {"test_items": test_items, "min_confirmation": min_confirmation}
    while True:
        current = _current(list(by_number.values()), rule, constraint, **kw)
        speed = None if current is None else current.tokens_per_s
        todo = [p for p in open_points(list(by_number.values()), constraint, pool, speed) if p.number not in raced]
        if not todo:
            break
        p = todo[0]
        raced.add(p.number)
        start, verdict = p.n or 0, Verdict.UNDECIDED
        for n in (r for r in rungs if r > start):
            if done.items + n - (p.n or 0) > budget:
                break
            before = p.n or 0
            p = extend(p, n)
            done.items += n - before
            verdict = constraint.verdict(p.bound())  # type: ignore[arg-type]
            if verdict is Verdict.INFEASIBLE:
                break
        resolved = verdict is Verdict.FEASIBLE and p.n == pool
        p = dataclasses.replace(p, feasible=resolved, state="COMPLETE" if resolved else p.state)
        by_number[p.number] = p
        done.races.append((p.number, start, p.n or 0, verdict.value if p.n == pool or verdict is Verdict.INFEASIBLE
                           else "budget"))
    done.points = [by_number[p.number] for p in points]
    return done
