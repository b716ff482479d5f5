"""What one trial does: suggest knobs → DecodeConfig → (reuse an earlier identical trial) → race over the
validation pool, judged after each rung by the constraint on the paired comparison with the baseline → the
constraint's value for the sampler.

The baseline reference's own trial only makes sure the baseline ledger covers the first rung and reports it; any
trial may grow the ledger, so no trial waits for the baseline trial. Speed is measured once per trial, right after
its first rung (tuner.study.timing), and that figure is what racing compares and what the study optimises.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from decoder.config import DecodeConfig

from ..storage.record import (
    BaselineSummary,
    LedgerState,
    RaceStep,
    StudyRecord,
    TrialMetrics,
    TrialRecord,
    TrialWriter,
    config_key_of,
    reference_of,
    retry_of,
)
from ..storage.shared_ledger import adopt
from ..verdict import racing
from ..verdict.constraint import Constraint, Evidence, Interval
from ..verdict.stats import Disagreement, PairedDrop, wilson_interval
from .baseline import BaselineLedger, baseline_key, items_hash
from .evaluate import EvalResult, Evaluator
from .lifecycle import FINISHED, fail_stale_trials
from .space import config_key, distributions, suggest
from .spec import StudySpec
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

    @property
    def constraint(self) -> Constraint:
        return self.spec.constraint

    def _default_ledger(self, study: optuna.Study) -> BaselineLedger:
        """The ledger keyed by these very items (a worker keys it by the whole split, tuner.workers.worker)."""
        config = self.spec.reference_config(self.spec.reference(self.constraint.baseline))
        model = getattr(getattr(self.evaluator, "model", None), "source", None) or {}
        key = baseline_key(self.spec, config, model.get("fingerprint"), items_hash(self.items))
        return BaselineLedger(adopt(study, key), config, self.evaluator, self.items, chunk_size=self.spec.chunk_size,
                              on_progress=self.on_progress)

    def __call__(self, trial: optuna.Trial, on_keyed: Callable[[], None] | None = None) -> tuple[float, float]:
        """Run the trial. `on_keyed` is called once its configuration is recorded: a worker holds the study's claim
        lock until then, so of two trials of one configuration claimed at the same time the second always sees the
        first (and waits for its result instead of evaluating it again)."""
        params = {name: suggest(trial, name, dist) for name, dist in self.dists.items()}
        trials = trial.study.get_trials(deepcopy=False)  # one read for the reference and duplicate look-ups
        reference = self.reference_of(trial, trials)
        if reference is not None:
            config = self.spec.reference_config(self.spec.reference(reference))
        else:
            config = self.spec.config_for(params)
        key = config_key(config)
        writer = TrialWriter(trial)
        writer.configuration(config.to_dict(), key)
        if on_keyed is not None:
            on_keyed()
        earlier = self._earlier(trials, key, trial.number)
        while earlier is not None and earlier.state == TrialState.RUNNING:
            self._wait_while_running(trial.study, earlier.number)
            earlier = self._earlier(trial.study.get_trials(deepcopy=False), key, trial.number)
        if earlier is not None:
            return self._reuse(trial, TrialRecord.read(earlier))
        if self.on_trial_start:
            self.on_trial_start(trial.number, config)
        ledger = self.ledger_factory(trial.study)
        if reference == self.constraint.baseline:
            return self._baseline(trial, ledger, reference)
        return self._race(trial, config, ledger)

    # ------------------------------------------------------------------------------------------ baseline
    def _baseline(self, trial: optuna.Trial, ledger: BaselineLedger, reference: str) -> tuple[float, float]:
        state = ledger.ensure(self.rungs[0])
        StudyRecord(trial.study).set_baseline(BaselineSummary(reference=reference, trial=trial.number))
        config = self.spec.reference_config(self.spec.reference(reference))
        speed = self._speed(trial, config, state.tokens_per_s, state.decode_time_s)
        metrics = TrialMetrics.from_dict({**baseline_metrics(state, self.constraint.confidence),
                                          **speed.metrics(state.tokens_per_s)})
        TrialWriter(trial).result(metrics, state.evidence())
        # The baseline is feasible by definition: its paired bound against itself is 0.
        trial.set_constraint("accuracy", self.constraint.violation(Interval(0.0, 0.0)))
        return (state.accuracy if state.labelled else 1.0), speed.tokens_per_s

    def _speed(self, trial: optuna.Trial, config: DecodeConfig, wall_tokens_per_s: float,
               eval_time_s: float) -> SpeedEstimate:
        """The trial's speed (tuner.study.timing), its passes and rule kept with the trial."""
        speed = self.timer.measure(config, trial.study, wall_tokens_per_s, trial.number, eval_time_s)
        if speed.detail:
            TrialWriter(trial).timing(speed.detail)
        return speed

    # ------------------------------------------------------------------------------------------- racing
    def _race(self, trial: optuna.Trial, config: DecodeConfig, ledger: BaselineLedger) -> tuple[float, float]:
        constraint, parts, history = self.constraint, [], []
        verdict, paired, speed = racing.CONTINUE, None, None
        for n in self.rungs:
            done = sum(p.n for p in parts)
            parts.append(self.evaluator.evaluate(self.items[done:n], config, chunk_size=self.spec.chunk_size,
                                                 warmup=not parts, on_progress=self._progress(done)))
            result = EvalResult.concat(parts)
            if speed is None:  # timed once, while the configuration is warm from its first rung
                speed = self._speed(trial, config, result.tokens_per_s, result.counters.wall_time_s)
            base = ledger.ensure(n)
            paired = constraint.compare(result.evidence, base.evidence(n))
            rivals = self._rivals(trial.study, trial.number)
            rival = racing.dominated_by(speed.tokens_per_s, paired, rivals, self.spec.race.speed_tolerance)
            verdict = racing.judge(constraint.verdict(paired), last=n == self.rungs[-1], dominated=rival is not None,
                                   front=racing.on_front(speed.tokens_per_s, paired, rivals))
            history.append(RaceStep(n=n, drop=paired.estimate, lower=paired.lower, upper=paired.upper,
                                    verdict=verdict, dominated_by=rival.number if rival else None))
            if verdict != racing.CONTINUE:
                break
        assert paired is not None and speed is not None
        result = EvalResult.concat(parts)
        agreement = agreement_rate(result.evidence, base.evidence(result.n))
        metrics = TrialMetrics.from_dict({**result.metrics(), **speed.metrics(result.tokens_per_s),
                                          **race_metrics(paired, verdict, base), "agreement": agreement})
        writer = TrialWriter(trial)
        writer.result(metrics, result.evidence, history)
        trial.set_constraint("accuracy", constraint.violation(paired))
        if verdict in racing.STOPPED:
            writer.stopped_after(result.n)
            raise optuna.TrialPruned(f"{verdict} after {result.n} items: {constraint.quantity} {paired.estimate:.3f} "
                                     f"[{paired.lower:.3f}, {paired.upper:.3f}] vs margin {constraint.margin:.3f}")
        # The quality objective: accuracy, or without labels the agreement with the baseline.
        return (result.accuracy if result.labelled else agreement or 0.0), speed.tokens_per_s

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
            r = TrialRecord.read(t)
            if r.number != number and r.metrics.race_verdict == racing.FEASIBLE and r.values:
                out.append(racing.Rival(r.number, float(r.values[1]), float(r.metrics.drop or 0.0)))
        return out

    @staticmethod
    def reference_of(trial: optuna.Trial, trials: list[FrozenTrial] | None = None) -> str | None:
        """The reference this trial evaluates, if any. A retry of a stale trial keeps the original's attributes;
        should the reference be missing, the original trial (the retry's first attempt) still knows, so a retried
        baseline stays the baseline."""
        reference = reference_of(trial)
        if reference is not None:
            return reference
        by_number = {t.number: t for t in (trial.study.get_trials(deepcopy=False) if trials is None else trials)}
        me = by_number.get(trial.number)
        original = None if me is None else retry_of(me)
        if original is not None and original in by_number:
            reference = reference_of(by_number[original])
            if reference is not None:
                TrialWriter(trial).reference(reference)
        return reference

    @staticmethod
    def _earlier(trials: list[FrozenTrial], key: str, number: int) -> FrozenTrial | None:
        """A trial that ran the same configuration: a finished one (complete, or stopped early), else one still
        running that started before this one (whose result this trial then waits for). Only earlier running
        trials count, so two trials never wait for each other."""
        running = None
        for t in trials:
            if t.number == number or config_key_of(t) != key:
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

    def _reuse(self, trial: optuna.Trial, earlier: TrialRecord) -> tuple[float, float]:
        """Copy an earlier trial's outcome: its values, or its stop (a repeat of a hopeless trial stops too)."""
        TrialWriter(trial).copy_of(earlier)
        for key, value in (earlier.constraints or {}).items():
            trial.set_constraint(key, value)
        if earlier.state == TrialState.PRUNED:
            raise optuna.TrialPruned(f"same configuration as trial {earlier.number}, which was stopped early")
        assert earlier.values is not None
        return earlier.values[0], earlier.values[1]


