"""Pareto-front maths for dtune's two objectives (accuracy and tokens/s, both maximised): the front, the knee, the
fastest point above a bar, and the hypervolume.

Pure functions of hand-made points, free of Optuna, MLflow and plotting, so the CLI, the tracker, the exporter and
the benchmarks share one definition and tests can check it on small inputs. Pictures are `tuner.report.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .constraint import Interval

__all__ = ["TrialPoint", "finite", "has_objectives", "hypervolume_2d", "pareto_front", "pick_fastest", "pick_knee"]

# Ties in the knee distance closer than this are treated as equal, so float noise cannot flip the choice.
_TIE_EPS = 1e-12


@dataclass(frozen=True)
class TrialPoint:
    """One trial as the Pareto code sees it: two objectives plus what is needed to explain the point.

    ``params`` is excluded from hashing so points can live in sets/dict keys although dicts are unhashable.
    """

    number: int
    accuracy: float
    tokens_per_s: float
    feasible: bool = True
    state: str = "COMPLETE"
    params: dict = field(default_factory=dict, hash=False)
    label: str | None = None
    nfe: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None  # validation items it used
    drop: float | None = None  # paired drop against the baseline (accuracy fraction)
    drop_lower: float | None = None  # its one-sided lower bound at the constraint's confidence
    drop_upper: float | None = None  # its one-sided upper bound
    discordance: float | None = None  # share of its items on which it and the baseline disagree
    speed_spread: float | None = None  # IQR / median of its timing passes (tuner.study.timing)
    speed_noisy: bool | None = None  # the machine was too busy for its tokens/s to be trusted (tuner.study.timing)
    tokens_per_s_low: float | None = None  # tokens/s at the slow and the fast quartile of its timing passes
    tokens_per_s_high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict (used for trials.json / trials.csv)."""
        return asdict(self)

    def bound(self) -> Interval | None:
        """The paired bound it carries, for `Constraint.verdict` (None without one: an old study's trial)."""
        if self.drop_upper is None:
            return None
        return Interval(self.drop_lower if self.drop_lower is not None else -math.inf, self.drop_upper)


def finite(x: Any) -> bool:
    """True for a real, finite number (numpy scalars included); None/NaN/inf/strings are not."""
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def has_objectives(p: TrialPoint) -> bool:
    return finite(p.accuracy) and finite(p.tokens_per_s)


def pareto_front(points: Iterable[TrialPoint]) -> list[TrialPoint]:
    """Non-dominated COMPLETE and feasible points, sorted by tokens/s ascending (so accuracy descending).

    Pruned, failed, running and infeasible trials never enter the front: a pruned trial's numbers are partial
    and an infeasible one breaks the accuracy constraint, so neither is a configuration we would ship.
    Exact duplicates (same accuracy and tokens/s) are collapsed to the lowest trial number, so the result
    does not depend on the input order; enqueued reference configs usually have the lowest numbers.
    """
    cands = [p for p in points if p.state == "COMPLETE" and p.feasible and has_objectives(p)]
    # Sweep from the fastest point down: a point survives only if it is strictly more accurate than every
    # faster-or-equal point already seen. Sorting ties by accuracy desc then number asc makes the first
    # point of each tokens/s value the one that wins, and drops duplicates deterministically.
    cands.sort(key=lambda p: (-p.tokens_per_s, -p.accuracy, p.number))
    front: list[TrialPoint] = []
    best_acc = -math.inf
    for p in cands:
        if p.accuracy > best_acc:
            front.append(p)
            best_acc = p.accuracy
    front.reverse()
    return front


