"""The GP sees trials stopped early by the accuracy constraint (Optuna's GPSampler alone fits COMPLETE ones), and
a model-based sampler that proposes a configuration already tried samples at random instead."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from tuner.sampling import NoRepeats, SeesStoppedTrials, StudyView, make_sampler, tried_before

DISTS = {"window": CategoricalDistribution([16, 32, None]), "threshold": FloatDistribution(0.5, 0.99)}


def stopped(threshold: float, accuracy: float) -> optuna.trial.FrozenTrial:
    return create_trial(state=TrialState.PRUNED, params={"window": 16, "threshold": threshold}, distributions=DISTS,
                        user_attrs={"metrics": {"accuracy": accuracy, "tokens_per_s": 900.0}},
                        constraints={"accuracy": 0.2})


def complete(threshold: float, accuracy: float, tps: float) -> optuna.trial.FrozenTrial:
    return create_trial(state=TrialState.COMPLETE, params={"window": None, "threshold": threshold},
                        distributions=DISTS, values=[accuracy, tps], constraints={"accuracy": -0.01})


@pytest.fixture
def study(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", directions=["maximize", "maximize"])
    for t in (complete(0.99, 0.95, 40.0), stopped(0.55, 0.7), stopped(0.6, 0.72),
              create_trial(state=TrialState.PRUNED, params={"window": 32, "threshold": 0.7}, distributions=DISTS)):
        study.add_trial(t)
    return study


def test_the_view_turns_stopped_trials_with_metrics_complete_and_keeps_their_constraints(study):
    view = StudyView(study)
    seen = view._get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert [t.number for t in seen] == [0, 1, 2]  # trial 3 recorded no metrics: the sampler can't use it
    assert seen[1].values == [0.7, 900.0] and seen[1].constraints == {"accuracy": 0.2}
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, *[TrialState.PRUNED] * 3]  # storage untouched
    assert view.directions == study.directions  # everything else is the study's


def test_the_wrapped_gp_fits_the_stopped_trials_and_keeps_sampling(study):
    sampler = make_sampler("gp", seed=0, trials=9)
    assert isinstance(sampler, NoRepeats) and isinstance(sampler.inner, SeesStoppedTrials)
    study.sampler = sampler
    for _ in range(3):  # past the GP's 3 start-up trials, counted with the stopped ones
        trial = study.ask(DISTS)
        trial.set_constraint("accuracy", -0.01)
        study.tell(trial, [0.9, 100.0])
    assert len(study.trials) == 7
    assert isinstance(make_sampler("random", seed=0, trials=9), optuna.samplers.RandomSampler)


class Proposes(optuna.samplers.RandomSampler):
    """A model-based sampler stuck on one configuration: always proposes `params` (the GP at a corner)."""

    def __init__(self, params, space=DISTS):
        super().__init__(seed=0)
        self.params, self.space = params, space

    def infer_relative_search_space(self, study, trial):
        return dict(self.space)

    def sample_relative(self, study, trial, search_space):
        return dict(self.params)


def test_a_repeated_proposal_becomes_a_random_one(study, caplog):
    # Trial 1 (stopped early) ran window 16, threshold 0.55; a GP's float for it is off in the last bit.
    study.sampler = NoRepeats(Proposes({"window": 16, "threshold": 0.55 + 1e-16}), seed=1)
    with caplog.at_level("INFO", logger="tuner.sampling"):
        trial = study.ask(DISTS)
    assert trial.params != {"window": 16, "threshold": 0.55}
    assert 0.5 <= trial.params["threshold"] <= 0.99 and trial.params["window"] in (16, 32, None)
    assert "configuration of trial 1 again" in caplog.text
    study.tell(trial, state=TrialState.FAIL)

    study.sampler = NoRepeats(Proposes({"window": 16, "threshold": 0.8}), seed=1)  # new: kept
    assert study.ask(DISTS).params == {"window": 16, "threshold": 0.8}


def test_tried_before_matches_knobs_not_a_vanilla_placeholder(study):
    assert tried_before(study, 99, {"window": None, "threshold": 0.99}) == 0
    assert tried_before(study, 99, {"window": 32, "threshold": 0.7}) == 3  # stopped without metrics: still tried
    assert tried_before(study, 0, {"window": None, "threshold": 0.99}) is None  # itself
    assert tried_before(study, 99, {"window": 32, "threshold": 0.99}) is None
    vanilla = create_trial(state=TrialState.COMPLETE, params={"window": 32, "threshold": 0.9}, distributions=DISTS,
                           values=[0.95, 40.0], user_attrs={"config": {"mode": "vanilla"}})
    study.add_trial(vanilla)
    assert tried_before(study, 99, {"window": 32, "threshold": 0.9}) is None  # it ran vanilla, not these knobs


def test_the_random_draw_avoids_every_configuration_tried(tmp_path):
    grid = {"window": CategoricalDistribution([16, 32]), "threshold": FloatDistribution(0.5, 0.9, step=0.2)}
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/g.db", directions=["maximize", "maximize"])
    tried = [{"window": 16, "threshold": x} for x in (0.5, 0.7, 0.9)]
    for params in tried:
        study.add_trial(create_trial(state=TrialState.PRUNED, params=params, distributions=grid))
    for seed in range(5):
        study.sampler = NoRepeats(Proposes({"window": 16, "threshold": 0.7}, grid), seed=seed)
        trial = study.ask(grid)
        assert trial.params["window"] == 32, trial.params  # half the grid is tried; each draw finds the other half
        study.tell(trial, state=TrialState.FAIL)
