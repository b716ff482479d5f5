"""A study's trials as points of the accuracy / tokens-per-second plane, each judged by the constraint against the
baseline ledger on the items it used."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import optuna
from optuna.trial import TrialState

from decoder.config import KNOBS

from ..storage.record import StudyRecord, TrialRecord, bits, read_trials
from ..storage.shared_ledger import study_ledger
from ..verdict.constraint import Constraint, ConstraintError, Verdict
from ..verdict.pareto import TrialPoint, pareto_front
from ..verdict.stats import wilson_interval


def trial_points(study: optuna.Study, constraint: Constraint) -> list[TrialPoint]:
    """Every finished trial as a TrialPoint.

    Its quality is the paired estimate of its accuracy (the baseline's accuracy on all its ledger items minus the
    trial's drop on the items it used, so trials that raced 200 and 1,600 items sit on one scale), or without
    labels its agreement with the baseline; the interval is a proportion's (Wilson) at that value over the trial's
    items. `drop*` carry the constrained quantity's bound and feasible is `constraint.verdict` on it, re-judged
    from the stored evidence, so a trial that finished before the ledger covered its items is judged like every
    other."""
    ledger = study_ledger(study)
    base = ledger.evidence()
    extensions = StudyRecord(study).extensions()
    points = []
    for t in read_trials(study, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        state = t.state.name
        ext = extensions.get(t.number)
        if ext is not None and ext.evidence.n > t.evidence.n:  # raced further by finishing, after the study
            t = dataclasses.replace(t, outcomes=bits(ext.evidence.outcomes), answers=ext.evidence.answers)
            state = "COMPLETE" if ext.complete else state
        m = t.metrics
        quality = t.values[0] if t.values else (m.accuracy or 0.0)
        tps = t.values[1] if t.values else (m.tokens_per_s or 0.0)
        n = ci_n = t.evidence.n or m.n
        drop, lower, upper, discordance = m.drop, m.drop_lower, m.drop_upper, m.discordance
        paired = None
        if t.reference == constraint.baseline and ledger.n:
            quality, feasible, ci_n = (ledger.accuracy if ledger.labelled else 1.0), True, ledger.n
            drop = lower = upper = discordance = 0.0
        elif t.evidence.n and ledger.n >= t.evidence.n:
            with contextlib.suppress(ConstraintError):  # evidence the metric needs was not stored (an old trial)
                paired = constraint.compare(t.evidence, base)
        if paired is not None:
            drop, lower, upper, discordance = paired.estimate, paired.lower, paired.upper, paired.discordance
            feasible = constraint.verdict(paired) is Verdict.FEASIBLE
            k = t.evidence.n
            quality = (ledger.accuracy - (sum(base.outcomes[:k]) - sum(t.evidence.outcomes)) / k
                       if ledger.labelled and t.outcomes else 1.0 - sum(
                           a != b for a, b in zip(t.answers, base.answers, strict=False)) / k)
        elif not (t.reference == constraint.baseline and ledger.n):
            # no per-item evidence (an old study): the sampler's constraint is all there is
            feasible = bool(t.constraints) and all(v <= 0 for v in t.constraints.values())
        quality = min(1.0, max(0.0, float(quality)))
        lo, hi = wilson_interval(round(quality * ci_n), ci_n) if ci_n else (m.accuracy_ci_low, m.accuracy_ci_high)
        points.append(TrialPoint(
            number=t.number, accuracy=quality, tokens_per_s=float(tps), feasible=feasible, state=state,
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
