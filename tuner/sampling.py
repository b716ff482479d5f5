"""The study's sampler, and two things Optuna's model-based samplers miss about our trials.

* **Stopped trials.** A trial stopped by the accuracy constraint (tuner.study.Objective, marked PRUNED as the
  product promises) is exactly what the constrained GP should learn from: "this region can't keep the accuracy".
  But Optuna's GPSampler fits only COMPLETE trials, so with a strict constraint (most trials stopped early) it
  models two or three points and keeps proposing the regions it was just told are hopeless. `SeesStoppedTrials`
  shows the GP each stopped trial as a complete one with the partial accuracy and tokens/s it measured and its
  (violated) constraint, through a read-only view of the study; the stored trials stay PRUNED.
* **Repeats.** Once the GP has found a feasible corner of the space (say the highest threshold), its acquisition
  can keep pointing at that same corner: in a 30-trial study it proposed one configuration 12 times. The
  objective doesn't evaluate a repeat again, but each one still spends a trial of the budget and teaches the
  model nothing. `NoRepeats` turns a proposal equal to a configuration already tried (finished, stopped or
  running) into a random one, which at least explores.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

__all__ = ["NoRepeats", "SeesStoppedTrials", "make_sampler"]

log = logging.getLogger(__name__)


def make_sampler(name: str, seed: int | None, trials: int) -> BaseSampler:
    """The sampler a spec names; `gp` sees early-stopped trials, `gp` and `tpe` don't repeat themselves (see
    module docstring)."""
    n_startup = max(3, min(10, trials // 3))
    if name == "gp":
        return NoRepeats(SeesStoppedTrials(optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup)), seed)
    if name == "tpe":
        return NoRepeats(optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, multivariate=True), seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def as_complete(trial: FrozenTrial) -> FrozenTrial:
    """A stopped trial as the sampler should see it: COMPLETE with its partial (accuracy, tokens/s); any other
    trial, or a stopped one that recorded no metrics, as it is."""
    metrics = trial.user_attrs.get("metrics") or {}
    if trial.state != TrialState.PRUNED or "accuracy" not in metrics or "tokens_per_s" not in metrics:
        return trial
    seen = copy.copy(trial)
    seen.state = TrialState.COMPLETE
    seen.values = [float(metrics["accuracy"]), float(metrics["tokens_per_s"])]
    return seen


class StudyView:
    """The study as the wrapped sampler reads it: stopped trials turned complete, everything else delegated."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        trials = [as_complete(t) for t in self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache)]
        return trials if states is None else [t for t in trials if t.state in states]

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


class _Wrapper(BaseSampler):
    """A sampler that delegates everything to `inner`; subclasses change one thing."""

    def __init__(self, inner: BaseSampler) -> None:
        self.inner = inner

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


class SeesStoppedTrials(_Wrapper):
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


class NoRepeats(_Wrapper):
    """Wraps a sampler so that a proposal equal to a configuration already tried becomes a random one.

    The random configuration is drawn here, from a RandomSampler seeded apart from the inner sampler's own
    random start-up (the same seed would replay the start-up trials, which are tried configurations too), and
    redrawn should it be a repeat as well. It is returned as the relative proposal, so the inner sampler's
    independent fallback, which logs a warning per knob, is not involved.
    """

    def __init__(self, inner: BaseSampler, seed: int | None = None) -> None:
        super().__init__(inner)
        self._explore = optuna.samplers.RandomSampler(seed=None if seed is None else seed + _EXPLORE_SEED_OFFSET)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        proposal = self.inner.sample_relative(study, trial, search_space)
        earlier = tried_before(study, trial.number, proposal) if proposal else None
        if earlier is None:
            return proposal
        for _ in range(_MAX_DRAWS):
            fresh = {name: self._explore.sample_independent(study, trial, name, dist)
                     for name, dist in search_space.items()}
            if tried_before(study, trial.number, fresh) is None:
                break
        log.info("trial %d: the sampler proposed the configuration of trial %d again; sampling at random instead",
                 trial.number, earlier)
        return fresh

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
        self._explore.reseed_rng()


_EXPLORE_SEED_OFFSET = 1_000_003  # worker seeds are `seed + worker index`: stay clear of them
_MAX_DRAWS = 20  # a finite space where every configuration was tried keeps the last draw


def tried_before(study: optuna.Study, number: int, params: dict[str, Any]) -> int | None:
    """The number of a finished, stopped or running trial (not `number`) that ran `params`, or None.

    Floats compare with a relative tolerance of 1e-9 (a GP's 0.6999999999999998 is 0.7). A vanilla reference
    reports placeholder knobs (`Knob.most_vanilla_like`) that it didn't run, so it doesn't count.
    """
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    for t in study._get_trials(deepcopy=False, states=states, use_cache=True):
        if t.number == number or (t.user_attrs.get("config") or {}).get("mode", "streaming") != "streaming":
            continue
        if t.params.keys() == params.keys() and all(_same(t.params[k], v) for k, v in params.items()):
            return t.number
    return None


def _same(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return type(a) is type(b) and a == b  # a choice: None, True or 16 (True == 1 must not match)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
