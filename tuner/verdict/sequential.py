"""Confirmation in stages: a group-sequential non-inferiority design on the constraint's bound over the test split.

K looks at planned fractions of the split (its first n_k items, in order); look k confirms when the bound at the
look's confidence is within the margin (`Constraint.verdict`), refuses for futility (non-binding) when even the
lower bound at the overall confidence is beyond it, and the last look refuses otherwise. The looks' confidences
come from Lan-DeMets alpha spending (O'Brien-Fleming-type by default, Pocock-type, or Hwang-Shih-DeCani `hsd:γ`),
solved by recursive numerical integration for the correlated looks (corr(Z_j, Z_k) = √(t_j / t_k)) so that
P(confirmed at any look | true drop ≥ margin) = α exactly; docs/studies.md "Export" says why this design, and
tests/test_sequential.py checks the boundaries against published values and the error by simulation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from ..base.errors import TunerError
from .constraint import Constraint, Verdict

__all__ = ["CONFIRMED", "CONTINUE", "DEFAULT_LOOKS", "REFUSED", "SPENDING", "Decision", "Design", "DesignError",
           "StagedConfirmation", "StageStore", "boundaries", "confirm_in_stages", "spent",
           "stopping_probabilities"]

CONFIRMED, REFUSED, CONTINUE = "confirmed", "refused", "continue"
DEFAULT_LOOKS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # tenths: see the module docstring
SPENDING = ("obrien-fleming", "pocock")


class DesignError(TunerError, ValueError):
    """A design's looks, spending or confidence are out of range; the message names which."""


def spent(t: float, alpha: float, spending: str) -> float:
    """α(t): the one-sided error spent by information fraction t (see the module docstring); α(1) = α exactly."""
    if t >= 1.0:
        return alpha
    if t <= 0.0:
        return 0.0
    if spending == "obrien-fleming":
        return float(2.0 * norm.sf(norm.isf(alpha / 2.0) / math.sqrt(t)))
    if spending == "pocock":
        return alpha * math.log(1.0 + (math.e - 1.0) * t)
    if spending.startswith("hsd:"):
        gamma = _hsd_gamma(spending)
        if gamma == 0:
            return alpha * t
        return alpha * (1.0 - math.exp(-gamma * t)) / (1.0 - math.exp(-gamma))
    raise DesignError(f"unknown spending {spending!r}; use one of {', '.join(SPENDING)}")


def _hsd_gamma(spending: str) -> float:
    try:
        gamma = float(spending.split(":", 1)[1])
    except ValueError:
        raise DesignError(f"hsd spending needs a number, as in hsd:-2, got {spending!r}") from None
    if not math.isfinite(gamma) or not -40 <= gamma <= 40:
        raise DesignError(f"hsd spending's gamma must be in [-40, 40], got {spending!r}")
    return gamma


def check_spending(spending: str) -> str:
    """`spending` if it names a spending function (SPENDING, or hsd:GAMMA), else DesignError."""
    if spending in SPENDING:
        return spending
    if spending.startswith("hsd:"):
        _hsd_gamma(spending)
        return spending
    raise DesignError(f"unknown spending {spending!r}; use one of {', '.join(SPENDING)} or hsd:GAMMA")


@lru_cache(maxsize=256)
def boundaries(fractions: tuple[float, ...], alpha: float, spending: str, grid: int = 1201) -> tuple[float, ...]:
    """Critical values c_k of the score statistic at the looks' information fractions (increasing, the last 1):
    a first crossing of Z_k ≥ c_k at look k has probability α(t_k) − α(t_{k−1}) under the canonical process
    (module docstring), by recursive numerical integration of the density of the score B(t) = Z √t over the
    continuation region. `inf` where a look spends nothing (it can't confirm)."""
    out: list[float] = []
    xs = ws = None  # grid and trapezoid-weighted density of B(t_{k-1}) on the continuation region
    prev_t, prev_spent = 0.0, 0.0
    for t in fractions:
        step = spent(t, alpha, spending) - prev_spent
        if xs is None:  # first look: B(t_1) ~ N(0, t_1)
            c = float(norm.isf(step)) if step > 0 else math.inf
        elif step <= 0:
            c = math.inf
        else:
            c = _crossing_boundary(xs, ws, math.sqrt(t - prev_t), step) / math.sqrt(t)
        out.append(c)
        # The density of B(t) below this look's boundary, for the next look.
        b = c * math.sqrt(t) if math.isfinite(c) else 12.0 * math.sqrt(t)
        lo = -12.0 * math.sqrt(t)
        new_xs = np.linspace(lo, b, grid)
        if xs is None:
            dens = norm.pdf(new_xs / math.sqrt(t)) / math.sqrt(t)
        else:
            sd = math.sqrt(t - prev_t)
            dens = (norm.pdf((new_xs[:, None] - xs[None, :]) / sd) / sd) @ ws
        h = new_xs[1] - new_xs[0]
        trap = np.full(grid, h)
        trap[0] = trap[-1] = h / 2
        xs, ws = new_xs, dens * trap
        prev_t, prev_spent = t, prev_spent + max(step, 0.0)
    return tuple(out)


