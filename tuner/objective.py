"""What one trial does: suggest knobs → DecodeConfig → (reuse an earlier identical trial) → race over the
validation pool, judged after each rung by the paired drop against the baseline (tuner.racing) → the accuracy
constraint for the sampler.

The baseline reference's own trial only makes sure the baseline ledger (tuner.baseline) covers the first rung and
reports it; any trial may grow the ledger, so no trial waits for the baseline trial to finish.

Speed is measured once per trial, right after its first rung (tuner.timing: interleaved probe passes against a
timing reference), and that figure is what racing compares and what the study optimises.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from decoder.config import DecodeConfig

from . import racing
from .baseline import BaselineLedger, LedgerState
from .evaluate import EvalResult, Evaluator
from .spec import StudySpec
from .stats import PairedDrop, paired_drop, wilson_interval
from .study import FINISHED, config_key, distributions, fail_stale_trials, suggest
from .timing import SpeedEstimate, Timer, timer_for

LedgerFactory = Callable[[optuna.Study], BaselineLedger]


class Objective:
    """Evaluates one trial: suggest knobs → DecodeConfig → (dedupe) → race → constraint."""

    def __init__(self, spec: StudySpec, evaluator: Evaluator, items: list, *,
                 on_progress: Callable[[int, int, int], None] | None = None,
                 on_trial_start: Callable[[int, DecodeConfig], None] | None = None,
                 ledger: LedgerFactory | None = None, timer: Timer | None = None):
        self.spec, self.evaluator, self.items = spec, evaluator, items
        self.timer = timer or timer_for(spec, evaluator, items)
        self.on_progress, self.on_trial_start = on_progress, on_trial_start
        self.dists = distributions(spec)
        self.rungs = racing.rungs(len(items), spec.race)
        self.ledger_factory = ledger or self._default_ledger
        self.poll_s = 1.0  # how often a trial waiting for an identical running one looks again

    def _default_ledger(self, study: optuna.Study) -> BaselineLedger:
        name = self.spec.constraint.baseline
        return BaselineLedger(study, self.spec.reference_config(self.spec.reference(name)), name, self.evaluator,
                              self.items, chunk_size=self.spec.chunk_size, on_progress=self.on_progress)

    def __call__(self, trial: optuna.Trial, on_keyed: Callable[[], None] | None = None) -> tuple[float, float]:
        """Run the trial. `on_keyed` is called once its configuration is recorded (`config_key`): a worker holds
        the study's claim lock until then, so of two trials of one configuration claimed at the same time the
        second always sees the first (and waits for its result instead of evaluating it again)."""
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
        if on_keyed is not None:
            on_keyed()
        earlier = self._earlier(trials, key, trial.number)
        while earlier is not None and earlier.state == TrialState.RUNNING:
            self._wait_while_running(trial.study, earlier.number)
            earlier = self._earlier(trial.study.get_trials(deepcopy=False), key, trial.number)
        if earlier is not None:
            return self._reuse(trial, earlier)
        if self.on_trial_start:
            self.on_trial_start(trial.number, config)
        ledger = self.ledger_factory(trial.study)
        if reference == self.spec.constraint.baseline:
            return self._baseline(trial, ledger, reference)
        return self._race(trial, config, ledger)

    # ------------------------------------------------------------------------------------------ baseline
    def _baseline(self, trial: optuna.Trial, ledger: BaselineLedger, reference: str) -> tuple[float, float]:
        state = ledger.ensure(self.rungs[0])
        summary = dict(trial.study.user_attrs.get("baseline") or {})
        trial.study.set_user_attr("baseline", {**summary, "trial": trial.number, "reference": reference,
                                               "accuracy": state.accuracy, "n": state.n})
        config = self.spec.reference_config(self.spec.reference(reference))
        speed = self._speed(trial, config, state.tokens_per_s, state.decode_time_s)
        trial.set_user_attr("metrics", {**baseline_metrics(state, self.spec.constraint.confidence),
                                        **speed.metrics(state.tokens_per_s)})
        trial.set_user_attr("outcomes", state.outcomes)
        trial.set_constraint("accuracy", -self.spec.constraint.margin)  # the baseline is feasible by definition
        return state.accuracy, speed.tokens_per_s

    def _speed(self, trial: optuna.Trial, config: DecodeConfig, wall_tokens_per_s: float,
               eval_time_s: float) -> SpeedEstimate:
        """The trial's speed (tuner.timing), its passes and rule kept with the trial."""
        speed = self.timer.measure(config, trial.study, wall_tokens_per_s, trial.number, eval_time_s)
        if speed.detail:
            trial.set_user_attr("timing", speed.detail)
        return speed

    # ------------------------------------------------------------------------------------------- racing
    def _race(self, trial: optuna.Trial, config: DecodeConfig, ledger: BaselineLedger) -> tuple[float, float]:
        constraint, parts, history = self.spec.constraint, [], []
        verdict, paired, speed = racing.CONTINUE, None, None
        for n in self.rungs:
            done = sum(p.n for p in parts)
            parts.append(self.evaluator.evaluate(self.items[done:n], config, chunk_size=self.spec.chunk_size,
                                                 warmup=not parts, on_progress=self._progress(done)))
            result = EvalResult.concat(parts)
            if speed is None:  # timed once, while the configuration is warm from its first rung
                speed = self._speed(trial, config, result.tokens_per_s, result.counters.wall_time_s)
            base = ledger.ensure(n)
            paired = paired_drop(result.outcomes, base.bools(n), constraint.confidence)
            rivals = self._rivals(trial.study, trial.number)
            rival = racing.dominated_by(speed.tokens_per_s, paired, rivals, self.spec.race.speed_tolerance)
            verdict = racing.judge(paired, constraint.margin, last=n == self.rungs[-1], dominated=rival is not None,
                                   front=racing.on_front(speed.tokens_per_s, paired, rivals))
            history.append({"n": n, "drop": paired.drop, "lower": paired.lower, "upper": paired.upper,
                            "verdict": verdict, **({"dominated_by": rival.number} if rival else {})})
            if verdict != racing.CONTINUE:
                break
        assert paired is not None and speed is not None
        result = EvalResult.concat(parts)
        metrics = {**result.metrics(), **speed.metrics(result.tokens_per_s), **race_metrics(paired, verdict, base)}
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("race", history)
        trial.set_user_attr("outcomes", "".join("1" if o else "0" for o in result.outcomes))
        # <= 0 is feasible: how far the upper bound of the paired drop lies above the margin.
        trial.set_constraint("accuracy", paired.upper - constraint.margin)
        if verdict in racing.STOPPED:
            trial.set_user_attr("pruned_after", result.n)
            raise optuna.TrialPruned(f"{verdict} after {result.n} items: drop {paired.drop:.3f} "
                                     f"[{paired.lower:.3f}, {paired.upper:.3f}] vs margin {constraint.margin:.3f}")
        return result.accuracy, speed.tokens_per_s

    def _progress(self, done: int) -> Callable[[int, int, int], None] | None:
        if self.on_progress is None:
            return None
        report, total = self.on_progress, len(self.items)
        return lambda seen, _total, correct: report(done + seen, total, correct)

    @staticmethod
    def _rivals(study: optuna.Study, number: int) -> list[racing.Rival]:
        """Finished trials resolved feasible (the baseline included), for the dominance rule."""
        out = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            m = t.user_attrs.get("metrics") or {}
            if t.number != number and m.get("race_verdict") == racing.FEASIBLE and t.values:
                out.append(racing.Rival(t.number, float(t.values[1]), float(m["drop"])))
        return out

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
        """A trial that ran the same configuration: a finished one (complete, or stopped early), else one still
        running that started before this one (whose result this trial then waits for). Only earlier running
        trials count, so two trials never wait for each other."""
        running = None
        for t in trials:
            if t.number == number or t.user_attrs.get("config_key") != key:
                continue
            if t.state in FINISHED:
                return t
            if t.state == TrialState.RUNNING and t.number < number and running is None:
                running = t
        return running

    def _wait_while_running(self, study: optuna.Study, number: int) -> None:
        """Wait until trial `number` is no longer running. Stale trials are failed meanwhile (every worker may be
        busy waiting or evaluating, and a dead worker's trial must not hold this one forever); a failed one is
        re-queued, and this trial then evaluates the configuration itself."""
        while True:
            fail_stale_trials(study)
            states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
            if states.get(number) != TrialState.RUNNING:
                return
            time.sleep(self.poll_s)

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


