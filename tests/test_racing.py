"""Racing over items with a scripted evaluator whose true accuracies are known: who earns items, who stops, and
that the baseline covers every item any trial used; then the pick rule and the power check."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import optuna
import pytest
from scipy.stats import norm

from decoder import Counters, DecodeConfig
from tuner.storage.record import StudyRecord
from tuner.storage.shared_ledger import study_ledger
from tuner.study.evaluate import EvalResult
from tuner.study.lifecycle import create_study
from tuner.study.objective import Objective
from tuner.study.points import trial_points
from tuner.study.space import config_key
from tuner.study.spec import Constraint, Race, load_spec
from tuner.tasks import Item
from tuner.verdict import racing
from tuner.verdict.pareto import TrialPoint, pick_knee
from tuner.verdict.racing import PowerError, power_check, rungs
from tuner.verdict.selection import PickError, confirm, pick
from tuner.verdict.stats import items_to_resolve

POOL = 1600
BASE_ACC = 0.95


class ScriptedEvaluator:
    """Per-item outcomes from a latent difficulty u_i: the baseline solves u_i < 0.95; a configuration with true
    drop d loses the items in [0.95 - d - extra, 0.95 - extra) and wins back `extra` items the baseline misses,
    so b - c = d·n in expectation with discordance d + 2·extra. Speed is a fixed tokens/s per configuration."""

    def __init__(self, truths: dict[str, tuple[float, float, float]]) -> None:
        rng = random.Random(0)
        self.u = [rng.random() for _ in range(POOL)]
        self.truths = truths  # config key -> (drop, extra, tokens_per_s)
        self.calls: list[tuple[str, int]] = []

    def correct(self, key: str, i: int) -> bool:
        drop, extra, _ = self.truths[key]
        u = self.u[i]
        if u < BASE_ACC:
            return not (BASE_ACC - drop - extra <= u < BASE_ACC - extra)
        return u < BASE_ACC + extra

    def evaluate(self, items, config, *, chunk_size=None, warmup=True, on_progress=None) -> EvalResult:
        key = config_key(config)
        idx = [int(it.id) for it in items]
        self.calls.append((key, len(idx)))
        outcomes = [self.correct(key, i) for i in idx]
        tps = self.truths[key][2]
        counters = Counters(nfe=len(idx), row_forwards=len(idx), wall_time_s=len(idx) * 40 / tps)
        if on_progress:
            on_progress(len(idx), len(idx), sum(outcomes))
        return EvalResult(n=len(idx), correct=sum(outcomes), total_items=len(idx), counted_tokens=40 * len(idx),
                          counters=counters, scoring_time_s=0.0, outcomes=outcomes, item_ids=[it.id for it in items])


def streaming(spec, **knobs) -> DecodeConfig:
    return spec.config_for({"mode": "streaming", "alpha": 0.0, "early_exit": True, **knobs})


@pytest.fixture
def race_study(tmp_path):
    spec = load_spec("arith", ["constraint.max_drop=5", "race.min_items=100", "race.growth=2", "trials=20",
                               "sampler=random", "search_space.window.choices=[16, 32, 64, null]"])
    vanilla = spec.reference_config(spec.reference("vanilla"))
    configs = {
        "lossless": streaming(spec, window=64, threshold=0.99),  # drop 0.5: resolves early
        "hopeless": streaming(spec, window=16, threshold=0.5),  # drop 20: stops at the first rung
        "borderline": streaming(spec, window=32, threshold=0.9),  # drop 5.0 = the margin: never resolves
        "slow": streaming(spec, window=None, threshold=0.99),  # drop 3.5, slower and less accurate than "lossless"
        "fast-good": streaming(spec, window=16, threshold=0.97),  # drop 1.0, fastest feasible
        "also-fine": streaming(spec, window=64, threshold=0.97),  # drop 0.5 like "lossless", but slower
    }
    truths = {config_key(vanilla): (0.0, 0.0, 40.0),
              config_key(spec.reference_config(spec.reference("fast-dllm"))): (0.03, 0.01, 400.0),
              config_key(spec.reference_config(spec.reference("paper"))): (0.04, 0.01, 1500.0)}
    speed = {"lossless": 1000.0, "hopeless": 3000.0, "borderline": 2000.0, "slow": 300.0, "fast-good": 2500.0,
             "also-fine": 500.0}
    drops = {"lossless": (0.005, 0.01), "hopeless": (0.20, 0.01), "borderline": (0.05, 0.015), "slow": (0.035, 0.01),
             "fast-good": (0.01, 0.01), "also-fine": (0.005, 0.01)}
    for name, cfg in configs.items():
        truths[config_key(cfg)] = (*drops[name], speed[name])
    evaluator = ScriptedEvaluator(truths)
    items = [Item(str(i), {}) for i in range(POOL)]
    study, _ = create_study(spec, optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/race.db"), "race", 0)
    return spec, study, evaluator, items, configs


def run_trial(study, objective, spec, config) -> optuna.trial.FrozenTrial:
    params = {k.name: getattr(config, k.name) for k in spec.search_space}
    study.enqueue_trial(params)
    study.optimize(objective, n_trials=1)
    return study.trials[-1]


def test_racing_gives_items_to_trials_that_need_them_and_stops_the_rest(race_study):
    spec, study, evaluator, items, configs = race_study
    objective = Objective(spec, evaluator, items)
    assert objective.rungs == [100, 200, 400, 800, 1600]
    study.optimize(objective, n_trials=3)  # the references: vanilla (the baseline), fast-dllm, paper
    results = {name: run_trial(study, objective, spec, cfg) for name, cfg in configs.items()}
    verdicts = {name: t.user_attrs["metrics"]["race_verdict"] for name, t in results.items()}
    used = {name: t.user_attrs["metrics"]["n"] for name, t in results.items()}
    assert verdicts["hopeless"] == racing.INFEASIBLE and used["hopeless"] == 100
    assert results["hopeless"].state == optuna.trial.TrialState.PRUNED
    # Resolved on an early rung, "lossless" was on the front of resolved trials (it could be the pick), so it
    # earned the whole pool; "also-fine", resolved as early but slower than an equally good rival, stopped there.
    assert verdicts["lossless"] == racing.FEASIBLE and used["lossless"] == POOL
    assert results["lossless"].user_attrs["race"][0]["upper"] <= 0.05  # resolved at the first rung already
    assert verdicts["also-fine"] == racing.FEASIBLE and used["also-fine"] < POOL
    assert verdicts["borderline"] == racing.UNRESOLVED and used["borderline"] == POOL
    assert results["borderline"].constraints["accuracy"] > 0  # not feasible for the sampler either
    # "slow" (drop 3.5, 300 tokens/s) is dominated by the resolved-feasible "lossless" (drop 0.5, 1000 tokens/s)
    # as soon as its own lower bound is above lossless's estimated drop; "fast-good" is faster than every rival.
    assert verdicts["slow"] == racing.DOMINATED and used["slow"] < POOL
    assert verdicts["fast-good"] == racing.FEASIBLE
    # Every comparison was paired: the ledger covers every item any trial used, each decoded once.
    ledger = study_ledger(study)
    assert ledger.n == max(t.user_attrs["metrics"]["n"] for t in study.trials if "metrics" in t.user_attrs)
    vanilla_key = config_key(spec.reference_config(spec.reference("vanilla")))
    assert sum(n for key, n in evaluator.calls if key == vanilla_key) == ledger.n
    # The verdict stored with each trial is what trial_points re-derives from the outcomes and the ledger.
    points = {p.number: p for p in trial_points(study, spec.constraint)}
    for t in results.values():
        assert points[t.number].feasible == (t.user_attrs["metrics"]["race_verdict"] == racing.FEASIBLE)


def test_a_dominated_trial_stops_before_the_pool_runs_out(race_study):
    spec, study, evaluator, items, configs = race_study
    objective = Objective(spec, evaluator, items)
    study.optimize(objective, n_trials=3)  # the references
    lossless = run_trial(study, objective, spec, configs["lossless"])
    slow = run_trial(study, objective, spec, configs["slow"])
    assert slow.user_attrs["race"][-1]["verdict"] == racing.DOMINATED
    assert slow.user_attrs["race"][-1]["dominated_by"] == lossless.number
    stopped_at = slow.user_attrs["pruned_after"]
    assert slow.state == optuna.trial.TrialState.PRUNED and stopped_at < POOL
    # Without the fast rival the same trial earns more items than that.
    study2 = optuna.create_study(directions=["maximize", "maximize"])
    StudyRecord(study2).set_own_ledger(study_ledger(study))  # the same baseline evidence, in a study of its own
    alone = run_trial(study2, objective, spec, configs["slow"])
    assert alone.user_attrs["metrics"]["n"] > stopped_at


def test_the_pick_uses_the_upper_bound_not_the_point_estimate():
    margin = Constraint(max_drop=5.0)
    lucky = TrialPoint(1, 0.96, 3000.0, feasible=False, n=100, drop=-0.01, drop_upper=0.06)  # best point estimate
    safe = TrialPoint(2, 0.93, 2000.0, feasible=True, n=800, drop=0.02, drop_upper=0.035)
    slow = TrialPoint(3, 0.945, 500.0, feasible=True, n=800, drop=0.005, drop_upper=0.02)
    base = TrialPoint(0, 0.95, 40.0, feasible=True, label="vanilla", n=800, drop=0.0, drop_upper=0.0)
    points = [base, lucky, safe, slow]
    assert pick(points, "fastest", margin).number == 2
    assert pick(points, "knee", margin).number in (2, 3)
    with pytest.raises(PickError, match="no trial is resolved"):
        pick([replace(p, drop_upper=0.2) for p in points[1:]], "fastest", margin)


def test_the_baseline_is_never_the_pick():
    """The knee of a front whose other points lose most of the margin would be vanilla itself; the pick is made
    among the rest, and a study where only the baseline is feasible has nothing to export (before any test
    decoding)."""
    margin = Constraint(max_drop=2.0)
    base = TrialPoint(0, 0.95, 40.0, feasible=True, label="vanilla", n=800, drop=0.0, drop_upper=0.0)
    # its accuracy over its own items a full margin and a half below, its paired drop within the margin
    close = TrialPoint(1, 0.92, 60.0, feasible=True, n=800, drop=0.012, drop_upper=0.0199)
    assert pick_knee([base, close], accuracy_scale=margin.margin).number == 0  # the geometry alone: vanilla
    assert pick([base, close], "knee", margin).number == 1
    assert pick([base, close], "fastest", margin).number == 1
    with pytest.raises(PickError, match="only the baseline .vanilla, trial 0. is resolved"):
        pick([base, replace(close, drop_upper=0.03)], "knee", margin)


def test_the_confirmation_rule_is_a_one_sided_bound_on_the_paired_test_drop():
    base = [True] * 950 + [False] * 50
    close = base.copy()
    for i in range(0, 30):  # loses 3 points, gains none: drop 3, upper bound ~4.1 < 5
        close[i] = False
    far = base.copy()
    for i in range(0, 46):  # loses 4.6 points: upper bound above 5
        far[i] = False
    ok, refused = confirm(close, base, Constraint(max_drop=5.0)), confirm(far, base, Constraint(max_drop=5.0))
    assert ok.confirmed and not refused.confirmed
    rule = ok.rule()
    assert rule["confidence"] == 0.95 and rule["margin_points"] == 5.0 and rule["n"] == 1000
    assert rule["drop_points"] == pytest.approx(3.0) and 3.0 < rule["upper_bound_points"] < 5.0


def test_power_check_names_the_items_a_margin_needs():
    constraint = Constraint(max_drop=1.0, discordance=0.06)
    with pytest.raises(PowerError) as err:
        power_check(constraint, 500, 1319)
    message = str(err.value)
    need = items_to_resolve(0.01, 0.06, true_drop=0.005, confidence=0.95, power=0.8)
    resolvable = 2 * (norm.ppf(0.95) + norm.ppf(0.8)) * math.sqrt(0.06 / 500) * 100
    assert f"1-point margin needs about {need} paired items" in message
    assert "the validation pool has 500 and the test split has 1319" in message
    assert f"or allow about {resolvable:.1f} points" in message
    power_check(Constraint(max_drop=5.0, discordance=0.06), 1600, 1500)  # resolvable: no error


def test_rungs_grow_geometrically_to_the_whole_pool():
    assert rungs(1600, Race(min_items=100, growth=2)) == [100, 200, 400, 800, 1600]
    assert rungs(500, Race(min_items=200, growth=2)) == [200, 400, 500]
    assert rungs(24, Race(min_items=100)) == [24]


def test_confirmation_probability_is_a_power_calculation_for_the_one_test():
    from tuner.verdict.selection import confirmation_probability

    margin = Constraint(max_drop=5.0)
    z = norm.ppf(0.95)
    n, q = 1200, 0.06
    hair = TrialPoint(1, 0.9, 1.0, n=n, drop=0.05 - z * math.sqrt(q / n), drop_upper=0.05, discordance=q)
    safe = replace(hair, drop=0.02, drop_upper=0.02 + z * math.sqrt(q / n))
    by_a_hair = confirmation_probability(hair, margin, test_items=n)
    assert by_a_hair == pytest.approx(0.5)  # resolved by a hair on validation: a test of the same size, a coin flip
    assert confirmation_probability(safe, margin, test_items=n) > 0.95
    assert confirmation_probability(hair, margin, test_items=4 * n) > by_a_hair
    # Monte Carlo check of the formula: draw the true drop from the validation evidence, then the test estimate.
    rng = np.random.default_rng(0)
    d = rng.normal(hair.drop, math.sqrt(q / n), 200_000)
    test = rng.normal(d, math.sqrt(q / n))
    assert np.mean(test + z * math.sqrt(q / n) <= 0.05) == pytest.approx(by_a_hair, abs=0.01)
