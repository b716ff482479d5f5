"""The study's sampler, and the one thing Optuna's GP misses about our trials: the ones we stopped early.

A trial stopped by the accuracy constraint (tuner.study.objective.Objective, marked PRUNED as the product promises) is
exactly what the constrained GP should learn from: "this region can't keep the accuracy". But Optuna's
GPSampler fits only COMPLETE trials, so with a strict constraint (most trials stopped early) it models two or
three points and keeps proposing the regions it was just told are hopeless. `SeesStoppedTrials` shows the GP
each stopped trial as a complete one with the partial accuracy and tokens/s it measured and its (violated)
constraint, through a read-only view of the study; the stored trials stay PRUNED.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from ..storage.record import TrialRecord
from .views import TrialsView, WrappingSampler

if TYPE_CHECKING:  # pragma: no cover
    from .spec import StudySpec

__all__ = ["SeesStoppedTrials", "make_sampler"]


def make_sampler(name: str, seed: int | None, trials: int, spec: StudySpec | None = None) -> BaseSampler:
    """The sampler a spec names; `gp` sees early-stopped trials (see module docstring). With the `spec`, no
    proposal repeats a configuration the study already holds (tuner.study.repeats)."""
    sampler = _named_sampler(name, seed, trials)
    if spec is None:
        return sampler
    from .repeats import AvoidsRepeats, spec_key_of
    from .space import distributions

    return AvoidsRepeats(sampler, distributions(spec), spec_key_of(spec), seed=seed)


def _named_sampler(name: str, seed: int | None, trials: int) -> BaseSampler:
    n_startup = max(3, min(10, trials // 3))
    if name == "gp":
        return SeesStoppedTrials(optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup))
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, multivariate=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def as_complete(trial: FrozenTrial) -> FrozenTrial:
    """A stopped trial as the sampler should see it: COMPLETE with its partial (accuracy, tokens/s); any other
    trial, or a stopped one that recorded no metrics, as it is."""
    if trial.state != TrialState.PRUNED:
        return trial
    metrics = TrialRecord.read(trial).metrics
    if metrics.accuracy is None or metrics.tokens_per_s is None:
        return trial
    seen = copy.copy(trial)
    seen.state = TrialState.COMPLETE
    seen.values = [float(metrics.accuracy), float(metrics.tokens_per_s)]
    return seen


class StudyView(TrialsView):
    """The study as the wrapped sampler reads it: stopped trials turned complete."""

    def _rewrite(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        return [as_complete(t) for t in trials]


class SeesStoppedTrials(WrappingSampler):
    """Wraps a sampler so that its model of the space includes the trials stopped early (see module docstring)."""

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(StudyView(study), trial)  # type: ignore[arg-type]

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.inner.sample_relative(StudyView(study), trial, search_space)  # type: ignore[arg-type]

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.inner.sample_independent(StudyView(study), trial, param_name,  # type: ignore[arg-type]
                                             param_distribution)