def race_metrics(paired: PairedDrop, verdict: str, base: LedgerState) -> dict[str, Any]:
    """The paired comparison behind a trial's verdict, as flat numbers (user attrs, MLflow, trials.csv)."""
    return {"drop": paired.drop, "drop_lower": paired.lower, "drop_upper": paired.upper,
            "discordance": paired.discordance, "baseline_only": paired.baseline_only,
            "candidate_only": paired.candidate_only, "confidence": paired.confidence, "race_verdict": verdict,
            "baseline_accuracy_same_items": base.bools(paired.n).count(True) / paired.n if paired.n else 0.0}


def baseline_metrics(state: LedgerState, confidence: float) -> dict[str, Any]:
    """The baseline trial's metrics: its accuracy on the ledger's items (its drop against itself is 0)."""
    lo, hi = wilson_interval(state.outcomes.count("1"), state.n)
    return {"accuracy": state.accuracy, "accuracy_ci_low": lo, "accuracy_ci_high": hi, "n": state.n,
            "correct": state.outcomes.count("1"), "tokens_per_s": state.tokens_per_s,
            "nfe": state.row_forwards / state.n if state.n else 0.0, "decode_time_s": state.decode_time_s,
            "attended_pairs": state.attended_pairs / state.n if state.n else 0.0,
            "drop": 0.0, "drop_lower": 0.0, "drop_upper": 0.0, "discordance": 0.0, "confidence": confidence,
            "race_verdict": racing.FEASIBLE}
