"""Export's confirmation: the pick and the baseline decoded on the same held-out test items in stages, judged at
each planned look by the declared group-sequential rule (tuner.verdict.sequential, through `Constraint.verdict`). The baseline's test evidence is a shared ledger like the
validation one (tuner.study.baseline): decoded once per model × test split × baseline settings, reused by a second
export and by every other study of the same model and task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from decoder import DecodeConfig

from ..app.context import Context
from ..storage.locks import held_study_lock
from ..storage.optuna_internals import backend
from ..storage.record import StudyRecord, TestFigures
from ..storage.shared_ledger import SharedLedger
from ..study.baseline import BaselineLedger
from ..study.evaluate import EvalResult
from ..study.objective import baseline_metrics
from ..study.space import config_key
from ..verdict.constraint import Constraint, Evidence
from ..verdict.pareto import TrialPoint
from ..verdict.selection import Confirmation
from ..verdict.sequential import Decision, Design, confirm_in_stages
from ..verdict.stats import mcnemar_exact, wilson_interval

Progress = Callable[[int, int, int], None]


@dataclass(frozen=True)
class TestResult:
    figures: TestFigures
    confirmation: Confirmation


def confirm_on_test(ctx: Context, study: optuna.Study, chosen: TrialPoint, config: DecodeConfig,
                    constraint: Constraint, *, baseline_speed: float | None, on_progress: Progress | None,
                    stage: Callable[[str], None], design: Design | None = None) -> TestResult:
    """Decode the pick and the baseline on the test split in stages (`design`, tuner.verdict.sequential; default:
    a look at every tenth, O'Brien-Fleming spending) and stop at the first look that resolves the margin either
    way. The pick's evidence is stored after every stage, so a killed export resumes where it was."""
    spec, items, evaluator = ctx.spec, ctx.items("test"), ctx.evaluator
    design = design or Design.for_constraint(constraint)
    ledger = test_ledger(ctx, study, on_progress)
    stored_base = ledger.state().n
    parts: list[EvalResult] = []

    def decode_pick(start: int, stop: int) -> Evidence:
        progress = None if on_progress is None else (
            lambda seen, _total, correct: on_progress(start + seen, len(items), correct))  # over the whole split
        parts.append(evaluator.evaluate(items[start:stop], config, chunk_size=spec.chunk_size, warmup=not parts,
                                        on_progress=progress))
        return parts[-1].evidence

    def look(decision: Decision) -> None:
        bound = decision.bound
        figures = (f"{constraint.quantity} {100 * bound.estimate:.1f} pts, {decision.confidence:.2%} upper bound "
                   f"{100 * bound.upper:.1f}" if hasattr(bound, "estimate") else "no error spent at this look")
        stage(f"export: look {decision.look + 1} on {decision.n} of {len(items)} test items: {figures} vs margin "
              f"{constraint.max_drop:g} → {decision.action}")

    stage(f"export: confirming trial {chosen.number} on up to {len(items)} test items in stages "
          f"({design.to_dict(len(items))['spending']} spending, {len(design.stages(len(items)))} looks)")
    if stored_base:
        stage(f"export: the shared baseline ledger holds {stored_base} of the {len(items)} test items")
    key = f"{config_key(config)}:{ctx.baseline_key('test')}:{design.key(len(items))}"
    staged = confirm_in_stages(design, len(items), constraint, pick=decode_pick,
                               baseline=lambda n: ledger.ensure(n).evidence(n), store=StudyStages(study, key),
                               on_look=look)
    if staged.resumed:
        stage(f"export: {staged.resumed} of the pick's test items were decoded by an earlier export of this pick "
              "(stored in the study)")
    n = staged.items
    if stored_base >= n:
        stage(f"export: baseline's test evaluation reused (the shared baseline ledger held all {n} test items this "
              "confirmation used; none decoded again)")
    base = ledger.state().head(n)
    pick_evidence = StudyRecord(study).export_stages(key).head(n)
    verdict = staged.confirmation(constraint)
    base_metrics = baseline_metrics(base, constraint.confidence)
    pick_metrics = evidence_metrics(pick_evidence, EvalResult.concat(parts) if parts else None)
    reused = f"{min(stored_base, n)} of {n} items from the shared baseline ledger" if stored_base else None
    labelled = len(pick_evidence.outcomes) == n and len(base.evidence().outcomes) == n
    base_tps, pick_tps = base_metrics.get("tokens_per_s"), pick_metrics.get("tokens_per_s")
    figures = TestFigures(
        pick=pick_metrics, baseline={**base_metrics, "reused_from": reused}, non_inferiority=verdict.rule(),
        paired_test={"test": "exact McNemar", **mcnemar_exact(pick_evidence.outcomes, base.evidence().outcomes)}
        if labelled else {}, sequential=staged.to_dict(),
        speedup_tokens_per_s=chosen.tokens_per_s / baseline_speed if baseline_speed else None,
        speedup_test_decode=pick_tps / base_tps if base_tps and pick_tps else None)
    return TestResult(figures, verdict)


def evidence_metrics(evidence: Evidence, decoded: EvalResult | None) -> dict[str, Any]:
    """The pick's test figures: accuracy with its interval on the items the verdict rests on (with labels), and
    the speed and cost of what this export decoded."""
    out: dict[str, Any] = {**(decoded.metrics() if decoded is not None else {}), "n": evidence.n}
    if len(evidence.outcomes) == evidence.n and evidence.n:
        correct = sum(evidence.outcomes)
        lo, hi = wilson_interval(correct, evidence.n)
        out.update(accuracy=correct / evidence.n, accuracy_ci_low=lo, accuracy_ci_high=hi, correct=correct)
    return out


class StudyStages:
    """Where a staged confirmation keeps the pick's test evidence: in the study, under `key` (pick, model, split,
    design), so that an export killed mid-stage resumes there."""

    def __init__(self, study: optuna.Study, key: str) -> None:
        self.record, self.key = StudyRecord(study), key

    def load(self) -> Evidence | None:
        return self.record.export_stages(self.key)

    def save(self, evidence: Evidence) -> None:
        self.record.set_export_stages(self.key, evidence)


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
