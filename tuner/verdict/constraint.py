"""The promise a tuned configuration keeps, and the one verdict on it.

A constraint limits one paired quantity against the baseline reference decoded on the same items, judged by a
one-sided confidence bound at `confidence`:

* `accuracy`: the accuracy *drop* (baseline minus candidate; Tango's paired bound, tuner.verdict.stats);
* `agreement`: the *disagreement rate* with the baseline's answers (an exact binomial bound). It needs no labels,
  and it bounds the drop under any labelling: accuracy can fall by at most the disagreement rate.

Either way `max_drop` is the accuracy points the promise allows. :meth:`Constraint.verdict` is the only place a
bound is compared with the margin: racing, the sampler's constraint value, the front's feasible flag, the pick and
export's confirmation all ask it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..base.errors import TunerError

if TYPE_CHECKING:  # pragma: no cover - stats imports scipy; the spec and the CLI read this module without it
    from .stats import Disagreement, PairedDrop

# Float noise allowed where a bound meets the margin exactly (the margin is points / 100, the bound a root).
TOLERANCE = 1e-12
METRICS = ("accuracy", "agreement")


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
    """A bound built from stored numbers (a trial's recorded bounds); `lower` -inf when it was not kept."""

    lower: float
    upper: float


@dataclass(frozen=True)
class Evidence:
    """What a decoding says item by item, in pool order: whether it is right (labelled tasks) and its answer key
    (`Task.answer`, digested: tuner.storage.record.answer_digest)."""

    outcomes: tuple[bool, ...] = ()
    answers: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return max(len(self.outcomes), len(self.answers))

    def head(self, n: int) -> Evidence:
        return Evidence(self.outcomes[:n], self.answers[:n])


class ConstraintError(TunerError, ValueError):
    """A constraint's field is out of range, or its evidence is missing; the message names it."""


@dataclass(frozen=True)
class Constraint:
    """At most `max_drop` accuracy points lost against the baseline reference, shown by the one-sided upper bound
    of the constrained quantity (`metric`) at `confidence`.

    `discordance` is the share of items on which a candidate and the baseline are expected to disagree; it sets
    how many items the margin needs (the power check at start). Measured on arith: 4.5-10% (5-7% for the
    configurations near the margin); a study reports the observed share, so set it from a first study.
    """

    baseline: str = "vanilla"  # name of the reference the candidate is compared with
    max_drop: float = 1.0  # accuracy points (percent) a configuration may lose against the baseline
    confidence: float = 0.95  # of every one-sided bound: racing verdicts, the feasible flag, the pick, the test
    discordance: float = 0.06
    metric: str = field(default="accuracy")  # METRICS: what is bounded (the drop, or the disagreement rate)

    @property
    def margin(self) -> float:
        """The allowed drop (or disagreement) as a fraction."""
        return self.max_drop / 100

    @property
    def needs_labels(self) -> bool:
        return self.metric == "accuracy"

    @property
    def quantity(self) -> str:
        """What the bound is of, in words."""
        return "disagreement" if self.metric == "agreement" else "drop"

    def compare(self, candidate: Evidence | Sequence[bool], baseline: Evidence | Sequence[bool]
                ) -> PairedDrop | Disagreement:
        """The paired bound of the constrained quantity on the candidate's items (the first `candidate.n` of
        `baseline`); a sequence stands for per-item outcomes."""
        cand, base = as_evidence(candidate), as_evidence(baseline)
        from .stats import disagreement, paired_drop

        if self.metric == "agreement":
            if len(cand.answers) != cand.n or len(base.answers) < cand.n:
                raise ConstraintError("the agreement constraint needs every item's answer from both decodings")
            return disagreement(cand.answers, base.answers[: cand.n], self.confidence)
        if len(cand.outcomes) != cand.n or len(base.outcomes) < cand.n:
            raise ConstraintError("the accuracy constraint needs labels, and this task has none: use the agreement "
                                  "constraint (--set constraint.metric=agreement)")
        return paired_drop(cand.outcomes, base.outcomes[: cand.n], self.confidence)

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
        if self.metric == "agreement":
            return (f"feasible when the one-sided {self.confidence:.0%} upper confidence bound of the rate at which "
                    f"its answers differ from the baseline's (same prompts) is at most {self.max_drop:g} points; "
                    "whatever the right answers are, accuracy can fall by at most that rate")
        return (f"feasible when the one-sided {self.confidence:.0%} upper confidence bound of the paired drop "
                f"(baseline minus candidate accuracy, same items) is at most {self.max_drop:g} points")

    def items_needed(self, power: float = 0.8) -> int:
        """Paired items that show a configuration truly at half the margin feasible with probability `power`
        (the power check at start), in this constraint's own terms."""
        from .stats import items_to_resolve, items_to_resolve_agreement

        if self.metric == "agreement":
            return items_to_resolve_agreement(self.margin, true_rate=self.margin / 2, confidence=self.confidence,
                                              power=power)
        return items_to_resolve(self.margin, self.discordance, true_drop=self.margin / 2,
                                confidence=self.confidence, power=power)

    def with_margin(self, max_drop: float | None) -> Constraint:
        """The same constraint with another margin (export's `--max-drop`); itself when None."""
        if max_drop is None:
            return self
        check_max_drop(max_drop)
        return Constraint(self.baseline, float(max_drop), self.confidence, self.discordance, self.metric)


def as_evidence(x: Evidence | Sequence[bool]) -> Evidence:
    return x if isinstance(x, Evidence) else Evidence(outcomes=tuple(bool(o) for o in x))


def check_max_drop(max_drop: object, name: str = "max_drop") -> float:
    """A margin in accuracy points: a number in [0, 100] (a negative one could confirm nothing); `name` is what the
    message calls it (empty where the caller names the option itself)."""
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or math.isnan(max_drop) \
            or not 0 <= max_drop <= 100:
        raise ConstraintError(f"{name + ' ' if name else ''}must be accuracy points in [0, 100], got {max_drop!r}")
    return float(max_drop)


def check_metric(metric: object, name: str = "constraint.metric") -> str:
    if metric not in METRICS:
        raise ConstraintError(f"{name} must be one of {', '.join(METRICS)}, got {metric!r}")
    return str(metric)
