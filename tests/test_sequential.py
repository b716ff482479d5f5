"""Confirmation in stages (tuner.verdict.sequential): the group-sequential boundaries keep the one-sided error of
"confirmed" at 1 − confidence for correlated looks, one look is today's fixed test, and a killed confirmation
resumes at the stage it reached."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.stats import multivariate_normal, norm

from tuner.verdict.constraint import Constraint
from tuner.verdict.selection import confirm
from tuner.verdict.sequential import (
    CONFIRMED,
    DEFAULT_LOOKS,
    REFUSED,
    Design,
    DesignError,
    MemoryStore,
    boundaries,
    confirm_in_stages,
    spent,
    stopping_probabilities,
)
from tuner.verdict.stats import tango_score

QUARTERS = (0.25, 0.5, 0.75, 1.0)


def test_obrien_fleming_boundaries_match_the_published_values():
    # gsDesign (Anderson), k = 4 equally spaced looks, one-sided alpha 0.025, sfLDOF: 4.3326 2.9631 2.3590 2.0141
    assert boundaries(QUARTERS, 0.025, "obrien-fleming") == pytest.approx((4.3326, 2.9631, 2.3590, 2.0141), abs=2e-4)


@pytest.mark.parametrize("spending", ["obrien-fleming", "pocock", "hsd:-2", "hsd:0"])
@pytest.mark.parametrize("looks", [QUARTERS, (0.1, 0.3, 1.0), (0.5, 1.0)])
def test_the_boundaries_spend_exactly_alpha_over_correlated_looks(spending, looks):
    """An independent computation (Genz's multivariate normal CDF): under the canonical process
    (corr(Z_j, Z_k) = sqrt(t_j / t_k)) the probability of never crossing is 1 − alpha, and of never crossing at
    the first k looks 1 − alpha(t_k)."""
    alpha = 0.05
    c = np.array(boundaries(looks, alpha, spending))
    t = np.array(looks)
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    for k in range(1, len(t) + 1):
        stay = multivariate_normal(mean=np.zeros(k), cov=cov[:k, :k]).cdf(c[:k], rng=np.random.default_rng(0))
        assert 1 - stay == pytest.approx(spent(t[k - 1], alpha, spending), abs=2e-4)
    # The same recursion with no drift stops at each look with the error that look spends.
    steps = np.diff([0.0, *(spent(x, alpha, spending) for x in looks)])
    assert stopping_probabilities(looks, tuple(c), 0.0) == pytest.approx(steps, abs=1e-6)


def test_boundaries_are_monotone_and_never_looser_than_the_fixed_test():
    ob = Design(QUARTERS, "obrien-fleming").look_confidences()
    assert all(a > b for a, b in zip(ob, ob[1:], strict=False))  # O'Brien-Fleming: strict early, the last look near 95%
    assert ob[0] > 0.9999 and 0.95 < ob[-1] < 0.96
    po = Design(QUARTERS, "pocock").look_confidences()
    assert all(a >= b for a, b in zip(po, po[1:], strict=False)) and max(po) - min(po) < 0.005  # Pocock: about flat
    assert min(po) > ob[-1]  # spending early makes the last look stricter
    for conf in (*ob, *po):
        assert conf > 0.95  # every look is stricter than the fixed test
    spending = [spent(t, 0.05, s) for s in ("obrien-fleming", "pocock") for t in QUARTERS]
    assert spending[3] == spending[7] == 0.05


def test_expected_items_match_a_simulation_of_the_procedure():
    """The cost a design promises (`expected_items`, normal approximation, futility left out) against the
    procedure run on 400 simulated splits of a pick 3 points under the margin."""
    constraint, total, rng = Constraint(max_drop=5.0), 1000, np.random.default_rng(4)
    for design in (Design(QUARTERS), Design(QUARTERS, "pocock")):
        used = []
        for _ in range(400):
            cand, base = outcomes(total, 0.03, 0.06, rng)
            used.append(confirm_in_stages(design, total, constraint, pick=lambda s, e, cand=cand: cand[s:e],
                                          baseline=lambda n, base=base: base[:n]).items)
        promised = design.expected_items(total, 0.03, 0.06, 0.05)
        assert abs(np.mean(used) - promised) < 3 * np.std(used) / math.sqrt(len(used)) + 5, (np.mean(used), promised)
        assert promised < 0.85 * total


def test_one_look_is_todays_fixed_test():
    rng = random.Random(3)
    assert Design().looks == DEFAULT_LOOKS and len(DEFAULT_LOOKS) == 10
    fixed = Design(looks=(1.0,))
    assert fixed.look_confidences(700) == (0.95,)
    for max_drop in (1.0, 3.0, 5.0):
        constraint = Constraint(max_drop=max_drop)
        for _ in range(20):
            n = rng.randint(50, 700)
            cand = [rng.random() < 0.85 for _ in range(n)]
            base = [x if rng.random() > 0.08 else not x for x in cand]
            decision = fixed.decide(0, cand, base, constraint, n)
            today = confirm(cand, base, constraint)
            assert (decision.action == CONFIRMED) is today.confirmed
            assert decision.bound == today.paired


def outcomes(n: int, drop: float, discordance: float, rng: np.random.Generator) -> tuple[list[bool], list[bool]]:
    """Paired outcomes with a true drop and discordant share: P(baseline only) − P(candidate only) = drop."""
    u = rng.random(n)
    base_only, cand_only = (discordance + drop) / 2, (discordance - drop) / 2
    agree = rng.random(n) < 0.9
    base = np.where(u < base_only, True, np.where(u < base_only + cand_only, False, agree))
    cand = np.where(u < base_only, False, np.where(u < base_only + cand_only, True, agree))
    return cand.tolist(), base.tolist()


def tango_z(b: np.ndarray, c: np.ndarray, n: int, d: float) -> np.ndarray:
    """`tango_score`, vectorised over replicates."""
    a_, b_, c_ = 2.0 * n, -b - c + (2.0 * n - b + c) * d, -c * d * (1.0 - d)
    p = (np.sqrt(np.maximum(b_ * b_ - 4.0 * a_ * c_, 0.0)) - b_) / (2.0 * a_)
    return (b - c - n * d) / np.sqrt(n * (2.0 * p + d * (1.0 - d)))


@pytest.mark.slow
@pytest.mark.parametrize("looks", [QUARTERS, DEFAULT_LOOKS])
@pytest.mark.parametrize("spending", ["obrien-fleming", "pocock"])
@pytest.mark.parametrize(("total", "margin", "discordance"), [(1500, 0.05, 0.06), (1500, 0.05, 0.12),
                                                              (1500, 0.01, 0.04), (400, 0.05, 0.08)])
def test_a_drop_exactly_at_the_margin_is_confirmed_at_most_alpha_of_the_time(looks, spending, total, margin,
                                                                            discordance):
    """200,000 paired splits whose true drop is the margin (the least favourable null): the share confirmed at
    any look stays within alpha + 3 Monte-Carlo standard errors; the fixed test's share is beside it."""
    design, reps, alpha = Design(looks, spending), 200_000, 0.05
    rng = np.random.default_rng(11)
    p = [(discordance + margin) / 2, (discordance - margin) / 2]
    crit = [norm.ppf(conf) for conf in design.look_confidences(total)]
    b, c = np.zeros(reps), np.zeros(reps)
    confirmed, previous = np.zeros(reps, bool), 0
    for n, z in zip(design.stages(total), crit, strict=True):
        draws = rng.multinomial(n - previous, [*p, 1 - sum(p)], size=reps)
        b, c, previous = b + draws[:, 0], c + draws[:, 1], n
        confirmed |= tango_z(b, c, n, margin) <= -z  # the look's upper bound within the margin
    fixed = (tango_z(b, c, total, margin) <= -norm.ppf(0.95)).mean()
    share = confirmed.mean()
    se = math.sqrt(alpha * (1 - alpha) / reps)
    assert share <= alpha + 3 * se, (share, fixed)
    assert share > alpha / 2  # and not thrown away: the design spends its error


@pytest.mark.slow
def test_the_procedure_confirms_exactly_when_the_score_crosses_and_keeps_its_error():
    """The whole procedure (`confirm_in_stages` → `Design.decide` → `Constraint.verdict` at the look's
    confidence) on 1,500 simulated splits at the margin: each verdict is the score statistic's crossing (so the
    200,000-split check above is a check of this code), and the confirmed share stays within alpha."""
    constraint, design, total = Constraint(max_drop=5.0), Design(QUARTERS), 600
    crit = [norm.ppf(conf) for conf in design.look_confidences(total)]
    rng = np.random.default_rng(5)
    confirmed = 0
    for _ in range(1500):
        cand, base = outcomes(total, 0.05, 0.06, rng)
        result = confirm_in_stages(design, total, constraint, pick=lambda s, e, cand=cand: cand[s:e],
                                   baseline=lambda n, base=base: base[:n])
        for d in result.decisions:
            b = sum(y and not x for x, y in zip(cand[: d.n], base[: d.n], strict=True))
            c = sum(x and not y for x, y in zip(cand[: d.n], base[: d.n], strict=True))
            assert (d.action == CONFIRMED) is bool(tango_score(b, c, d.n, 0.05) <= -crit[d.look] + 1e-9)
        confirmed += result.confirmed
    assert confirmed / 1500 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 1500)