def pick_knee(front: Sequence[TrialPoint], accuracy_scale: float | None = None) -> TrialPoint:
    """The knee of a front: the point that bulges most towards the ideal corner.

    Both objectives are min-max normalised over ``front`` (so tokens/s in the thousands cannot swamp an
    accuracy fraction); the extremes then sit at (0, 1) and (1, 0) and the knee is the point with the largest
    signed distance above the line x + y = 1 joining them. Ties (including a front of two points, where both
    lie on the line, and a straight-line front) go to the more accurate point, then the lower trial number:
    dtune's brief is "faster without losing accuracy", so when the geometry does not decide we err towards
    accuracy; use :func:`pick_fastest` to trade accuracy for speed explicitly. A single point is its own knee.

    ``accuracy_scale`` (an accuracy fraction, e.g. the constraint's max_drop / 100) measures accuracy in units of
    the loss the user accepts instead of the front's own span, when that span is smaller: a feasible front of
    vanilla and a point 50x faster but 0.5 points less accurate (under a 1-point budget) then has its knee at the
    fast point, not at vanilla, as a span-normalised 0.5 points would weigh as much as the whole speed range.

    Raises ValueError on an empty front (there is nothing sensible to return).
    """
    pts = [p for p in front if has_objectives(p)]
    if not pts:
        raise ValueError("pick_knee needs at least one point with finite accuracy and tokens/s")
    if len(pts) == 1:
        return pts[0]
    a_lo, a_hi = min(p.accuracy for p in pts), max(p.accuracy for p in pts)
    t_lo, t_hi = min(p.tokens_per_s for p in pts), max(p.tokens_per_s for p in pts)
    a_span = max(a_hi - a_lo, accuracy_scale or 0.0) or 1.0
    t_span = (t_hi - t_lo) or 1.0

    def score(p: TrialPoint) -> float:
        x = (p.tokens_per_s - t_lo) / t_span
        y = 1.0 - (a_hi - p.accuracy) / a_span  # the most accurate point at 1, as min-max puts it
        return (x + y - 1.0) / math.sqrt(2.0)

    best = pts[0]
    best_s = score(best)
    for p in pts[1:]:
        s = score(p)
        if s > best_s + _TIE_EPS or (
            abs(s - best_s) <= _TIE_EPS and (p.accuracy, -p.number) > (best.accuracy, -best.number)
        ):
            best, best_s = p, s
    return best


def pick_fastest(front: Sequence[TrialPoint], min_accuracy: float) -> TrialPoint | None:
    """Highest tokens/s among points with accuracy >= ``min_accuracy``; None when no point qualifies.

    Ties on speed go to the more accurate point, then the lower trial number, so the choice is stable.
    """
    ok = [p for p in front if has_objectives(p) and p.accuracy >= min_accuracy]
    if not ok:
        return None
    return max(ok, key=lambda p: (p.tokens_per_s, p.accuracy, -p.number))


def hypervolume_2d(
    points: Iterable[TrialPoint | tuple[float, float]], reference: tuple[float, float]
) -> float:
    """Area dominated by ``points`` and bounded below by ``reference`` = (accuracy, tokens/s), both maximised.

    Computed over exactly the points given (dominated ones add nothing, so passing every trial is harmless;
    pass ``pareto_front(points)`` to exclude infeasible/pruned trials). Points not strictly better than the
    reference in both objectives contribute zero. Units are accuracy-fraction × tokens/s: compare values only
    between studies that share a reference.
    """
    ref_a, ref_t = reference
    xy: list[tuple[float, float]] = []
    for p in points:
        a, t = (p.accuracy, p.tokens_per_s) if isinstance(p, TrialPoint) else (p[0], p[1])
        if finite(a) and finite(t) and a > ref_a and t > ref_t:
            xy.append((a, t))
    # Sweep from the fastest point: each point adds the horizontal slab between the best accuracy so far
    # and its own accuracy, as wide as its speed margin over the reference.
    xy.sort(key=lambda at: (-at[1], -at[0]))
    area = 0.0
    best_a = ref_a
    for a, t in xy:
        if a > best_a:
            area += (t - ref_t) * (a - best_a)
            best_a = a
    return area
