"""Which trial `export` ships, and the declared rule that confirms it on the held-out test split.

The pick is selection-aware: it is chosen among the trials whose *upper* bound on the paired drop is within the
margin (resolved feasible on validation, tuner.verdict.racing), never by point estimates, so the best of many noisy
estimates (the winner's curse) can't carry a configuration that only looked feasible. Then the test split, which
tuning never touched, confirms it with a non-inferiority test declared in advance:

    confirmed  ⇔  the one-sided upper bound of the paired drop on the test split (Tango's score bound,
                  tuner.verdict.stats, at the constraint's confidence) is at most the margin.

One pick, one test: trying the next candidate after a refusal would test several configurations on the same test
items and let chance confirm one. The profile records the rule with its numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scipy.stats import norm

from ..base.errors import TunerError
from .constraint import Constraint, Evidence, Verdict
from .pareto import TrialPoint, pareto_front, pick_fastest, pick_knee
from .stats import Disagreement, PairedDrop, z_one_sided

PICKS = ("knee", "fastest")


class PickError(TunerError):
    """No trial meets the pick rule (none resolved feasible yet, or an unknown rule)."""


def candidates(points: Sequence[TrialPoint], constraint: Constraint) -> list[TrialPoint]:
    """Complete trials `constraint` judges feasible on their validation bound (the baseline included)."""
    out = []
    for p in points:
        if p.state != "COMPLETE":
            continue
        bound = p.bound()
        if p.feasible if bound is None else constraint.verdict(bound) is Verdict.FEASIBLE:
            out.append(dataclasses.replace(p, feasible=True))
    return out


def confirmation_probability(p: TrialPoint, constraint: Constraint, test_items: int) -> float:
    """How likely the declared test confirms `p` on `test_items` items, from its validation evidence.

    With the true drop d ~ N(d̂, q/n) given validation (n items, discordant share q) and the test estimate
    ~ N(d, q/m) on m test items, the rule (upper bound d̂_test + z·sqrt(q/m) within the margin) passes with
    probability Φ((margin − z·sqrt(q/m) − d̂) / sqrt(q/n + q/m)). A power calculation for the one test the export
    will run: a candidate resolved on validation by a hair passes it about half the time."""
    if p.drop is None or not p.n or not test_items:
        return 1.0 if p.feasible else 0.0
    if p.drop == 0.0 and p.drop_upper == 0.0:  # the baseline itself
        return 1.0
    q = max(p.discordance or 0.0, 1.0 / p.n)
    se_val, se_test = math.sqrt(q / p.n), math.sqrt(q / test_items)
    z = z_one_sided(constraint.confidence)
    return float(norm.cdf((constraint.margin - z * se_test - p.drop) / math.hypot(se_val, se_test)))


def pick(points: Sequence[TrialPoint], rule: str, constraint: Constraint, *, test_items: int | None = None,
         min_confirmation: float = 0.0) -> TrialPoint:
    """The trial a rule picks among the resolved-feasible ones: `fastest` (highest tokens/s) or `knee` (the knee
    of their front, accuracy weighed in units of the margin). The baseline itself is never picked: it is what
    serving without a profile already does, and confirming it would decode it against itself on the test split.
    With `min_confirmation`, only candidates whose `confirmation_probability` on `test_items` reaches it are
    considered."""
    if rule not in PICKS:
        raise PickError(f"unknown pick rule {rule!r}; use one of {', '.join(PICKS)}")
    feasible = candidates(points, constraint)
    ok = [p for p in feasible if p.label != constraint.baseline]
    if feasible and not ok:
        raise PickError(f"only the baseline ({constraint.baseline}, trial {feasible[0].number}) is resolved within "
                        f"{constraint.max_drop:g} points of itself: nothing faster to export; run more trials, or "
                        "allow more")
    if min_confirmation > 0 and test_items:
        ok = [p for p in ok if confirmation_probability(p, constraint, test_items) >= min_confirmation]
    front = pareto_front(ok)
    if not front:
        raise PickError(f"no trial is resolved within {constraint.max_drop:g} points of the baseline (upper "
                        f"{constraint.confidence:.0%} bound of the paired drop); run more trials, or allow more")
    if rule == "knee":
        return pick_knee(front, accuracy_scale=constraint.margin)
    best = pick_fastest(front, min_accuracy=float("-inf"))
    assert best is not None
    return best


@dataclass(frozen=True)
class Confirmation:
    """The verdict of the declared rule on the test split, with the numbers behind it."""

    confirmed: bool
    paired: PairedDrop | Disagreement
    constraint: Constraint

    @property
    def margin(self) -> float:
        return self.constraint.margin

    def rule(self) -> dict[str, Any]:
        """The rule with its numbers, as the profile records it (points, not fractions)."""
        p, c = self.paired, self.constraint
        out: dict[str, Any] = {
            "rule": f"confirmed when {c.rule().removeprefix('feasible when ')} on the held-out test items",
            "metric": c.metric, "method": p.to_dict()["method"], "confidence": p.confidence,
            "margin_points": 100 * self.margin, "estimate_points": 100 * p.estimate,
            "upper_bound_points": 100 * p.upper, "lower_bound_points": 100 * p.lower, "n": p.n,
            "confirmed": self.confirmed}
        if isinstance(p, PairedDrop):
            out.update(drop_points=100 * p.drop, baseline_only_correct=p.baseline_only,
                       pick_only_correct=p.candidate_only)
        else:
            out.update(disagreement_points=100 * p.rate, disagreements=p.disagreements)
        return out


def confirm(pick: Evidence | Sequence[bool], baseline: Evidence | Sequence[bool],
            constraint: Constraint) -> Confirmation:
    """The declared test: `constraint.verdict` on the paired bound over the test items."""
    paired = constraint.compare(pick, baseline)
    return Confirmation(constraint.verdict(paired) is Verdict.FEASIBLE, paired, constraint)
