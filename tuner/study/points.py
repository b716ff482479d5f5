"""A study's trials as points of the accuracy / tokens-per-second plane, each judged by the constraint against the
baseline ledger on the items it used."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from decoder.config import KNOBS

from ..storage.record import LedgerState, StudyRecord, TrialRecord, bits, read_trials
from ..storage.shared_ledger import study_ledger
from ..verdict.constraint import Constraint, ConstraintError, Verdict
from ..verdict.pareto import TrialPoint, pareto_front
from ..verdict.stats import wilson_interval


def trial_points(study: optuna.Study, constraint: Constraint) -> list[TrialPoint]:
    """Every finished trial as a TrialPoint.

    Its quality is the paired estimate of its accuracy (the baseline's accuracy on all its ledger items minus the
    trial's drop on the items it used, so trials that raced 200 and 1,600 items sit on one scale), or without
    labels its agreement with the baseline; the interval is a proportion's (Wilson) at that value over its items.
    `drop*` carry the constrained quantity's bound and feasible is `constraint.verdict` on it, re-judged from the
    stored evidence (what finishing added included), so every reader judges every trial alike."""
    ledger = study_ledger(study)
    extensions = StudyRecord(study).extensions()
    points = []
    for t in read_trials(study, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        state = t.state.name
        ext = extensions.get(t.number)
        if ext is not None and ext.evidence.n > t.evidence.n:  # raced further by finishing, after the study
            t = dataclasses.replace(t, outcomes=bits(ext.evidence.outcomes), answers=ext.evidence.answers)
            state = "COMPLETE" if ext.complete else state
        j = _judged(t, ledger, constraint)
        m = t.metrics
        lo, hi = (wilson_interval(round(j.quality * j.items), j.items) if j.items
                  else (m.accuracy_ci_low, m.accuracy_ci_high))
        points.append(TrialPoint(
            number=t.number, accuracy=j.quality, tokens_per_s=float(t.values[1] if t.values else m.tokens_per_s or 0),
            feasible=j.feasible, state=state, params=shown_params(t), label=t.reference, nfe=m.nfe, ci_low=lo,
            ci_high=hi, n=t.evidence.n or m.n, drop=j.bound.estimate, drop_lower=j.bound.lower,
            drop_upper=j.bound.upper, discordance=j.bound.discordance, speed_spread=m.speed_spread,
            speed_noisy=m.speed_noisy, tokens_per_s_low=m.tokens_per_s_low, tokens_per_s_high=m.tokens_per_s_high))
    return points


@dataclass(frozen=True)
class _Stored:
    """A bound as a trial recorded it (an old study's trial, without the evidence to re-judge it)."""

    estimate: float | None
    lower: float | None
    upper: float | None
    discordance: float | None


@dataclass(frozen=True)
class _Judgement:
    quality: float  # accuracy, or agreement with the baseline without labels
    feasible: bool
    bound: Any  # the constrained quantity's bound (PairedDrop, Disagreement, or as stored)
    items: int | None  # the items the quality's interval rests on


def _judged(t: TrialRecord, ledger: LedgerState, constraint: Constraint) -> _Judgement:
    m = t.metrics
    own = float(t.values[0] if t.values else m.accuracy or 0.0)
    if t.reference == constraint.baseline and ledger.n:
        zero = _Stored(0.0, 0.0, 0.0, 0.0)
        return _Judgement(ledger.accuracy if ledger.labelled else 1.0, True, zero, ledger.n)
    paired = None
    if t.evidence.n and ledger.n >= t.evidence.n:
        with contextlib.suppress(ConstraintError):  # evidence the metric needs was not stored (an old trial)
            paired = constraint.compare(t.evidence, ledger.evidence())
    if paired is None:  # no per-item evidence (an old study): the sampler's constraint is all there is
        feasible = bool(t.constraints) and all(v <= 0 for v in t.constraints.values())
        return _Judgement(_clip(own), feasible, _Stored(m.drop, m.drop_lower, m.drop_upper, m.discordance),
                          t.evidence.n or m.n)
    k, base = t.evidence.n, ledger.evidence(t.evidence.n)
    if ledger.labelled and t.outcomes:
        quality = ledger.accuracy - (sum(base.outcomes) - sum(t.evidence.outcomes)) / k
    else:
        quality = 1.0 - sum(a != b for a, b in zip(t.answers, base.answers, strict=True)) / k
    return _Judgement(_clip(quality), constraint.verdict(paired) is Verdict.FEASIBLE, paired, k)


def _clip(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


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
