"""`tuner export`: pick a trial by its paired bound on validation, confirm it on the held-out test split by the
declared non-inferiority rule (tuner.selection), write a profile, log it to the study's MLflow run.

The validation split chose the trial, so only the test split, which tuning never touched, can confirm it. Pick and
baseline are decoded on the same test items. The baseline's test evaluation is stored with the study (keyed by its
configuration, the model's fingerprint and the split's hash and size), so a second export decodes only its pick;
the profile says which figures were reused. A pick the rule refuses is not written unless `--force`.
`register=NAME` then adds the profile as a version of registered model NAME with alias `candidate`
(tuner.tracking.registry).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from decoder import DecodeConfig, save_profile
from decoder.profile import check_writable

from . import __version__, hardware
from .baseline import cached_test, store_test, test_key
from .context import Context
from .errors import RefusedError, TunerError
from .pareto import TrialPoint
from .selection import PickError, confirm, pick
from .spec import StudySpec
from .stats import mcnemar_exact
from .study import config_key, trial_points
from .urls import redact_url


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
    registered: Any = None  # tuner.tracking.registry.RegisteredProfile when `register` was given


def choose(study: optuna.Study, spec: StudySpec, rule: str, max_drop: float | None) -> TrialPoint:
    """The trial `rule` picks among those resolved within the margin (`max_drop` overrides the spec's)."""
    constraint = spec.constraint if max_drop is None else dataclasses.replace(spec.constraint, max_drop=max_drop)
    try:
        return pick(trial_points(study, spec.constraint), rule, constraint)
    except PickError as exc:
        raise ExportError(f"study {study.study_name}: {exc}") from None


def check_max_drop(max_drop: float | None) -> None:
    """A margin in accuracy points: a number in [0, 100] (a negative one could confirm nothing)."""
    if max_drop is None:
        return
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not 0 <= max_drop <= 100:
        raise ExportError(f"max_drop must be accuracy points in [0, 100], got {max_drop!r}")


def export(ctx: Context, *, rule: str = "knee", max_drop: float | None = None,
           out: str | Path | None = None, force: bool = False, overwrite: bool = False, on_progress=None,
           on_stage: Callable[[str], None] | None = None, register: str | None = None) -> ExportReport:
    """Pick, confirm, write, and optionally register. Every input is checked before the test split is decoded:
    the margin, where the profile goes (never over a file dtune did not write; over an earlier profile only with
    `overwrite`), the registry name, the services, the sandbox, the model's checkpoint and the study itself.
    `on_progress(seen, total, correct)` follows each decode; `on_stage(line)` announces each step in one line
    (what a log file shows)."""
    spec = ctx.spec
    stage = on_stage or (lambda line: None)
    check_max_drop(max_drop)
    check_writable(out if out is not None else _new_profile_path(ctx.study_name), overwrite=overwrite)
    ctx.check_sandbox()  # before the study, the model or any split: a code task without isolation stops here
    ctx.check_services(create=False, write=True)
    tracker = None
    if register:  # a bad name or an unreachable registry must fail before any decoding
        from .tracking.registry import check_name

        check_name(register)
        tracker = ctx.open_tracker()
    constraint = spec.constraint if max_drop is None else dataclasses.replace(spec.constraint, max_drop=max_drop)
    study = ctx.load_study(write=True)
    chosen = choose(study, spec, rule, max_drop)
    ctx.check_device()
    ctx.items("test")
    ctx.check_model()  # the device, the test rows and the checkpoint, before any split is decoded
    trial = study.trials[chosen.number]
    config = DecodeConfig.from_dict(trial.user_attrs["config"])
    baseline_cfg = spec.reference_config(spec.reference(constraint.baseline))

    task, items, evaluator, model = ctx.task, ctx.items("test"), ctx.evaluator, ctx.model
    split_val, split_test = task.split_info("validation"), task.split_info("test")
    stage(f"export: decoding the pick, trial {chosen.number} ({rule}), on {len(items)} test items")
    picked = evaluator.evaluate(items, config, chunk_size=spec.chunk_size, on_progress=on_progress)
    stage(f"export: pick done: accuracy {picked.accuracy:.1%} · {picked.tokens_per_s:.1f} tokens/s")
    key = test_key(config_key(baseline_cfg), model.source.get("fingerprint"), split_test.content_hash, len(items))
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    cached = cached_test(study, key)
    if cached is None:
        stage(f"export: decoding the baseline ({constraint.baseline}) on the same {len(items)} test items")
        base = evaluator.evaluate(items, baseline_cfg, chunk_size=spec.chunk_size, on_progress=on_progress)
        base_outcomes, base_metrics = base.outcomes, base.metrics()
        store_test(study, key, base_outcomes, base_metrics, now)
        reused = None
    else:
        base_outcomes, base_metrics = [o == "1" for o in cached["outcomes"]], cached["metrics"]
        reused = cached["created"]
        stage(f"export: baseline's test evaluation reused (decoded {reused}, same config, model, split and size)")
    verdict = confirm(picked.outcomes, base_outcomes, constraint)
    points = {p.number: p for p in trial_points(study, spec.constraint)}
    base_trial = study.user_attrs.get("baseline", {}).get("trial")
    study_speedup = (chosen.tokens_per_s / points[base_trial].tokens_per_s
                     if base_trial in points and points[base_trial].tokens_per_s else None)
    test = {"pick": picked.metrics(), "baseline": {**base_metrics, "reused_from": reused},
            "non_inferiority": verdict.rule(),
            "paired_test": {"test": "exact McNemar", **mcnemar_exact(picked.outcomes, base_outcomes)},
            # Speeds of the study (the trials' robust figures on validation) and of this export's test decode.
            "speedup_tokens_per_s": study_speedup,
            "speedup_test_decode": (picked.tokens_per_s / base_metrics["tokens_per_s"]
                                    if base_metrics.get("tokens_per_s") else None)}
    if not verdict.confirmed and not force:
        p = verdict.paired
        raise ExportRefused(
            f"trial {chosen.number} is not confirmed on the held-out test split: its paired drop against "
            f"{constraint.baseline} is {100 * p.drop:.1f} points with a {p.confidence:.0%} upper bound of "
            f"{100 * p.upper:.1f} > the {constraint.max_drop:g}-point margin (n={p.n}); not exported "
            "(--force writes it anyway)")
    meta = {
        "created": now,
        "tuner_version": __version__,
        "confirmed": verdict.confirmed,
        "forced": bool(force and not verdict.confirmed),
        "model": {"id": spec.model, **{k: v for k, v in model.source.items() if k != "path"}},
        "task": {"name": spec.task, "options": spec.task_options, "few_shot": spec.few_shot,
                 "chat_template": spec.chat_template,
                 # "used" = the first N items of the split whose hash is given (tuning and confirmation runs may
                 # take a prefix of the split); a trial raced over the first `validation.used_by_pick` of them.
                 "validation": {"size": split_val.size, "used": min(spec.validation_size or split_val.size,
                                                                    split_val.size),
                                "used_by_pick": chosen.n, "hash": split_val.content_hash,
                                "source": split_val.source},
                 "test": {"size": split_test.size, "used": len(items), "hash": split_test.content_hash,
                          "source": split_test.source}},
        "study": {"name": study.study_name, "storage": redact_url(ctx.options.storage), "trial": chosen.number,
                  "pick": rule, "pick_rule": f"{rule} among trials whose {constraint.confidence:.0%} upper bound "
                                             f"of the paired validation drop is within {constraint.max_drop:g} points",
                  "reference": chosen.label, "spec_fingerprint": spec.fingerprint(),
                  "baseline": {"name": constraint.baseline, "config": baseline_cfg.to_dict()}},
        "validation": {**trial.user_attrs.get("metrics", {}), "paired_estimate_accuracy": chosen.accuracy},
        "test": test,
        "hardware": hardware.describe(model.device),
    }
    path = Path(out) if out else _new_profile_path(study.study_name)
    save_profile(path, config, meta, overwrite=overwrite)  # checked again: the file may have appeared meanwhile
    parent = study.user_attrs.get("mlflow_parent_run_id")
    if parent:
        tracker = tracker or ctx.open_tracker()
        tracker.log_artifact(parent, str(path), "profiles")
        tracker.set_tags(parent, {"dtune.last_export": path.name, "dtune.last_export_trial": str(chosen.number)})
    registered = None
    if register:
        registered = _register(tracker or ctx.open_tracker(), register, path, parent, meta)
        stage(f"export: registered as version {registered.version} of {register!r} (alias "
              f"{registered.alias}: {registered.uri})")
    return ExportReport(path=path, pick=chosen, config=config, test=test, confirmed=verdict.confirmed,
                        registered=registered)


def _register(tracker: Any, name: str, path: Path, parent: str | None, meta: dict[str, Any]) -> Any:
    """The profile as a new version of `name` (alias candidate); the profile file stays written either way."""
    from .tracking.registry import RegistryError, register_profile, registry_client

    if not parent:
        raise RegistryError(f"profile written to {path}, but not registered: the study has no MLflow run to attach "
                            "it to (was tracking unavailable during `run`?)")
    registered = register_profile(registry_client(tracker.tracking_uri), name, path, parent, meta)
    tracker.set_tags(parent, {"dtune.last_registered": f"{name} v{registered.version}"})
    return registered


def _new_profile_path(study_name: str) -> Path:
    """profiles/<study>-<time>.json, with a counter where that name is taken (two exports in one second)."""
    stem = Path("profiles") / f"{_slug(study_name)}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    path, n = stem.with_suffix(".json"), 1
    while path.exists():
        n += 1
        path = stem.parent / f"{stem.name}-{n}.json"
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)