def race_metrics(paired: PairedDrop | Disagreement, verdict: str, base: LedgerState) -> dict[str, float | int | str]:
    """The paired comparison behind a trial's verdict, as flat numbers (`TrialMetrics` fields): `drop*` hold the
    constrained quantity (the accuracy drop, or the disagreement rate, which bounds it)."""
    out: dict[str, float | int | str] = {
        "drop": paired.estimate, "drop_lower": paired.lower, "drop_upper": paired.upper,
        "discordance": paired.discordance, "confidence": paired.confidence, "race_verdict": verdict}
    if isinstance(paired, PairedDrop):
        out.update(baseline_only=paired.baseline_only, candidate_only=paired.candidate_only,
                   baseline_accuracy_same_items=base.bools(paired.n).count(True) / paired.n if paired.n else 0.0)
    return out


def agreement_rate(candidate: Evidence, baseline: Evidence) -> float | None:
    """The share of items whose answer equals the baseline's (None without answers on both sides)."""
    n = candidate.n
    if not n or len(candidate.answers) != n or len(baseline.answers) < n:
        return None
    return sum(a == b for a, b in zip(candidate.answers, baseline.answers, strict=False)) / n


def baseline_metrics(state: LedgerState, confidence: float) -> dict[str, float | int | str]:
    """The baseline trial's metrics: its accuracy on the ledger's items (with labels), its drop against itself 0."""
    lo, hi = wilson_interval(state.outcomes.count("1"), state.n)
    scored = {"accuracy": state.accuracy, "accuracy_ci_low": lo, "accuracy_ci_high": hi,
              "correct": state.outcomes.count("1")}
    return {**(scored if state.labelled else {}), "n": state.n, "agreement": 1.0, "tokens_per_s": state.tokens_per_s,
            "nfe": state.row_forwards / state.n if state.n else 0.0, "decode_time_s": state.decode_time_s,
            "attended_pairs": state.attended_pairs / state.n if state.n else 0.0,
            "drop": 0.0, "drop_lower": 0.0, "drop_upper": 0.0, "discordance": 0.0, "confidence": confidence,
            "race_verdict": racing.FEASIBLE}