def _crossing_boundary(xs: np.ndarray, ws: np.ndarray, sd: float, step: float) -> float:
    """The b on the score scale at which paths still going (weights `ws` at `xs`) cross into [b, ∞) after an
    N(0, sd²) increment with probability `step`; the crossing probability falls from the mass still going to 0
    as b grows, so the root is unique."""

    def crossing(b: float) -> float:
        return float(np.dot(ws, norm.sf((b - xs) / sd))) - step

    return float(brentq(crossing, -40.0, float(xs[-1]) + 12 * sd + 1.0, xtol=1e-12))


def stopping_probabilities(fractions: Sequence[float], crit: Sequence[float], theta: float,
                           grid: int = 1201) -> tuple[float, ...]:
    """P(first crossing at look k) for the canonical process with drift: B(t) = Z √t ~ N(θ t, t), crossing when
    Z_k ≥ c_k (the same recursion as `boundaries`, with the drift; θ = 0 gives the spent error). Futility stops
    are left out, so for a good pick the implied items are an upper bound."""
    out: list[float] = []
    xs = ws = None
    prev_t = 0.0
    for t, c in zip(fractions, crit, strict=True):
        b = c * math.sqrt(t) if math.isfinite(c) else theta * t + 12.0 * math.sqrt(t)
        lo = theta * t - 12.0 * math.sqrt(t)
        if xs is None:
            out.append(float(norm.sf((b - theta * t) / math.sqrt(t))) if math.isfinite(c) else 0.0)
            new_xs = np.linspace(lo, b, grid)
            dens = norm.pdf((new_xs - theta * t) / math.sqrt(t)) / math.sqrt(t)
        else:
            dt_, sd = t - prev_t, math.sqrt(t - prev_t)
            out.append(float(np.dot(ws, norm.sf((b - xs - theta * dt_) / sd))) if math.isfinite(c) else 0.0)
            new_xs = np.linspace(lo, b, grid)
            dens = (norm.pdf((new_xs[:, None] - xs[None, :] - theta * dt_) / sd) / sd) @ ws
        h = new_xs[1] - new_xs[0]
        trap = np.full(grid, h)
        trap[0] = trap[-1] = h / 2
        xs, ws, prev_t = new_xs, dens * trap, t
    return tuple(out)


@dataclass(frozen=True)
class Decision:
    """What one look says: `action` confirmed / refused / continue, with the bound behind it.

    `bound` is the constraint's bound on the look's items at the look's confidence (the one a confirmation rests
    on); `futility_bound` the one at the design's confidence (None at the last look or without futility)."""

    action: str
    look: int  # 0-based
    n: int  # items the look rests on
    confidence: float  # the look's one-sided confidence
    bound: Any
    verdict: Verdict
    futility_bound: Any = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"look": self.look + 1, "n": self.n, "confidence": self.confidence,
                               "action": self.action, "verdict": self.verdict.value, "reason": self.reason,
                               "lower": self.bound.lower, "upper": self.bound.upper}
        if hasattr(self.bound, "drop"):
            out["drop"] = self.bound.drop
        if self.futility_bound is not None:
            out["futility_lower"] = self.futility_bound.lower
        return out


