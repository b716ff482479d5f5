"""The promise a tuned configuration keeps, and the one verdict on it.

A constraint limits one paired quantity against the baseline reference (decoded on the same items): today the
accuracy *drop*. It is a non-inferiority claim, judged by a one-sided confidence bound at `confidence`
(tuner.verdict.stats). :meth:`Constraint.verdict` is the only place a bound is compared with the margin: racing,
the sampler's constraint value, the front's feasible flag, the pick and export's confirmation all ask it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..base.errors import TunerError

if TYPE_CHECKING:  # pragma: no cover - stats imports scipy; the spec and the CLI read this module without it
    from .stats import PairedDrop

# Float noise allowed where a bound meets the margin exactly (the margin is points / 100, the bound a root).
TOLERANCE = 1e-12


class Verdict(enum.Enum):
    """What a bound says of the margin: within it, beyond it, or not yet resolved either way."""

    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"
    UNDECIDED = "undecided"


class Bounded(Protocol):
    """One-sided bounds (fractions) of the constrained quantity, at the constraint's confidence."""

    @property
    def lower(self) -> float: ...

    @property
    def upper(self) -> float: ...


@dataclass(frozen=True)
class Interval:
    """A bound built from stored numbers (a trial's recorded drop bounds); `lower` -inf when it was not kept."""

    lower: float
    upper: float


@dataclass(frozen=True)
class Constraint:
    """At most `max_drop` accuracy points lost against the baseline reference, shown by the one-sided upper bound
    of the paired drop at `confidence`.

    `discordance` is the share of items on which a candidate and the baseline are expected to disagree; it sets
    how many items the margin needs (the power check at start). Measured on arith: 4.5-10% (5-7% for the
    configurations near the margin); a study reports the observed share, so set it from a first study.
    """

    baseline: str = "vanilla"  # name of the reference the candidate is compared with
    max_drop: float = 1.0  # accuracy points (percent) a configuration may lose against the baseline
    confidence: float = 0.95  # of every one-sided bound: racing verdicts, the feasible flag, the pick, the test
    discordance: float = 0.06

    @property
    def margin(self) -> float:
        """The allowed drop as an accuracy fraction."""
        return self.max_drop / 100

    def compare(self, candidate: Sequence[bool], baseline: Sequence[bool]) -> PairedDrop:
        """The paired bound of the constrained quantity from per-item outcomes on the same items."""
        from .stats import paired_drop

        return paired_drop(candidate, baseline, self.confidence)

    def verdict(self, bound: Bounded) -> Verdict:
        """The one feasibility rule: feasible when the upper bound is within the margin, infeasible when even the
        lower bound is beyond it, else undecided."""
        if bound.upper <= self.margin + TOLERANCE:
            return Verdict.FEASIBLE
        if bound.lower > self.margin + TOLERANCE:
            return Verdict.INFEASIBLE
        return Verdict.UNDECIDED

    def violation(self, bound: Bounded) -> float:
        """The sampler's constraint value (Optuna: <= 0 is feasible), <= 0 exactly when `verdict` is feasible."""
        return bound.upper - self.margin - TOLERANCE

    def rule(self) -> str:
        """The rule behind every verdict, in words (stored with a profile's confirmation)."""
        return (f"feasible when the one-sided {self.confidence:.0%} upper confidence bound of the paired drop "
                f"(baseline minus candidate accuracy, same items) is at most {self.max_drop:g} points")

    def with_margin(self, max_drop: float | None) -> Constraint:
        """The same constraint with another margin (export's `--max-drop`); itself when None."""
        if max_drop is None:
            return self
        check_max_drop(max_drop)
        return Constraint(self.baseline, float(max_drop), self.confidence, self.discordance)


class ConstraintError(TunerError, ValueError):
    """A constraint's field is out of range; the message names it."""


def check_max_drop(max_drop: object, name: str = "max_drop") -> float:
    """A margin in accuracy points: a number in [0, 100] (a negative one could confirm nothing); `name` is what the
    message calls it (empty where the caller names the option itself)."""
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or math.isnan(max_drop) \
            or not 0 <= max_drop <= 100:
        raise ConstraintError(f"{name + ' ' if name else ''}must be accuracy points in [0, 100], got {max_drop!r}")
    return float(max_drop)
