"""Racing over items: how many validation items a trial earns, and the verdict its paired bound gives.

Why racing: a margin of a few points sits inside the noise of a few hundred items, and a study's validation pool
can be much larger than what most trials need (arith draws any number of problems; GSM8K has 7,468 train
problems outside the few-shot exemplars; MATH 4,500). So every trial starts small and earns more items only while
it is still plausibly feasible and could still matter:

* rungs: `min_items`, then `growth` times more, ..., up to the whole pool (successive halving's geometric
  schedule, Jamieson & Talwalkar 2016, applied to one trial at a time);
* after each rung the trial's paired drop against the baseline on the same items (tuner.verdict.stats, Tango's bound at
  the constraint's confidence) gives a verdict:
  - `infeasible`: the lower bound of the drop is above the margin — stop (pruned);
  - `feasible`: the upper bound is within the margin — resolved; a trial on the current front of resolved ones
    (no resolved rival is as fast with a drop no worse: it could be the pick) goes on to the whole pool first, so
    the pick's bound rests on every validation item (in a study of 30 trials a few resolve on the first rung by
    luck, and the pick would be the luckiest of them — the winner's curse); others stop;
  - `dominated`: a resolved-feasible rival is faster by more than the speed tolerance and its estimated drop is
    no worse than this trial's optimistic (lower) bound, so this trial can be neither the fastest pick nor a
    more accurate knee — stop (pruned);
  - `unresolved`: the pool is used up with the margin inside the interval — not feasible for the front or the
    pick (complete, infeasible for the sampler);
  - else `continue` to the next rung.

Written here rather than taken from Optuna: Optuna's pruners are single-objective (`report`/`should_prune` raise
in multi-objective studies), and its WilcoxonPruner compares with the best trial, not with a baseline and a
margin. The idea (a paired test over per-instance scores, F-Race, Birattari et al. 2002) carries over; the class
does not.

The baseline covers every item any trial used (tuner.study.baseline), so every comparison stays paired.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..base.errors import TunerError
from .constraint import Constraint, Verdict

if TYPE_CHECKING:  # pragma: no cover - stats imports scipy; the spec reads Race without it
    from .stats import Disagreement, PairedDrop

    Bound = PairedDrop | Disagreement

CONTINUE, FEASIBLE, INFEASIBLE, DOMINATED, UNRESOLVED = "continue", "feasible", "infeasible", "dominated", "unresolved"
STOPPED = (INFEASIBLE, DOMINATED)  # verdicts that end a trial as pruned


@dataclass(frozen=True)
class Race:
    """How validation items are shared out among trials (tuner.verdict.racing): every trial starts with `min_items`;
    one still plausibly feasible and not dominated gets `growth` times more, up to the whole validation pool.
    `speed_tolerance`: a rival counts as faster only when its tokens/s are at least this much higher."""

    min_items: int = 100
    growth: float = 2.0
    speed_tolerance: float = 0.05


class PowerError(TunerError):
    """The spec's margin can't be resolved by its validation pool or its test split."""


def rungs(pool: int, race: Race) -> list[int]:
    """Item counts at which a trial is judged: min_items, ×growth, ..., ending at the whole pool."""
    out, n = [], min(race.min_items, pool)
    while n < pool:
        out.append(n)
        n = min(pool, max(n + 1, math.ceil(n * race.growth)))
    out.append(pool)
    return out


@dataclass(frozen=True)
class Rival:
    """A finished trial a running one is compared with for dominance: its speed and the estimate of the constrained
    quantity (drop or disagreement)."""

    number: int
    tokens_per_s: float
    drop: float


def dominated_by(tokens_per_s: float, paired: Bound, rivals: Iterable[Rival], tolerance: float) -> Rival | None:
    """A resolved-feasible rival that makes this trial pointless: faster by more than `tolerance` and with an
    estimate of the constrained quantity (drop or disagreement) no worse than this trial's lower bound."""
    best = None
    for r in rivals:
        if r.tokens_per_s >= tokens_per_s * (1 + tolerance) and r.drop <= paired.lower:
            if best is None or r.tokens_per_s > best.tokens_per_s:
                best = r
    return best


def on_front(tokens_per_s: float, paired: Bound, rivals: Iterable[Rival]) -> bool:
    """Could this trial be picked: no resolved-feasible rival is at least as fast with an estimated drop no worse."""
    return not any(r.tokens_per_s >= tokens_per_s and r.drop <= paired.estimate for r in rivals)


def judge(verdict: Verdict, *, last: bool, dominated: bool, front: bool) -> str:
    """The racing verdict after a rung, from the constraint's verdict on the trial's bound so far (see the module
    docstring)."""
    if verdict is Verdict.INFEASIBLE:
        return INFEASIBLE
    if verdict is Verdict.FEASIBLE:
        return FEASIBLE if last or not front else CONTINUE  # a candidate for the pick earns the whole pool first
    if dominated:
        return DOMINATED
    return UNRESOLVED if last else CONTINUE


def power_check(constraint: Constraint, validation_pool: int, test_items: int) -> None:
    """Refuse, at once, a margin the study can't resolve: a configuration truly at half the margin must be shown
    feasible with 80% probability on the validation pool, and confirmed as often on the test split
    (`Constraint.items_needed`, in the constraint's own terms)."""
    need = constraint.items_needed(power=0.8)
    short = [(name, have) for name, have in (("validation pool", validation_pool), ("test split", test_items))
             if have < need]
    if not short:
        return
    what = " and ".join(f"the {name} has {have}" for name, have in short)
    have = min(h for _, h in short)
    resolvable = _resolvable_points(constraint, have)
    if constraint.metric == "agreement":
        assumed = f"disagreement at half the margin, {constraint.confidence:.0%} one-sided bound, 80% power"
    else:
        assumed = (f"discordance {constraint.discordance:.0%}, {constraint.confidence:.0%} one-sided bound, 80% power "
                   "for a configuration that loses half the margin")
    raise PowerError(
        f"a {constraint.max_drop:g}-point margin needs about {need} paired items ({assumed}), but {what}; grow them "
        f"to {need} (validation_size / test_size or the task's pool), or allow about {resolvable:.1f} points "
        "(constraint.max_drop)")


def _resolvable_points(constraint: Constraint, items: int) -> float:
    """The smallest margin (points) `items` paired items resolve: n = q·(z/(m/2))² solved for m for the drop; by
    bisection on `Constraint.items_needed` for the disagreement rate."""
    if constraint.metric == "accuracy":
        from .stats import z_one_sided

        z = z_one_sided(constraint.confidence) + z_one_sided(0.8)
        return 2 * z * math.sqrt(constraint.discordance / max(items, 1)) * 100
    lo, hi = 0.0, 100.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if constraint.with_margin(mid).items_needed(power=0.8) <= max(items, 1):
            hi = mid
        else:
            lo = mid
    return hi