@dataclass(frozen=True)
class Design:
    """A group-sequential confirmation: looks at fractions `looks` of the test split (increasing, ending at 1),
    error spent by `spending` (O'Brien-Fleming-type by default, or Pocock-type), overall one-sided confidence
    `confidence` (the constraint's), stops for futility when `futility` (non-binding). See the module docstring.

    `looks=(1.0,)` is today's fixed test: one look, at the constraint's confidence."""

    looks: tuple[float, ...] = DEFAULT_LOOKS
    spending: str = "obrien-fleming"
    confidence: float = 0.95
    futility: bool = True

    def __post_init__(self) -> None:
        looks = tuple(float(x) for x in self.looks)
        object.__setattr__(self, "looks", looks)
        if not looks or any(not 0 < x <= 1 for x in looks) or any(b <= a for a, b in zip(looks, looks[1:], strict=False)) \
                or looks[-1] != 1.0:
            raise DesignError(f"looks must be increasing fractions in (0, 1] ending at 1, got {self.looks!r}")
        check_spending(self.spending)
        if not 0.5 < self.confidence < 1:
            raise DesignError(f"confidence must be in (0.5, 1), got {self.confidence!r}")

    @classmethod
    def for_constraint(cls, constraint: Constraint, looks: Sequence[float] = DEFAULT_LOOKS,
                       spending: str = "obrien-fleming", futility: bool = True) -> Design:
        return cls(tuple(looks), spending, constraint.confidence, futility)

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence

    def stages(self, total: int) -> tuple[int, ...]:
        """The looks' cumulative item counts on a split of `total` items: round(t_k · total), at least 1, distinct
        (looks that round to the same count merge), the last one `total`."""
        if total < 1:
            raise DesignError(f"a test split needs at least one item, got {total}")
        out: list[int] = []
        for t in self.looks:
            n = min(total, max(1, round(t * total)))
            if not out or n > out[-1]:
                out.append(n)
        return tuple(out)

    def look_confidences(self, total: int | None = None) -> tuple[float, ...]:
        """The one-sided confidence of each look's bound: Φ(c_k) (1.0 where a look spends nothing). At the planned
        fractions, or at the actual ones of a `total`-item split (`stages`); the last look's is the constraint's
        confidence exactly when there is one look."""
        fractions = self.looks if total is None else tuple(n / total for n in self.stages(total))
        if len(fractions) == 1:
            return (self.confidence,)
        return tuple(float(norm.cdf(c)) if math.isfinite(c) else 1.0
                     for c in boundaries(fractions, self.alpha, self.spending))

    def decide(self, look: int, candidate: Any, baseline: Any, constraint: Constraint, total: int) -> Decision:
        """The verdict at look `look` (0-based) of a `total`-item split, from what the pick and the baseline said
        on the split's first `stages(total)[look]` items (per-item outcomes, or whatever `constraint.compare`
        takes that has `n` and `head(n)`; longer ones are cut there), through `constraint.compare` and
        `constraint.verdict` at the look's confidence (module docstring)."""
        if abs(constraint.confidence - self.confidence) > 1e-12:
            raise DesignError(f"the design's confidence {self.confidence} is not the constraint's "
                              f"{constraint.confidence}")
        stages = self.stages(total)
        if not 0 <= look < len(stages):
            raise DesignError(f"look {look} is not one of the design's {len(stages)} on {total} items")
        n = stages[look]
        if _length(candidate) < n or _length(baseline) < n:
            raise DesignError(f"look {look + 1} needs {n} items; got {_length(candidate)} and {_length(baseline)}")
        last = look == len(stages) - 1
        conf = self.look_confidences(total)[look]
        cand, base = _head(candidate, n), _head(baseline, n)
        if conf >= 1.0:  # the look spends no error: it can't confirm
            bound: Any = _NoBound(n)
            verdict = Verdict.UNDECIDED
        else:
            at_look = dataclasses.replace(constraint, confidence=conf)
            bound = at_look.compare(cand, base)
            verdict = at_look.verdict(bound)
        if verdict is Verdict.FEASIBLE:
            return Decision(CONFIRMED, look, n, conf, bound, verdict,
                            reason=f"upper {conf:.4%} bound within the margin at look {look + 1}")
        if last:
            return Decision(REFUSED, look, n, conf, bound, verdict,
                            reason=f"upper {conf:.4%} bound beyond the margin at the last look")
        futile = None
        if self.futility:
            futile = constraint.compare(cand, base)
            if constraint.verdict(futile) is Verdict.INFEASIBLE:
                return Decision(REFUSED, look, n, conf, bound, verdict, futile,
                                reason=f"futility: lower {constraint.confidence:.0%} bound beyond the margin at "
                                       f"look {look + 1}")
        return Decision(CONTINUE, look, n, conf, bound, verdict, futile, reason="undecided")

    def expected_items(self, total: int, drop: float, discordance: float, margin: float) -> float:
        """Expected test items until the design stops, for a pick whose true paired drop is `drop` with a
        discordant share `discordance` (normal approximation: Tango's score at the margin, Z = (b − c − n·m) /
        sqrt(n·V0), drifts by (m − drop) · sqrt(n / V0), V0 its null variance at the expected counts); futility
        stops are not counted, so it is an upper bound for a good pick. What the cost plan shows for the test."""
        from .stats import tango_score

        stages = self.stages(total)
        fractions = tuple(n / total for n in stages)
        crit = [norm.isf(1 - c) if c < 1 else math.inf for c in self.look_confidences(total)]
        big = 10**6  # expected counts on a large n: V0 as a rate
        b, c = big * (discordance + drop) / 2, big * max(discordance - drop, 0.0) / 2
        z = tango_score(b, c, big, margin)  # type: ignore[arg-type]
        # A margin of the whole scale (max_drop 100 points) makes the score infinite and V0 zero: fall back as for z = 0.
        v0 = ((b - c - big * margin) / z) ** 2 / big if z and math.isfinite(z) else 0.0
        v0 = v0 if v0 > 0 else max(discordance, 1e-9)
        theta = (margin - drop) * math.sqrt(total / v0)
        stop = stopping_probabilities(fractions, crit, theta)
        going = 1.0 - sum(stop[:-1])
        return sum(p * n for p, n in zip(stop[:-1], stages[:-1], strict=True)) + going * stages[-1]

    def key(self, total: int) -> str:
        """A short fingerprint of the design on a `total`-item split, for keying stored stages: a resumed export
        must look where the killed one declared it would."""
        import hashlib
        import json

        raw = json.dumps({"looks": self.stages(total), "spending": self.spending, "confidence": self.confidence,
                          "futility": self.futility}, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:12]

    def to_dict(self, total: int | None = None) -> dict[str, Any]:
        """The design as a profile records it (with the looks' item counts and confidences on `total` items)."""
        out: dict[str, Any] = {
            "rule": "group-sequential non-inferiority: at each look, confirmed when the constraint's one-sided "
                    "upper bound at the look's confidence is within the margin; refused for futility (non-binding) "
                    "when the lower bound at the overall confidence is beyond it; refused at the last look otherwise",
            "looks": list(self.looks), "spending": f"Lan-DeMets {self.spending}-type", "confidence": self.confidence,
            "futility": "non-binding" if self.futility else "none",
            "boundaries": "recursive numerical integration, canonical joint distribution of the score statistics"}
        if total is not None:
            out["items"] = list(self.stages(total))
            out["look_confidences"] = list(self.look_confidences(total))
        return out