def test_clear_verdicts_stop_early_either_way():
    constraint, design, total = Constraint(max_drop=5.0), Design(QUARTERS), 1500
    rng = np.random.default_rng(2)
    same = [True] * 1300 + [False] * 200  # the baseline against itself: b = c = 0
    first = confirm_in_stages(design, total, constraint, pick=lambda s, e: same[s:e], baseline=lambda n: same[:n])
    assert first.confirmed and first.items == 375 and len(first.decisions) == 1
    cand, base = outcomes(total, 0.15, 0.17, rng)  # loses 15 points: futility at the first look
    bad = confirm_in_stages(design, total, constraint, pick=lambda s, e: cand[s:e], baseline=lambda n: base[:n])
    assert bad.final.action == REFUSED and bad.items < total and "futility" in bad.final.reason
    assert bad.final.futility_bound.lower > constraint.margin
    no_futility = Design(QUARTERS, futility=False)
    slow = confirm_in_stages(no_futility, total, constraint, pick=lambda s, e: cand[s:e],
                             baseline=lambda n: base[:n])
    assert slow.final.action == REFUSED and slow.items == total
    assert first.confirmation(constraint).confirmed and first.confirmation(constraint).rule()["n"] == 375
    assert first.confirmation(constraint).rule()["confidence"] == first.final.confidence > 0.9999
    assert Design(QUARTERS).key(1500) == Design(QUARTERS).key(1500) != Design(QUARTERS, "pocock").key(1500)
    record = bad.to_dict()
    assert record["stages_used"] == len(bad.decisions) and record["items_decoded"] == bad.items
    assert record["design"]["items"] == [375, 750, 1125, 1500]


