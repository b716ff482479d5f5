"""A study's trials as points of the accuracy / tokens-per-second plane, each judged by the constraint against the
baseline ledger on the items it used."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from decoder.config import KNOBS

from ..storage.record import StudyRecord, TrialRecord, read_trials
from ..verdict.constraint import Constraint, Verdict
from ..verdict.pareto import TrialPoint, pareto_front
from ..verdict.stats import wilson_interval


def trial_points(study: optuna.Study, constraint: Constraint) -> list[TrialPoint]:
    """Every finished trial as a TrialPoint.

    Accuracy is the paired estimate (the baseline's accuracy on all its ledger items minus the trial's paired drop
    on the items it used), so trials that raced 200 and 1,600 items sit on one scale; its interval is a
    proportion's (Wilson) at that accuracy over the trial's items. Feasible is `constraint.verdict` on the paired
    bound, re-judged from the stored outcomes, so a trial that finished before the ledger covered its items is
    judged like every other."""
    ledger = StudyRecord(study).ledger
    base_items = ledger.bools()
    points = []
    for t in read_trials(study, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        m = t.metrics
        acc = t.values[0] if t.values else (m.accuracy or 0.0)
        tps = t.values[1] if t.values else (m.tokens_per_s or 0.0)
        n = ci_n = len(t.outcomes) or m.n
        is_baseline = t.reference == constraint.baseline
        drop, lower, upper, discordance = m.drop, m.drop_lower, m.drop_upper, m.discordance
        if is_baseline and ledger.n:
            acc, feasible, ci_n = ledger.accuracy, True, ledger.n
            drop = lower = upper = discordance = 0.0
        elif t.outcomes and ledger.n >= len(t.outcomes):
            paired = constraint.compare(t.outcome_bools, base_items[: len(t.outcomes)])
            acc = ledger.accuracy - paired.drop
            drop, lower, upper, discordance = paired.drop, paired.lower, paired.upper, paired.discordance
            feasible = constraint.verdict(paired) is Verdict.FEASIBLE
        else:  # no per-item outcomes (an old study): the sampler's constraint is all there is
            feasible = bool(t.constraints) and all(v <= 0 for v in t.constraints.values())
        acc = min(1.0, max(0.0, float(acc)))
        lo, hi = wilson_interval(round(acc * ci_n), ci_n) if ci_n else (m.accuracy_ci_low, m.accuracy_ci_high)
        points.append(TrialPoint(
            number=t.number, accuracy=acc, tokens_per_s=float(tps), feasible=feasible, state=t.state.name,
            params=shown_params(t), label=t.reference, nfe=m.nfe, ci_low=lo, ci_high=hi, n=n, drop=drop,
            drop_lower=lower, drop_upper=upper, discordance=discordance, speed_spread=m.speed_spread,
            speed_noisy=m.speed_noisy, tokens_per_s_low=m.tokens_per_s_low, tokens_per_s_high=m.tokens_per_s_high))
    return points


def shown_params(t: TrialRecord) -> dict[str, Any]:
    """The knobs a trial ran with. A vanilla reference reports placeholder streaming knobs to the sampler
    (`Dimension.most_vanilla_like`); a front or a trials table shows its real settings instead."""
    config = t.config or {}
    mode = config.get("mode", "streaming")
    if mode == "streaming":
        return dict(t.params)
    shown = {k: v for k, v in config.items() if k in KNOBS and mode in KNOBS[k].modes
             and (KNOBS[k].search is not None or KNOBS[k].modes == (mode,))}
    return {"mode": mode, **shown}


def front(study: optuna.Study, constraint: Constraint) -> list[TrialPoint]:
    return pareto_front(trial_points(study, constraint))
