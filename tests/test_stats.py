"""The paired bounds the tuner's verdicts rest on, checked against independent computations and by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq, minimize_scalar
from scipy.stats import norm

from tuner.verdict.stats import (
    items_to_resolve,
    paired_drop,
    paired_drop_counts,
    tango_bound,
    wilson_interval,
)


def independent_tango_bound(b: int, c: int, n: int, confidence: float, upper: bool) -> float:
    """The same bound computed another way: the constrained MLE by numerical maximisation of the multinomial
    likelihood (scipy.optimize), the score statistic from its definition, the bound by root finding."""

    def constrained_p21(delta: float) -> float:
        # maximise b·log(p21 + δ) + c·log(p21) + (n − b − c)·log(1 − 2·p21 − δ) over the feasible p21
        lo, hi = max(0.0, -delta) + 1e-12, (1 - delta) / 2 - 1e-12  # p21 >= 0, p12 >= 0, p11 + p22 >= 0

        def nll(p21: float) -> float:
            p12, rest = p21 + delta, 1 - 2 * p21 - delta
            terms = [(b, p12), (c, p21), (n - b - c, rest)]
            return -sum(k * math.log(max(p, 1e-300)) for k, p in terms if k)

        return float(minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12}).x)

    def score(delta: float) -> float:
        p21 = constrained_p21(delta)
        return (b - c - n * delta) / math.sqrt(n * (2 * p21 + delta * (1 - delta)))

    z = norm.ppf(confidence)
    return brentq(lambda d: score(d) - (-z if upper else z), -0.999, 0.999, xtol=1e-9)


@pytest.mark.parametrize("b, c, n", [(10, 2, 200), (30, 10, 1000), (5, 5, 50), (0, 5, 60), (3, 0, 40), (40, 25, 500)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_tango_bounds_match_an_independent_computation(b, c, n, confidence):
    for upper in (True, False):
        assert tango_bound(b, c, n, confidence, upper) == pytest.approx(
            independent_tango_bound(b, c, n, confidence, upper), abs=2e-4)


def test_no_discordant_item_still_bounds_the_drop():
    p = paired_drop_counts(0, 0, 100, 0.95)
    z2 = norm.ppf(0.95) ** 2
    assert p.drop == 0 and p.upper == pytest.approx(z2 / (100 + z2), rel=1e-6) and p.lower == pytest.approx(-p.upper)


def test_paired_is_much_narrower_than_two_independent_intervals():
    rng = np.random.default_rng(0)
    base = rng.random(500) < 0.95
    cand = base.copy()
    flip = rng.choice(500, 25, replace=False)  # 5% discordant items
    cand[flip] = ~cand[flip]
    paired = paired_drop(cand.tolist(), base.tolist(), 0.95)
    lo_c, hi_c = wilson_interval(int(cand.sum()), 500, z=norm.ppf(0.95))
    lo_b, hi_b = wilson_interval(int(base.sum()), 500, z=norm.ppf(0.95))
    unpaired_upper = hi_b - lo_c  # the drop's upper bound from separate intervals
    assert paired.upper - paired.drop < 0.6 * (unpaired_upper - paired.drop)


@pytest.mark.parametrize("p_base_only, p_cand_only, n", [(0.04, 0.01, 200), (0.03, 0.03, 500), (0.02, 0.005, 100),
                                                         (0.06, 0.02, 1000), (0.05, 0.01, 60)])
def test_one_sided_bounds_cover_the_true_drop_at_their_confidence(p_base_only, p_cand_only, n):
    """Simulated paired outcomes with known discordant probabilities: the 95% upper bound lies above the true drop
    in about 95% of 4000 repeats (a score interval is close to nominal, sometimes a little conservative)."""
    rng = np.random.default_rng(1)
    true = p_base_only - p_cand_only
    counts = rng.multinomial(n, [p_base_only, p_cand_only, 1 - p_base_only - p_cand_only], size=4000)
    upper = np.array([tango_bound(int(b), int(c), n, 0.95, True) for b, c, _ in counts])
    lower = np.array([tango_bound(int(b), int(c), n, 0.95, False) for b, c, _ in counts])
    assert 0.93 <= np.mean(upper >= true) <= 0.99
    assert 0.93 <= np.mean(lower <= true) <= 0.99


def test_items_to_resolve_is_the_textbook_sample_size():
    n = items_to_resolve(0.05, 0.06, true_drop=0.025, confidence=0.95, power=0.8)
    assert n == math.ceil(0.06 * ((norm.ppf(0.95) + norm.ppf(0.8)) / 0.025) ** 2)
    assert items_to_resolve(0.01, 0.06, true_drop=0.01) == math.inf


def test_the_upper_bound_stays_conservative_when_the_candidate_never_wins():
    """A degenerate cell (no item only the candidate solves): the safety side, the upper bound, still covers."""
    rng = np.random.default_rng(2)
    for n in (100, 300):
        counts = rng.multinomial(n, [0.02, 0.0, 0.98], size=4000)
        upper = np.array([tango_bound(int(b), int(c), n, 0.95, True) for b, c, _ in counts])
        assert np.mean(upper >= 0.02) >= 0.93
