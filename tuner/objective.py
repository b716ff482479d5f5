"""What one trial does: suggest knobs → DecodeConfig → (reuse an earlier identical trial) → chunked evaluation on
the validation items, stopped early once hopeless → the accuracy constraint for the sampler."""

from __future__ import annotations

from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from decoder.config import DecodeConfig

from .evaluate import Evaluator
from .spec import StudySpec
from .stats import cannot_reach
from .study import FINISHED, baseline_accuracy, config_key, distributions, suggest


class Objective:
    """Evaluates one trial: suggest knobs → DecodeConfig → (dedupe) → chunked evaluation → constraint."""

    def __init__(self, spec: StudySpec, evaluator: Evaluator, items: list, *,
                 on_progress: Callable[[int, int, int], None] | None = None,
                 on_trial_start: Callable[[int, DecodeConfig], None] | None = None):
        self.spec, self.evaluator, self.items = spec, evaluator, items
        self.on_progress, self.on_trial_start = on_progress, on_trial_start
        self.dists = distributions(spec)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        params = {name: suggest(trial, name, dist) for name, dist in self.dists.items()}
        trials = trial.study.get_trials(deepcopy=False)  # one read for the reference and duplicate look-ups
        reference = self.reference_of(trial, trials)
        if reference is not None:
            config = self.spec.reference_config(self.spec.reference(reference))
        else:
            config = self.spec.config_for(params)
        key = config_key(config)
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("config_key", key)
        earlier = self._earlier(trials, key, trial.number)
        if earlier is not None:
            return self._reuse(trial, earlier)

        constraint = self.spec.constraint
        baseline = baseline_accuracy(trial.study)
        is_baseline = reference == constraint.baseline
        target = None if baseline is None or is_baseline else constraint.bar(baseline)
        if self.on_trial_start:
            self.on_trial_start(trial.number, config)
        stop = None if target is None else (lambda c, seen, total: cannot_reach(c, seen, total, target))
        result = self.evaluator.evaluate(self.items, config, chunk_size=self.spec.chunk_size, should_stop=stop,
                                         on_progress=self.on_progress)
        metrics = result.metrics()
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("outcomes", "".join("1" if o else "0" for o in result.outcomes))
        if is_baseline:
            trial.study.set_user_attr("baseline", {"trial": trial.number, "accuracy": result.accuracy,
                                                   "reference": reference})
            target = constraint.bar(result.accuracy)
        elif target is None:
            # With several workers the baseline may finish while this trial runs: use its bar if it's known now.
            baseline = baseline_accuracy(trial.study)
            target = None if baseline is None else constraint.bar(baseline)
        # <= 0 is feasible: how far the accuracy falls short of the bar. A trial that ends before the baseline
        # (another worker still runs it) can't know the bar and records 0 (feasible) for the sampler; fronts and
        # exports re-judge every trial against the baseline once it is known (trial_points).
        trial.set_constraint("accuracy", 0.0 if target is None else target - result.accuracy)
        if result.stopped_early:
            trial.set_user_attr("pruned_after", result.n)
            raise optuna.TrialPruned(f"accuracy {result.accuracy:.3f} after {result.n} items can't reach {target:.3f}")
        return result.accuracy, result.tokens_per_s

    @staticmethod
    def reference_of(trial: optuna.Trial, trials: list[FrozenTrial] | None = None) -> str | None:
        """The reference this trial evaluates, if any. A retry of a stale trial is a copy that keeps the original's
        params and user attrs (Optuna's RetryHeartbeatStaleTrialCallback); should an attr be missing, the
        original trial (`system_attrs["failed_trial"]`) still knows, so a retried baseline stays the baseline."""
        reference = trial.user_attrs.get("reference")
        if reference is not None:
            return reference
        by_number = {t.number: t for t in (trial.study.get_trials(deepcopy=False) if trials is None else trials)}
        me = by_number.get(trial.number)
        original = None if me is None else me.system_attrs.get("failed_trial")
        if original is not None and original in by_number:
            reference = by_number[original].user_attrs.get("reference")
            if reference is not None:
                trial.set_user_attr("reference", reference)
        return reference

    @staticmethod
    def _earlier(trials: list[FrozenTrial], key: str, number: int) -> FrozenTrial | None:
        """A finished trial (complete, or stopped early) that ran the same configuration."""
        for t in trials:
            if t.state in FINISHED and t.number != number and t.user_attrs.get("config_key") == key:
                return t
        return None

    def _reuse(self, trial: optuna.Trial, earlier: FrozenTrial) -> tuple[float, float]:
        """Copy an earlier trial's outcome: its values, or its stop (a repeat of a hopeless trial stops too)."""
        trial.set_user_attr("duplicate_of", earlier.number)
        trial.set_user_attr("metrics", earlier.user_attrs.get("metrics", {}))
        for key, value in (earlier.constraints or {}).items():
            trial.set_constraint(key, value)
        if earlier.state == TrialState.PRUNED:
            if "pruned_after" in earlier.user_attrs:
                trial.set_user_attr("pruned_after", earlier.user_attrs["pruned_after"])
            raise optuna.TrialPruned(f"same configuration as trial {earlier.number}, which was stopped early")
        return tuple(earlier.values)  # type: ignore[return-value]