def test_a_killed_confirmation_resumes_its_stages():
    """Killed while decoding the third stage: a second run decodes only what the store lacks and takes the same
    decisions as an uninterrupted run."""
    constraint, design, total = Constraint(max_drop=5.0), Design(QUARTERS), 1200
    cand, base = outcomes(total, 0.04, 0.07, np.random.default_rng(0))  # near the margin: goes to the last look
    whole = confirm_in_stages(design, total, constraint, pick=lambda s, e: cand[s:e], baseline=lambda n: base[:n])
    assert len(whole.decisions) == 4
    store, asked = MemoryStore(), []

    def dies_at_the_third_stage(start: int, stop: int) -> list[bool]:
        asked.append((start, stop))
        if start >= 600:
            raise KeyboardInterrupt
        return cand[start:stop]

    with pytest.raises(KeyboardInterrupt):
        confirm_in_stages(design, total, constraint, pick=dies_at_the_third_stage, baseline=lambda n: base[:n],
                          store=store)
    assert asked == [(0, 300), (300, 600), (600, 900)] and len(store.load()) == 600
    asked.clear()
    again = confirm_in_stages(design, total, constraint,
                              pick=lambda s, e: asked.append((s, e)) or cand[s:e], baseline=lambda n: base[:n],
                              store=store)
    assert asked[0] == (600, 900) and again.resumed == 600 and again.decoded == whole.items - 600
    assert [d.to_dict() for d in again.decisions] == [d.to_dict() for d in whole.decisions]


