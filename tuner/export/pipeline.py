"""`tuner export`: pick → confirm → write → register.

The pick is made among trials resolved feasible on validation (tuner.verdict.selection); only the test split, which
tuning never touched, can confirm it (`confirm.confirm_on_test`). A refused pick is not written unless `force`.
`register=NAME` adds the profile as a version of registered model NAME with alias `candidate`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from decoder import DecodeConfig, save_profile

from .. import __version__
from ..app.context import Context
from ..app.preflight import EXPORT, default_profile_path, preflight
from ..base import hardware
from ..base.errors import RefusedError, TunerError
from ..base.urls import redact_url
from ..storage.record import BaselineProvenance, ProfileMeta, StudyProvenance, StudyRecord, TrialRecord
from ..verdict.constraint import Constraint
from ..verdict.pareto import TrialPoint
from ..verdict.selection import PickError, pick
from .confirm import TestResult, baseline_speed, confirm_on_test
from .finishing import finish_front


class ExportError(TunerError):
    """No feasible trial, or nothing meets the pick rule."""


class ExportRefused(RefusedError):
    """The pick failed its held-out confirmation (and --force was not given); the CLI exits 3."""


@dataclass
class ExportReport:
    path: Path | None
    pick: TrialPoint
    config: DecodeConfig
    test: TestResult
    registered: Any = None  # tuner.tracking.registry.RegisteredProfile when `register` was given

    @property
    def confirmed(self) -> bool:
        return self.test.confirmation.confirmed


def export(ctx: Context, *, rule: str = "knee", max_drop: float | None = None,
           out: str | Path | None = None, force: bool = False, overwrite: bool = False, on_progress=None,
           on_stage: Callable[[str], None] | None = None, register: str | None = None) -> ExportReport:
    """Pick, confirm, write, and optionally register, every input checked before the test split is decoded
    (`tuner.app.preflight.EXPORT`). `on_progress(seen, total, correct)` follows each decode; `on_stage(line)`
    announces each step in one line (what a log file shows)."""
    stage = on_stage or (lambda line: None)
    preflight(ctx, EXPORT, max_drop=max_drop, out=out, overwrite=overwrite, register=register)
    constraint = ctx.spec.constraint.with_margin(max_drop)
    study = ctx.load_study(write=True)
    points, finished = finish_front(ctx, study, constraint, rule, stage)
    chosen = choose(study, points, rule, constraint)
    config = DecodeConfig.from_dict(TrialRecord.read(study.trials[chosen.number]).config or {})
    test = confirm_on_test(ctx, study, chosen, config, constraint, baseline_speed=baseline_speed(study, points),
                           on_progress=on_progress, stage=stage)
    refuse_unless_confirmed(test, chosen, constraint, force)
    meta = profile_meta(ctx, study, chosen, rule, constraint, test, forced=force and not test.confirmation.confirmed,
                        finishing=finished.to_dict())
    path = write(ctx, study, config, meta, out, overwrite)
    registered = None
    if register:
        registered = _register(ctx, register, path, StudyRecord(study).parent_run_id, meta)
        stage(f"export: registered as version {registered.version} of {register!r} (alias "
              f"{registered.alias}: {registered.uri})")
    return ExportReport(path=path, pick=chosen, config=config, test=test, registered=registered)


def choose(study: optuna.Study, points: list[TrialPoint], rule: str, constraint: Constraint) -> TrialPoint:
    """The trial `rule` picks among those `constraint` judges feasible on validation."""
    try:
        return pick(points, rule, constraint)
    except PickError as exc:
        raise ExportError(f"study {study.study_name}: {exc}") from None


def refuse_unless_confirmed(test: TestResult, chosen: TrialPoint, constraint: Constraint, force: bool) -> None:
    if test.confirmation.confirmed or force:
        return
    p = test.confirmation.paired
    raise ExportRefused(
        f"trial {chosen.number} is not confirmed on the held-out test split: its paired {constraint.quantity} against "
        f"{constraint.baseline} is {100 * p.estimate:.1f} points with a {p.confidence:.0%} upper bound of "
        f"{100 * p.upper:.1f} > the {constraint.max_drop:g}-point margin (n={p.n}); not exported "
        "(--force writes it anyway)")


def profile_meta(ctx: Context, study: optuna.Study, chosen: TrialPoint, rule: str, constraint: Constraint,
                 test: TestResult, *, forced: bool, finishing: dict | None = None) -> ProfileMeta:
    """What the profile records of its origin: model, task and splits, the study and its pick, the test."""
    spec, model = ctx.spec, ctx.model
    split_val, split_test = ctx.task.split_info("validation"), ctx.task.split_info("test")
    trial = TrialRecord.read(study.trials[chosen.number])
    baseline_cfg = spec.reference_config(spec.reference(constraint.baseline))
    return ProfileMeta(
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), tuner_version=__version__,
        confirmed=test.confirmation.confirmed, forced=forced, promise=constraint.rule(),
        model={"id": spec.model, **{k: v for k, v in model.source.items() if k != "path"}},
        task={"name": spec.task, "options": spec.task_options, "few_shot": spec.few_shot,
              "chat_template": spec.chat_template,
              # "used" = the first N items of the split whose hash is given; the pick raced over the first
              # `used_by_pick` of the validation ones.
              "validation": {"size": split_val.size, "used": min(spec.validation_size or split_val.size,
                                                                 split_val.size),
                             "used_by_pick": chosen.n, "hash": split_val.content_hash, "source": split_val.source},
              "test": {"size": split_test.size, "used": len(ctx.items("test")), "hash": split_test.content_hash,
                       "source": split_test.source}},
        study=StudyProvenance(
            name=study.study_name, storage=redact_url(ctx.options.storage), trial=chosen.number, pick=rule,
            pick_rule=f"{rule} among trials whose {constraint.confidence:.0%} upper bound of the paired validation "
                      f"{constraint.quantity} is within {constraint.max_drop:g} points",
            reference=chosen.label, spec_fingerprint=spec.fingerprint(), finishing=finishing,
            baseline=BaselineProvenance(constraint.baseline, baseline_cfg.to_dict())),
        validation={**trial.metrics.to_dict(), "paired_estimate_accuracy": chosen.accuracy},
        test=test.figures, hardware=hardware.describe(model.device))


def write(ctx: Context, study: optuna.Study, config: DecodeConfig, meta: ProfileMeta, out: str | Path | None,
          overwrite: bool) -> Path:
    """The profile file (checked again: it may have appeared meanwhile), logged to the study's MLflow run."""
    path = Path(out) if out else default_profile_path(study.study_name)
    save_profile(path, config, meta.to_dict(), overwrite=overwrite)
    parent = StudyRecord(study).parent_run_id
    if parent:
        tracker = ctx.open_tracker()
        tracker.log_artifact(parent, str(path), "profiles")
        tracker.set_tags(parent, {"dtune.last_export": path.name, "dtune.last_export_trial": str(meta.study.trial)})
    return path


def _register(ctx: Context, name: str, path: Path, parent: str | None, meta: ProfileMeta) -> Any:
    """The profile as a new version of `name` (alias candidate); the profile file stays written either way."""
    from ..tracking.registry import RegistryError, register_profile, registry_client

    if not parent:
        raise RegistryError(f"profile written to {path}, but not registered: the study has no MLflow run to attach "
                            "it to (was tracking unavailable during `run`?)")
    tracker = ctx.open_tracker()
    registered = register_profile(registry_client(tracker.tracking_uri), name, path, parent, meta)
    tracker.set_tags(parent, {"dtune.last_registered": f"{name} v{registered.version}"})
    return registered
