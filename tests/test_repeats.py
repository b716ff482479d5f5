"""No budget spent on repeats (tuner.study.repeats): a proposal that repeats a configuration the study holds gets a
fresh one, and the repeats avoided are counted where `show` and the log read them."""

from __future__ import annotations

import collections
import logging
import random

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.samplers import BaseSampler

from decoder import Counters
from tuner.storage.record import config_key_of
from tuner.study.evaluate import EvalResult
from tuner.study.lifecycle import create_study
from tuner.study.objective import Objective
from tuner.study.repeats import REPEATS_KEY, AvoidsRepeats, repeats_avoided
from tuner.study.sampling import make_sampler
from tuner.study.spec import load_spec
from tuner.tasks import Item

POOL = 1200


class Smooth:
    """A replay evaluator over the arith space with known truths, smooth in the knobs: the drop against vanilla
    falls as the threshold rises and the window grows (the most accurate streaming point is the corner threshold
    0.99, window none, where the sampler is also shown vanilla), the speed rises the other way. Per-item
    outcomes from a latent difficulty, so drops are paired as in a real study; nothing is decoded."""

    def __init__(self) -> None:
        rng = random.Random(0)
        self.u = [rng.random() for _ in range(POOL)]

    @staticmethod
    def truth(config) -> tuple[float, float]:
        if config.mode == "vanilla":
            return 0.0, 30.0
        window = {16: 0.012, 32: 0.008, 64: 0.004, None: 0.0}[config.window]
        drop = 0.028 + 0.25 * (0.99 - config.threshold) ** 1.5 + window + 0.004 * config.alpha \
            + (0.0 if config.early_exit else 0.002)
        speed = 600 * {16: 2.0, 32: 1.7, 64: 1.4, None: 1.0}[config.window] * (1 + 3 * (0.99 - config.threshold)) \
            * (1 + 0.3 * config.alpha) * (1.3 if config.early_exit else 1.0)
        return min(drop, 0.5), speed

    def evaluate(self, items, config, *, chunk_size=None, warmup=True, on_progress=None) -> EvalResult:
        drop, tps = self.truth(config)
        idx = [int(it.id) for it in items]
        out = [(u < 0.965 and not 0.955 - drop <= u < 0.955) or 0.965 <= u < 0.975 for u in (self.u[i] for i in idx)]
        counters = Counters(nfe=len(idx), row_forwards=len(idx), wall_time_s=len(idx) * 40 / tps)
        return EvalResult(n=len(idx), correct=sum(out), total_items=len(idx), counted_tokens=40 * len(idx),
                          counters=counters, scoring_time_s=0.0, outcomes=out, item_ids=[it.id for it in items])


