"""`tuner export`: pick a Pareto point, confirm it on the held-out test split against the baseline, write a profile.

The validation split chose the point, so its validation accuracy is optimistically biased; only the test split,
which tuning never touched, can confirm it. Pick and baseline are decoded on the same test items, so the
comparison is paired (exact McNemar test). A pick that loses more than the constraint's `max_drop` points on
test is refused unless forced — a profile is a promise to production.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from decoder import DecodeConfig, save_profile

from . import __version__, hardware
from .context import Context
from .errors import RefusedError, TunerError
from .pareto import TrialPoint, pareto_front, pick_fastest, pick_knee
from .spec import StudySpec
from .stats import mcnemar_exact
from .study import baseline_accuracy, trial_points
from .urls import redact_url

PICKS = ("knee", "fastest")


class ExportError(TunerError):
    """No feasible trial, or nothing meets the pick rule."""


class ExportRefused(RefusedError):
    """The pick failed its held-out confirmation (and --force was not given); the CLI exits 3."""


@dataclass
class ExportReport:
    path: Path | None
    pick: TrialPoint
    config: DecodeConfig
    test: dict[str, Any]
    confirmed: bool


def choose(study: optuna.Study, spec: StudySpec, rule: str, max_drop: float | None) -> TrialPoint:
    points = trial_points(study, spec.constraint)
    front = pareto_front(points)
    if not front:
        raise ExportError(f"study {study.study_name} has no complete feasible trial yet")
    if rule == "knee":  # accuracy weighed in units of the drop the constraint allows
        return pick_knee(front, accuracy_scale=spec.constraint.margin)
    if rule == "fastest":
        base = baseline_accuracy(study)
        if base is None:
            raise ExportError("the baseline trial has not finished, so 'fastest' has no accuracy bar")
        constraint = spec.constraint if max_drop is None else dataclasses.replace(spec.constraint, max_drop=max_drop)
        pick = pick_fastest(front, constraint.bar(base))
        if pick is None:
            raise ExportError(f"no Pareto point within {constraint.max_drop} points of the baseline's {base:.1%}")
        return pick
    raise ExportError(f"unknown pick rule {rule!r}; use one of {', '.join(PICKS)}")


def export(ctx: Context, *, rule: str = "knee", max_drop: float | None = None,
           out: str | Path | None = None, force: bool = False, on_progress=None) -> ExportReport:
    spec = ctx.spec
    study = ctx.load_study()
    pick = choose(study, spec, rule, max_drop)
    trial = study.trials[pick.number]
    config = DecodeConfig.from_dict(trial.user_attrs["config"])
    baseline_cfg = spec.reference_config(spec.reference(spec.constraint.baseline))
    drop_allowed = spec.constraint.max_drop if max_drop is None else max_drop

    task, items, evaluator, model = ctx.task, ctx.items("test"), ctx.evaluator, ctx.model
    picked = evaluator.evaluate(items, config, on_progress=on_progress)
    base = evaluator.evaluate(items, baseline_cfg, on_progress=on_progress)
    paired = mcnemar_exact(picked.outcomes, base.outcomes)
    drop_points = 100 * (base.accuracy - picked.accuracy)
    confirmed = drop_points <= drop_allowed + 1e-9
    test = {"pick": picked.metrics(), "baseline": base.metrics(), "paired_test": {"test": "exact McNemar", **paired},
            "accuracy_drop_points": drop_points, "max_drop_points": drop_allowed,
            "speedup_tokens_per_s": picked.tokens_per_s / base.tokens_per_s if base.tokens_per_s else None}
    if not confirmed and not force:
        raise ExportRefused(
            f"trial {pick.number} loses {drop_points:.1f} points against {spec.constraint.baseline} on the held-out "
            f"test split ({picked.accuracy:.1%} vs {base.accuracy:.1%}, allowed {drop_allowed}); not exported "
            "(--force writes it anyway)")
    split_val = task.split_info("validation")
    split_test = task.split_info("test")
    meta = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tuner_version": __version__,
        "confirmed": confirmed,
        "forced": bool(force and not confirmed),
        "model": {"id": spec.model, **{k: v for k, v in model.source.items() if k != "path"}},
        "task": {"name": spec.task, "options": spec.task_options, "few_shot": spec.few_shot,
                 "chat_template": spec.chat_template,
                 # "used" = the first N items of the split whose hash is given (tuning and confirmation runs may
                 # take a prefix of the split).
                 "validation": {"size": split_val.size, "used": min(spec.validation_size or split_val.size,
                                                                    split_val.size),
                                "hash": split_val.content_hash, "source": split_val.source},
                 "test": {"size": split_test.size, "used": len(items), "hash": split_test.content_hash,
                          "source": split_test.source}},
        "study": {"name": study.study_name, "storage": redact_url(ctx.options.storage), "trial": pick.number,
                  "pick": rule, "reference": pick.label, "spec_fingerprint": spec.fingerprint(),
                  "baseline": {"name": spec.constraint.baseline, "config": baseline_cfg.to_dict()}},
        "validation": trial.user_attrs.get("metrics", {}),
        "test": test,
        "hardware": hardware.describe(model.device),
    }
    path = Path(out) if out else Path("profiles") / f"{_slug(study.study_name)}-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    save_profile(path, config, meta)
    parent = study.user_attrs.get("mlflow_parent_run_id")
    if parent:
        tracker = ctx.open_tracker()
        tracker.log_artifact(parent, str(path), "profiles")
        tracker.set_tags(parent, {"dtune.last_export": path.name, "dtune.last_export_trial": str(pick.number)})
    return ExportReport(path=path, pick=pick, config=config, test=test, confirmed=confirmed)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)
