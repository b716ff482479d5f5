"""Before the pick, export races the front's fast, still undecided trials to a verdict (tuner.verdict.finishing) on
the validation pool, so that a study whose budget ended on them exports the faster point whenever one is feasible.

What a trial earns here is kept in the study (`StudyRecord.extensions`), so `show`, a second export and the
points every command reads judge it on all its items.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import optuna

from decoder import DecodeConfig

from ..app.context import Context
from ..storage.locks import held_study_lock
from ..storage.optuna_internals import backend
from ..storage.record import Extension, StudyRecord, TrialRecord
from ..storage.shared_ledger import SharedLedger
from ..study.baseline import BaselineLedger
from ..study.points import trial_points
from ..verdict.constraint import Constraint, Evidence, Verdict
from ..verdict.finishing import Finished, finish
from ..verdict.pareto import TrialPoint
from ..verdict.racing import rungs


def finish_front(ctx: Context, study: optuna.Study, constraint: Constraint, rule: str,
                 stage: Callable[[str], None], budget: int | None = None) -> tuple[list[TrialPoint], Finished]:
    """The study's points after its open trials were raced on (within `budget` validation items, default the
    pool), and what finishing did."""
    spec, items, evaluator = ctx.spec, ctx.items("validation"), ctx.evaluator
    points = trial_points(study, constraint)
    record = StudyRecord(study)
    key = ctx.baseline_key("validation")
    storage = backend(study)
    lock = (lambda: held_study_lock(storage, f"ledger:{key}", timeout_s=3600)) if hasattr(storage, "url") else None
    baseline = spec.reference_config(spec.reference(constraint.baseline))
    ledger = BaselineLedger(SharedLedger(study, key), baseline, evaluator, items, chunk_size=spec.chunk_size,
                            lock=lock)
    extensions = record.extensions()
    evidence = {p.number: _longer(TrialRecord.read(study.trials[p.number]).evidence, extensions.get(p.number))
                for p in points}

    def extend(point: TrialPoint, n: int) -> TrialPoint:
        config = DecodeConfig.from_dict(TrialRecord.read(study.trials[point.number]).config or {})
        stage(f"export: finishing: trial {point.number} raced from {point.n} to {n} validation items")
        more = evaluator.evaluate(items[point.n or 0 : n], config, chunk_size=spec.chunk_size)
        have = evidence[point.number].head(point.n or 0)
        evidence[point.number] = Evidence(have.outcomes + more.evidence.outcomes, have.answers + more.evidence.answers)
        paired = constraint.compare(evidence[point.number], ledger.ensure(n).evidence(n))
        complete = n == len(items) and constraint.verdict(paired) is Verdict.FEASIBLE
        record.set_extension(point.number, Extension(evidence[point.number], complete))
        return dataclasses.replace(point, n=n, drop=paired.estimate, drop_lower=paired.lower,
                                   drop_upper=paired.upper, discordance=paired.discordance)

    done = finish(points, constraint, rule=rule, rungs=rungs(len(items), spec.race), extend=extend,
                  budget=len(items) if budget is None else budget)
    if done.races:
        stage(f"export: finishing raced {len(done.races)} trial(s) on {done.items} validation items: " + ", ".join(
            f"trial {t} {a}→{b} items, {v}" for t, a, b, v in done.races))
        points = trial_points(study, constraint)  # re-judged on what they earned, as every reader will
    return points, done


def _longer(own: Evidence, extension: Extension | None) -> Evidence:
    return extension.evidence if extension is not None and extension.evidence.n > own.n else own