def gp_study(tmp_path, trials: int, avoid: bool) -> optuna.Study:
    spec = load_spec("arith", [f"trials={trials}"])
    study, _ = create_study(spec, optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/{avoid}.db"), "s", 0)
    if not avoid:
        study.sampler = make_sampler(spec.sampler, 0, spec.trials)  # the GP as it was
    study.optimize(Objective(spec, Smooth(), [Item(str(i), {}) for i in range(POOL)]), n_trials=trials)
    return study


@pytest.mark.slow
def test_a_gp_study_over_the_arith_space_runs_no_configuration_twice(tmp_path, caplog):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with caplog.at_level(logging.INFO, logger="tuner.study.repeats"):
        study = gp_study(tmp_path, 16, avoid=True)
    keys = [config_key_of(t) for t in study.trials]
    assert len(keys) == 16 and len(set(keys)) == 16
    avoided = repeats_avoided(study)
    assert avoided > 0 and avoided == sum(t.user_attrs.get(REPEATS_KEY, 0) for t in study.trials)
    assert sum("again; re-asked" in r.getMessage() or "random point" in r.getMessage()
               for r in caplog.records) == avoided
    # The same study without the wrapper spends trials on copies (what the test guards against).
    plain = [config_key_of(t) for t in gp_study(tmp_path, 16, avoid=False).trials]
    assert max(collections.Counter(plain).values()) > 1


DISTS = {"window": CategoricalDistribution([16, None]), "threshold": FloatDistribution(0.5, 0.99)}


class Insists(BaseSampler):
    """Proposes the same point every time, whatever the study holds."""

    def __init__(self) -> None:
        self.asked = 0

    def infer_relative_search_space(self, study, trial):
        return dict(DISTS)

    def sample_relative(self, study, trial, search_space):
        self.asked += 1
        return {"window": None, "threshold": 0.99}

    def sample_independent(self, study, trial, param_name, param_distribution):
        raise AssertionError("not asked")


def key_of(params) -> str:
    return f"{params['window']}-{round(params['threshold'], 9)}"


def run(study: optuna.Study, n: int) -> None:
    def objective(trial: optuna.Trial) -> float:
        params = {"window": trial.suggest_categorical("window", [16, None]),
                  "threshold": trial.suggest_float("threshold", 0.5, 0.99)}
        trial.set_user_attr("config_key", key_of(params))
        return params["threshold"]

    study.optimize(objective, n_trials=n)


def test_a_sampler_that_insists_gets_a_random_point_and_enqueued_trials_are_left_alone():
    inner = Insists()
    study = optuna.create_study(sampler=AvoidsRepeats(inner, DISTS, key_of, seed=1, tries=2))
    study.enqueue_trial({"window": None, "threshold": 0.99})  # a reference: its knobs are given
    study.enqueue_trial({"window": None, "threshold": 0.99})  # a queued repeat is the caller's choice
    run(study, 4)
    keys = [t.user_attrs["config_key"] for t in study.trials]
    assert keys[:2] == ["None-0.99", "None-0.99"] and len(set(keys[1:])) == 3
    assert [t.user_attrs.get(REPEATS_KEY, 0) for t in study.trials] == [0, 0, 3, 3]  # asked, re-asked twice
    assert inner.asked == 6  # trials 2 and 3 asked three times each; the enqueued ones never
    assert repeats_avoided(study) == 6


def test_a_covered_finite_space_lets_the_repeat_stand(caplog):
    dists = {"window": CategoricalDistribution([16, None])}
    study = optuna.create_study(sampler=AvoidsRepeats(optuna.samplers.RandomSampler(seed=0), dists,
                                                      lambda p: str(p["window"]), seed=0, random_draws=20))

    def objective(trial: optuna.Trial) -> float:
        window = trial.suggest_categorical("window", [16, None])
        trial.set_user_attr("config_key", str(window))
        return 0.0

    with caplog.at_level(logging.INFO, logger="tuner.study.repeats"):
        study.optimize(objective, n_trials=4)
    keys = [t.user_attrs["config_key"] for t in study.trials]
    assert sorted(keys[:2]) == ["16", "None"]  # both configurations first, then the repeats stand
    assert any("earlier result is reused" in r.getMessage() for r in caplog.records)


def test_a_retry_does_not_count_its_originals_repeats_again():
    study = optuna.create_study()
    for attrs, system in (({REPEATS_KEY: 2}, {}), ({REPEATS_KEY: 2}, {"failed_trial": 0}), ({REPEATS_KEY: 1}, {})):
        study.add_trial(optuna.trial.create_trial(value=0.0, user_attrs=attrs, system_attrs=system))
    assert repeats_avoided(study) == 3


def test_in_a_finite_space_the_untried_points_come_first_and_a_covered_space_is_not_re_asked():
    dists = {"window": CategoricalDistribution([16, None]), "alpha": FloatDistribution(0.0, 0.7, step=0.7)}

    class InsistsOnACorner(BaseSampler):
        asked = 0

        def infer_relative_search_space(self, study, trial):
            return dict(dists)

        def sample_relative(self, study, trial, search_space):
            InsistsOnACorner.asked += 1
            return {"window": None, "alpha": 0.0}

        def sample_independent(self, study, trial, param_name, param_distribution):
            raise AssertionError("not asked")

    key = lambda p: f"{p['window']}-{round(p['alpha'], 9)}"  # noqa: E731
    study = optuna.create_study(sampler=AvoidsRepeats(InsistsOnACorner(), dists, key, seed=0, tries=1))

    def objective(trial: optuna.Trial) -> float:
        p = {"window": trial.suggest_categorical("window", [16, None]),
             "alpha": trial.suggest_float("alpha", 0.0, 0.7, step=0.7)}
        trial.set_user_attr("config_key", key(p))
        return 0.0

    study.optimize(objective, n_trials=4)
    assert len({t.user_attrs["config_key"] for t in study.trials}) == 4  # the whole 2 x 2 space, no repeat
    assert InsistsOnACorner.asked == 1 + 3 * 2  # each later trial: asked, re-asked once, then an untried point
    study.optimize(objective, n_trials=1)  # covered: the repeat stands, asked once, nothing counted
    assert InsistsOnACorner.asked == 8 and REPEATS_KEY not in study.trials[-1].user_attrs
    assert repeats_avoided(study) == 6
