"""No budget spent on repeats: a proposal that repeats an evaluated (or running) configuration gets a fresh one.

A constrained GP that believes the best region is a corner of the space (the threshold's upper bound, say) keeps
proposing that corner: its acquisition is flat or noisy there, and an evaluated point is not excluded from the
next proposal. The objective then reuses the earlier trial's result (tuner.study.objective: `_earlier`,
`_reuse`), so the repeat costs no decoding, but it costs a trial of the budget: in one 30-trial arith study 11
trials were copies of two configurations.

`AvoidsRepeats` wraps the study's sampler. For every trial the sampler proposes (not the enqueued references and
retries, whose knobs are fixed), it completes the proposal to every searched knob and compares its configuration
key (`tuner.study.space.config_key` of `spec.config_for`, the same identity as the objective's dedupe) with those
of the study's evaluated, running and queued trials. A repeat is replaced:

1. re-ask the inner sampler with the repeats shown as *running* trials at the repeated points: Optuna's GPSampler
   then optimises its batch acquisition (qLogEHVI/qLogCEHVI, with the running points fantasised), whose value
   at a point already pending is nothing beyond the pending point's own — the acquisition's next best. Samplers
   that ignore running trials just draw again (their random state has moved on);
2. after `tries` repeated answers, a uniformly random point that is not a repeat (in a finite space, of at most
   GRID_LIMIT points, uniformly among the points not tried);
3. when no such point is found (a finite space the study has covered: then nothing is re-asked at all), the
   repeat stands: the objective reuses the earlier result at no decoding cost.

Every repeated proposal is counted on the trial it was replaced for (user attribute `REPEATS_KEY`, an int), and
logged on the `tuner.study.repeats` logger; `repeats_avoided(study)` sums them for `show` and the run's summary.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from ..storage.record import (
    REPEATS_AVOIDED,
    TrialRecord,
    config_key_of,
    record_repeats,
    reference_of,
    retry_of,
)
from .space import config_key
from .spec import StudySpec
from .views import TrialsView, WrappingSampler

__all__ = ["REPEATS_KEY", "AvoidsRepeats", "KeyOf", "PendingView", "repeats_avoided", "spec_key_of"]

log = logging.getLogger(__name__)

REPEATS_KEY = REPEATS_AVOIDED  # the trial user attribute the count is stored under (tuner.storage.record)
KeyOf = Callable[[Mapping[str, Any]], str]
GRID_LIMIT = 4096  # a finite space up to this many points is enumerated (covered? which points are left?)
_TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def spec_key_of(spec: StudySpec) -> KeyOf:
    """A point's configuration key under `spec`: its fixed knobs with the point's, normalised as the objective's
    dedupe does (`config_key`)."""
    return lambda params: config_key(spec.config_for(dict(params)))


def repeats_avoided(trials: Sequence[FrozenTrial] | optuna.Study) -> int:
    """Repeated proposals replaced over a study's trials (retries, which copy their original's attributes, are
    not counted twice)."""
    if isinstance(trials, optuna.Study):
        trials = trials.get_trials(deepcopy=False)
    return sum(TrialRecord.read(t).repeats_avoided for t in trials if retry_of(t) is None)


def _pending(params: Mapping[str, Any], space: Mapping[str, BaseDistribution], number: int) -> FrozenTrial:
    """A running trial at `params`, as a sampler that fantasises running trials reads one."""
    return FrozenTrial(number=number, state=TrialState.RUNNING, value=None, values=None,
                       datetime_start=dt.datetime.now(), datetime_complete=None, params=dict(params),
                       distributions={k: space[k] for k in params if k in space}, user_attrs={}, system_attrs={},
                       intermediate_values={}, trial_id=-1 - number)


class PendingView(TrialsView):
    """The study with extra running trials at `pending` points."""

    def __init__(self, study: Any, pending: Sequence[FrozenTrial]) -> None:
        super().__init__(study)
        self._pending = list(pending)

    def _rewrite(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        return [*trials, *self._pending]


class AvoidsRepeats(WrappingSampler):
    """Wraps `inner` so that no proposal repeats a configuration already in the study (module docstring).

    `dists` are the distributions the objective suggests (all of them: the relative search space this wrapper
    declares is every one that is not single-valued); `key_of` gives a complete point's configuration key."""

    def __init__(self, inner: BaseSampler, dists: Mapping[str, BaseDistribution], key_of: KeyOf, *,
                 seed: int | None = None, tries: int = 2, random_draws: int = 200) -> None:
        super().__init__(inner)
        self.dists, self.key_of = dict(dists), key_of
        self.tries, self.random_draws = tries, random_draws
        self._random = RandomSampler(seed=None if seed is None else seed + 7919)
        self._rng = random.Random(None if seed is None else seed + 7919)
        self._grid_cache: tuple[list[str], list[tuple[str, dict[str, Any]]] | None] | None = None

    # --------------------------------------------------------------------------------------- the identities
    def _single(self) -> dict[str, Any]:
        return {n: _single_value(d) for n, d in self.dists.items() if d.single()}

    def _key(self, params: Mapping[str, Any]) -> str | None:
        full = {**self._single(), **params}
        if not set(self.dists) <= set(full):
            return None
        return self.key_of({n: full[n] for n in self.dists})

    def taken(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, int]:
        """Configuration key → trial number, over the study's evaluated, running and queued trials but `trial`.
        A reference is known by its recorded key only (its sampler-facing params are a stand-in)."""
        out: dict[str, int] = {}
        for t in study._get_trials(deepcopy=False, states=_TAKEN, use_cache=False):
            if t.number == trial.number:
                continue
            key = config_key_of(t)
            if key is None and reference_of(t) is None:
                key = self._key({**t.system_attrs.get("fixed_params", {}), **t.params})
            if key is not None:
                out.setdefault(key, t.number)
        return out

    # ------------------------------------------------------------------------------------------ sampling
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {n: d for n, d in self.dists.items() if not d.single()}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if trial.system_attrs.get("fixed_params"):  # an enqueued reference or retry: its knobs are given
            return {}
        inner_space = self.inner.infer_relative_search_space(study, trial)
        taken = self.taken(study, trial)
        pending: list[FrozenTrial] = []
        proposal = self._ask(study, trial, search_space, inner_space, pending)
        grid = self._grid(search_space)
        if grid is not None and all(key in taken for key, _ in grid):
            if self._key(proposal) in taken:
                log.info("trial %d: every configuration of the space has been tried; the sampler's repeat stands "
                         "(the earlier result is reused)", trial.number)
            return proposal
        repeats = 0
        while (key := self._key(proposal)) in taken:
            repeats += 1
            if len(pending) >= self.tries:
                fresh = self._random_point(study, trial, search_space, taken)
                if fresh is None:
                    log.info("trial %d: the sampler repeats trial %d's configuration and no untried point was "
                             "found in %d random draws; the earlier result is reused", trial.number, taken[key],
                             self.random_draws)
                else:
                    log.info("trial %d: the sampler proposed evaluated configurations %d times; a random point "
                             "instead", trial.number, repeats)
                    proposal = fresh
                break
            log.info("trial %d: the sampler proposed trial %d's configuration again; re-asked with it excluded",
                     trial.number, taken[key])
            pending.append(_pending(proposal, search_space, -1 - len(pending)))
            proposal = self._ask(study, trial, search_space, inner_space, pending)
        if repeats:
            record_repeats(study, trial, repeats)
        return proposal

    def _ask(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution],
             inner_space: dict[str, BaseDistribution], pending: list[FrozenTrial]) -> dict[str, Any]:
        """The inner sampler's proposal, completed to every knob of `search_space` by its independent sampling
        (what Optuna would do for the knobs its relative sampling leaves out)."""
        view = PendingView(study, pending) if pending else study
        proposal = dict(self.inner.sample_relative(view, trial, inner_space)) if inner_space else {}  # type: ignore[arg-type]
        for name, dist in search_space.items():
            if name not in proposal:
                proposal[name] = self.inner.sample_independent(study, trial, name, dist)
        return proposal

    def _grid(self, search_space: Mapping[str, BaseDistribution]) -> list[tuple[str, dict[str, Any]]] | None:
        """Every point of a finite search space (categorical or stepped knobs, at most GRID_LIMIT points) with its
        configuration key, or None for a space with a continuous knob or too many points."""
        if self._grid_cache is not None and self._grid_cache[0] == list(search_space):
            return self._grid_cache[1]
        axes: list[list[tuple[str, Any]]] = []
        size = 1
        for name, dist in search_space.items():
            values = _finite_values(dist)
            if values is None or size * len(values) > GRID_LIMIT:
                self._grid_cache = (list(search_space), None)
                return None
            size *= len(values)
            axes.append([(name, v) for v in values])
        points = [dict(combo) for combo in itertools.product(*axes)]
        grid = [(key, point) for point in points if (key := self._key(point)) is not None]
        self._grid_cache = (list(search_space), grid)
        return grid

    def _random_point(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution],
                      taken: Mapping[str, int]) -> dict[str, Any] | None:
        grid = self._grid(search_space)
        if grid is not None:  # a finite space: uniformly among the points not tried
            left = [point for key, point in grid if key not in taken]
            return self._rng.choice(left) if left else None
        for _ in range(self.random_draws):
            point = {n: self._random.sample_independent(study, trial, n, d) for n, d in search_space.items()}
            if self._key(point) not in taken:
                return point
        return None

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        super().reseed_rng()
        self._random.reseed_rng()


def _finite_values(dist: BaseDistribution) -> list[Any] | None:
    """The values a categorical or stepped distribution can take; None for a continuous one."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, (FloatDistribution, IntDistribution)) and dist.step is not None and not dist.log:
        count = int(round((dist.high - dist.low) / dist.step)) + 1
        return [dist.low + i * dist.step for i in range(count)] if count <= GRID_LIMIT else None
    return None


def _single_value(dist: BaseDistribution) -> Any:
    from optuna.distributions import _get_single_value

    return _get_single_value(dist)
