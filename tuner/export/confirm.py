"""Export's confirmation: the pick and the baseline decoded on the same held-out test items, judged by the
declared rule (`tuner.verdict.selection.confirm`). The baseline's test evaluation is stored with the study, keyed by
its configuration, the model's fingerprint and the split's content and size, so a second export decodes only its
pick."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import optuna

from decoder import DecodeConfig

from ..app.context import Context
from ..storage.record import StudyRecord, TestFigures, test_key
from ..study.baseline import cached_test, store_test
from ..study.space import config_key
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
    """Decode the pick (and, unless stored, the baseline) on the test split and apply the declared rule."""
    spec, task, items, evaluator = ctx.spec, ctx.task, ctx.items("test"), ctx.evaluator
    baseline_cfg = spec.reference_config(spec.reference(constraint.baseline))
    stage(f"export: decoding the pick, trial {chosen.number}, on {len(items)} test items")
    picked = evaluator.evaluate(items, config, chunk_size=spec.chunk_size, on_progress=on_progress)
    stage(f"export: pick done: accuracy {picked.accuracy:.1%} · {picked.tokens_per_s:.1f} tokens/s")
    key = test_key(config_key(baseline_cfg), ctx.model.source.get("fingerprint"),
                   task.split_info("test").content_hash, len(items))
    stored = cached_test(study, key)
    if stored is None or (not constraint.needs_labels and len(stored.evidence.answers) != len(items)):
        stage(f"export: decoding the baseline ({constraint.baseline}) on the same {len(items)} test items")
        base = evaluator.evaluate(items, baseline_cfg, chunk_size=spec.chunk_size, on_progress=on_progress)
        base_evidence, base_metrics, reused = base.evidence, base.metrics(), None
        store_test(study, key, base_evidence, base_metrics, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    else:
        base_evidence, base_metrics, reused = stored.evidence, stored.metrics, stored.created
        stage(f"export: baseline's test evaluation reused (decoded {reused}, same config, model, split and size)")
    verdict = confirm(picked.evidence, base_evidence, constraint)
    base_tps = base_metrics.get("tokens_per_s")
    labelled = picked.labelled and len(base_evidence.outcomes) == len(items)
    figures = TestFigures(
        pick=picked.metrics(), baseline={**base_metrics, "reused_from": reused}, non_inferiority=verdict.rule(),
        paired_test={"test": "exact McNemar", **mcnemar_exact(picked.outcomes, base_evidence.outcomes)}
        if labelled else {},
        speedup_tokens_per_s=chosen.tokens_per_s / baseline_speed if baseline_speed else None,
        speedup_test_decode=picked.tokens_per_s / base_tps if base_tps else None)
    return TestResult(figures, verdict)


def baseline_speed(study: optuna.Study, points: list[TrialPoint]) -> float | None:
    """The baseline trial's tokens/s in the study (its robust figure on validation), for the study's speed-up."""
    summary = StudyRecord(study).baseline
    by_number = {p.number: p for p in points}
    if summary is None or summary.trial not in by_number:
        return None
    return by_number[summary.trial].tokens_per_s or None
