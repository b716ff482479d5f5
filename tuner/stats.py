"""The statistics behind every accuracy the tuner reports or acts on.

Validation splits are small (a few hundred items), so a point estimate alone would let the tuner chase noise:
every accuracy carries a Wilson 95% interval, early stopping uses a one-sided bound, and the export compares the
pick with the baseline by an exact McNemar test on the same items.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import binomtest, norm

Z95 = 1.959963984540054  # two-sided 95%
Z95_ONE_SIDED = 1.6448536269514722


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; well-behaved at 0/n and n/n, unlike the normal one."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def cannot_reach(correct: int, seen: int, total: int, target: float, confidence: float = 0.95) -> bool:
    """True when, after `seen` of `total` items with `correct` right, the final accuracy over all `total` items
    reaches `target` with probability below 1 - confidence.

    The items still to come are modelled as draws at the one-sided upper confidence bound of the accuracy seen so
    far; the trial is hopeless if even that optimistic rate leaves the final accuracy short of the target. With no
    item left this is the plain comparison. Used to prune trials early without Optuna's (single-objective) pruners.
    """
    if seen == 0:
        return False
    remaining = total - seen
    if remaining <= 0:
        return correct / seen < target
    z = float(norm.ppf(confidence))
    _, upper = wilson_interval(correct, seen, z=z)
    best_final = (correct + upper * remaining) / total
    return best_final < target


def mcnemar_exact(pick: Sequence[bool], baseline: Sequence[bool]) -> dict[str, float | int]:
    """Exact (binomial) McNemar test on paired per-item outcomes: does the pick's accuracy differ from the
    baseline's on the same items? Only discordant pairs carry information."""
    if len(pick) != len(baseline):
        raise ValueError("paired outcomes must have the same length")
    only_pick = sum(1 for a, b in zip(pick, baseline, strict=True) if a and not b)
    only_base = sum(1 for a, b in zip(pick, baseline, strict=True) if b and not a)
    discordant = only_pick + only_base
    p_value = 1.0 if discordant == 0 else float(binomtest(only_pick, discordant, 0.5).pvalue)
    return {"only_pick_correct": only_pick, "only_baseline_correct": only_base, "p_value": p_value}