@dataclass(frozen=True)
class _NoBound:
    n: int
    lower: float = -math.inf
    upper: float = math.inf


def _length(x: Any) -> int:
    return int(x.n) if hasattr(x, "head") else len(x)


def _head(x: Any, n: int) -> Any:
    return x.head(n) if hasattr(x, "head") else list(x[:n])


def _concat(a: Any, b: Any) -> Any:
    """Per-item evidence of consecutive slices as one (lists, or dataclasses of per-item tuples such as the
    constraint's `Evidence`)."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return dataclasses.replace(a, **{f.name: tuple(getattr(a, f.name)) + tuple(getattr(b, f.name))
                                         for f in dataclasses.fields(a)})
    return [*a, *b]


# ------------------------------------------------------------------------------------- running the stages
class StageStore(Protocol):
    """Where a staged confirmation keeps the pick's test outcomes as it decodes them, so that a killed export
    resumes at the stage it reached. Keyed by its owner on (pick configuration, model, split, design): outcomes
    from another design would let a resumed export look more often than it declared."""

    def load(self) -> Any:
        """What the pick said on the split's first items, as far as decoded (empty or None at first)."""
        ...

    def save(self, outcomes: Any) -> None:
        """Record what the pick said on the split's first items (as `pick` returns it, concatenated)."""
        ...


