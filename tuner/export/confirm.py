"""Export's confirmation: the pick and the baseline decoded on the same held-out test items, judged by the
declared rule (`tuner.verdict.selection.confirm`). The baseline's test evidence is a shared ledger like the
validation one (tuner.study.baseline): decoded once per model × test split × baseline settings, reused by a second
export and by every other study of the same model and task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna

from decoder import DecodeConfig

from ..app.context import Context
from ..storage.locks import held_study_lock
from ..storage.optuna_internals import backend
from ..storage.record import StudyRecord, TestFigures
from ..storage.shared_ledger import SharedLedger
from ..study.baseline import BaselineLedger
from ..study.objective import baseline_metrics
from ..verdict.constraint import Constraint
from ..verdict.pareto import TrialPoint
from ..verdict.selection import Confirmation, confirm
from ..verdict.stats import mcnemar_exact

Progress = Callable[[int, int, int], None]


@dataclass(frozen=True)
class TestResult:
    figures: TestFigures
    confirmation: Confirmation


def confirm_on_test(ctx: Context, study: optuna.Study, chosen: TrialPoint, config: DecodeConfig,
                    constraint: Constraint, *, baseline_speed: float | None, on_progress: Progress | None,
                    stage: Callable[[str], None]) -> TestResult:
    """Decode the pick (and the baseline's items the shared ledger lacks) on the test split; apply the rule."""
    spec, items, evaluator = ctx.spec, ctx.items("test"), ctx.evaluator
    stage(f"export: decoding the pick, trial {chosen.number}, on {len(items)} test items")
    picked = evaluator.evaluate(items, config, chunk_size=spec.chunk_size, on_progress=on_progress)
    stage(f"export: pick done: {picked.tokens_per_s:.1f} tokens/s"
          + (f", accuracy {picked.accuracy:.1%}" if picked.labelled else ""))
    ledger = test_ledger(ctx, study, on_progress)
    stored = ledger.state().n
    if stored < len(items):
        stage(f"export: decoding the baseline ({constraint.baseline}) on {len(items) - stored} of the same "
              f"{len(items)} test items (the shared ledger holds {stored})")
    else:
        stage(f"export: baseline's test evaluation reused (the shared baseline ledger holds all {len(items)} test items)")
    base = ledger.ensure(len(items)).head(len(items))
    base_evidence = base.evidence()
    verdict = confirm(picked.evidence, base_evidence, constraint)
    base_metrics = baseline_metrics(base, constraint.confidence)
    base_tps = base_metrics.get("tokens_per_s")
    labelled = picked.labelled and len(base_evidence.outcomes) == len(items)
    reused = f"{min(stored, len(items))} of {len(items)} items from the shared baseline ledger" if stored else None
    figures = TestFigures(
        pick=picked.metrics(), baseline={**base_metrics, "reused_from": reused}, non_inferiority=verdict.rule(),
        paired_test={"test": "exact McNemar", **mcnemar_exact(picked.outcomes, base_evidence.outcomes)}
        if labelled else {},
        speedup_tokens_per_s=chosen.tokens_per_s / baseline_speed if baseline_speed else None,
        speedup_test_decode=picked.tokens_per_s / base_tps if base_tps else None)
    return TestResult(figures, verdict)


def test_ledger(ctx: Context, study: optuna.Study, on_progress: Progress | None) -> BaselineLedger:
    """The baseline's shared ledger on the test split, grown under its own lock."""
    spec = ctx.spec
    key = ctx.baseline_key("test")
    config = spec.reference_config(spec.reference(spec.constraint.baseline))
    storage = backend(study)
    lock = (lambda: held_study_lock(storage, f"ledger:{key}", timeout_s=3600)) if hasattr(storage, "url") else None
    return BaselineLedger(SharedLedger(study, key), config, ctx.evaluator, ctx.items("test"),
                          chunk_size=spec.chunk_size, lock=lock, on_progress=on_progress)


def baseline_speed(study: optuna.Study, points: list[TrialPoint]) -> float | None:
    """The baseline trial's tokens/s in the study (its robust figure on validation), for the study's speed-up."""
    summary = StudyRecord(study).baseline
    by_number = {p.number: p for p in points}
    if summary is None or summary.trial not in by_number:
        return None
    return by_number[summary.trial].tokens_per_s or None
