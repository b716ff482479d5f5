"""A study as a wrapped sampler reads it: the same study with its trial list rewritten (read-only)."""

from __future__ import annotations

from collections.abc import Container
from typing import Any

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