@dataclass
class MemoryStore:
    """A StageStore in memory (tests, the calibration replay)."""

    outcomes: Any = None

    def load(self) -> Any:
        return self.outcomes

    def save(self, outcomes: Any) -> None:
        self.outcomes = outcomes


@dataclass(frozen=True)
class StagedConfirmation:
    """The outcome of a staged confirmation: every look taken (the last one decided), what was decoded."""

    design: Design
    total: int
    decisions: tuple[Decision, ...]
    decoded: int  # pick items decoded by this call (a resumed one decodes only what the store lacked)
    resumed: int  # pick items found in the store

    @property
    def final(self) -> Decision:
        return self.decisions[-1]

    @property
    def confirmed(self) -> bool:
        return self.final.action == CONFIRMED

    @property
    def items(self) -> int:
        """Test items the verdict rests on (the pick and the baseline were decoded on these)."""
        return self.final.n

    def confirmation(self, constraint: Constraint) -> Any:
        """The verdict as `tuner.verdict.selection.Confirmation` (what export's refusal and the profile's
        `non_inferiority` block read): the last look's bound, at that look's confidence."""
        from .selection import Confirmation

        final = self.final
        bound, confidence = final.bound, final.confidence
        if isinstance(bound, _NoBound) and final.futility_bound is not None:  # an early look that spent no error
            bound, confidence = final.futility_bound, self.design.confidence
        return Confirmation(self.confirmed, bound, dataclasses.replace(constraint, confidence=confidence))

    def to_dict(self) -> dict[str, Any]:
        """What the profile records: the design, the looks taken, the stages used and the items decoded."""
        return {"design": self.design.to_dict(self.total), "split_items": self.total,
                "stages_used": len(self.decisions), "stages_planned": len(self.design.stages(self.total)),
                "items_decoded": self.items, "share_of_split": self.items / self.total,
                "decoded_this_run": self.decoded, "resumed_from_store": self.resumed,
                "looks": [d.to_dict() for d in self.decisions], "confirmed": self.confirmed,
                "stopped": self.final.action if len(self.decisions) < len(self.design.stages(self.total))
                else "last look"}


def confirm_in_stages(design: Design, total: int, constraint: Constraint, *,
                      pick: Callable[[int, int], Any], baseline: Callable[[int], Any],
                      store: StageStore | None = None,
                      on_look: Callable[[Decision], None] | None = None) -> StagedConfirmation:
    """Decode the test split stage by stage and stop at the first look that decides (`Design.decide`).

    `pick(start, stop)` decodes the pick on the split's items [start, stop) and returns their outcomes (a list,
    or the constraint's per-item evidence); `baseline(n)` returns the baseline's on the first n items (decoding
    what its own cache lacks);
    `store` keeps the pick's outcomes after every stage, so a call after a kill decodes only the stages it had not
    reached, and takes the same decisions on the stored ones (the looks are a function of the outcomes)."""
    store = store or MemoryStore()
    stored = store.load()
    done = _head(stored, min(total, _length(stored))) if stored is not None and _length(stored) else None
    resumed, decoded = (_length(done) if done is not None else 0), 0
    decisions: list[Decision] = []
    for look, n in enumerate(design.stages(total)):
        have = _length(done) if done is not None else 0
        if have < n:
            new = pick(have, n)
            if _length(new) != n - have:
                raise DesignError(f"the pick's decode returned {_length(new)} outcomes for {n - have} items")
            done = new if done is None else _concat(done, new)
            decoded += n - have
            store.save(done)
        decision = design.decide(look, done, baseline(n), constraint, total)
        decisions.append(decision)
        if on_look is not None:
            on_look(decision)
        if decision.action != CONTINUE:
            break
    return StagedConfirmation(design, total, tuple(decisions), decoded, resumed)
