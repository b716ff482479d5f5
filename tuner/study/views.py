"""What a wrapping sampler builds on: a study with its trial list rewritten (read-only), and a sampler that hands
the trial's life cycle to the sampler it wraps."""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState


class TrialsView:
    """Delegates everything to `study` except its trials, which `_rewrite` turns into what the sampler sees.

    Optuna 5's samplers read trials through `study._get_trials` (and `get_trials` / `trials`); the view answers all
    three, filtering by state after the rewrite so a trial the rewrite changes is filtered by its new state."""

    def __init__(self, study: Any) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _rewrite(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        return trials

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        trials = self._rewrite(self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache))
        return trials if states is None else [t for t in trials if t.state in states]

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


class WrappingSampler(BaseSampler):
    """A sampler around `inner`: before_trial, after_trial and reseed_rng go to it; subclasses say how they sample."""

    def __init__(self, inner: BaseSampler) -> None:
        self.inner = inner

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