def test_bad_designs_are_refused():
    for looks in ((), (0.5,), (0.5, 0.5, 1.0), (0.0, 1.0), (0.7, 0.3, 1.0)):
        with pytest.raises(DesignError):
            Design(looks)
    for spending in ("haybittle", "hsd:", "hsd:x", "hsd:99"):
        with pytest.raises(DesignError):
            Design(spending=spending)
    with pytest.raises(DesignError, match="not the constraint's"):
        Design(confidence=0.9).decide(0, [True], [True], Constraint(), 1)
    assert Design(QUARTERS).stages(3) == (1, 2, 3)  # looks that round together merge


@dataclass(frozen=True)
class Evidence:
    """Per-item evidence as the agreement constraint reads it (outcomes and answer keys, in split order)."""

    outcomes: tuple[bool, ...] = ()
    answers: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return max(len(self.outcomes), len(self.answers))

    def head(self, n: int) -> Evidence:
        return Evidence(self.outcomes[:n], self.answers[:n])


@dataclass(frozen=True)
class ReadsEvidence(Constraint):
    def compare(self, candidate, baseline):
        assert isinstance(candidate, Evidence) and candidate.n == baseline.n
        return super().compare(list(candidate.outcomes), list(baseline.outcomes))


def test_stages_carry_per_item_evidence_and_resume_it():
    constraint, design, total = ReadsEvidence(max_drop=5.0), Design(QUARTERS), 800
    cand, base = outcomes(total, 0.045, 0.07, np.random.default_rng(0))
    ev = lambda xs, s, e: Evidence(tuple(xs[s:e]), tuple(str(x) for x in xs[s:e]))  # noqa: E731
    plain = confirm_in_stages(design, total, Constraint(max_drop=5.0), pick=lambda s, e: cand[s:e],
                              baseline=lambda n: base[:n])
    store = MemoryStore()
    with pytest.raises(KeyboardInterrupt):
        confirm_in_stages(design, total, constraint, baseline=lambda n: ev(base, 0, n), store=store,
                          pick=lambda s, e: ev(cand, s, e) if s < 400 else (_ for _ in ()).throw(KeyboardInterrupt))
    assert isinstance(store.outcomes, Evidence) and store.outcomes.n == 400
    again = confirm_in_stages(design, total, constraint, pick=lambda s, e: ev(cand, s, e),
                              baseline=lambda n: ev(base, 0, n), store=store)
    assert again.resumed == 400 and [d.to_dict() for d in again.decisions] == [d.to_dict() for d in plain.decisions]


def test_expected_items_with_a_margin_of_the_whole_scale():
    """max_drop=100 (as the worker-fault tests set it: no accuracy bar) makes the margin 1.0 and Tango's score
    infinite; the plan printed before a study's first trial must still have a number (it divided by zero)."""
    design = Design()
    items = design.expected_items(16, 0.5, 1.0, 1.0)
    assert math.isfinite(items) and 0 < items <= 16
