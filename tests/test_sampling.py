"""The GP sees trials stopped early by the accuracy constraint (Optuna's GPSampler alone fits COMPLETE ones)."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from tuner.study.sampling import SeesStoppedTrials, StudyView, make_sampler

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
    assert isinstance(sampler, SeesStoppedTrials)
    study.sampler = sampler
    for _ in range(3):  # past the GP's 3 start-up trials, counted with the stopped ones
        trial = study.ask(DISTS)
        trial.set_constraint("accuracy", -0.01)
        study.tell(trial, [0.9, 100.0])
    assert len(study.trials) == 7
    assert isinstance(make_sampler("random", seed=0, trials=9), optuna.samplers.RandomSampler)
