"""`tuner run`: load a spec, the model and the validation split, then run (or resume) the study with progress bars,
MLflow tracking after every trial, and the Pareto table at the end."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from decoder import load_model

from . import hardware
from .evaluate import Evaluator
from .spec import StudySpec
from .study import (
    DEFAULT_STORAGE,
    FINISHED,
    Objective,
    create_study,
    default_study_name,
    finished_count,
    open_storage,
    trial_points,
)
from .tasks import get_task
from .tracking import Tracker

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    storage: str = DEFAULT_STORAGE
    tracking_uri: str | None = None
    study_name: str | None = None
    device: str | None = None
    data_dir: str | None = None
    heartbeat_interval: int | None = None
    refresh_every: int = 1
    worker: int = 0
    show_progress: bool = True


def load_task(spec: StudySpec, data_dir: str | None):
    options = dict(spec.task_options)
    if spec.few_shot is not None:
        options["num_fewshot"] = spec.few_shot
    return get_task(spec.task, data_dir=data_dir, **options)


def experiment_name(spec: StudySpec) -> str:
    return f"dtune-{spec.task}"


def study_params(spec: StudySpec, model, task, split_info, hw: dict[str, str]) -> tuple[dict, dict]:
    """Parent-run params (what the study searched and on what) and tags (where it ran)."""
    params: dict[str, Any] = {
        "task": spec.task, "model": spec.model, "model_fingerprint": model.source.get("fingerprint"),
        "model_revision": model.source.get("revision"), "chat_template": spec.chat_template,
        "validation_size": split_info.size, "validation_hash": split_info.content_hash,
        "sampler": spec.sampler, "trials": spec.trials, "constraint_baseline": spec.constraint.baseline,
        "constraint_max_drop": spec.constraint.max_drop, "spec_fingerprint": spec.fingerprint(),
        **{f"decode.{k}": v for k, v in spec.decode.items()},
        **{f"space.{k.name}": list(k.choices) if k.is_categorical else [k.low, k.high] for k in spec.search_space},
    }
    tags = {f"hw.{k}": v for k, v in hw.items()}
    return params, tags


def run(spec: StudySpec, opts: RunOptions, console: Console | None = None) -> optuna.Study:
    """Run the study until `spec.trials` trials are finished (complete or pruned), resuming if it exists."""
    console = console or Console(stderr=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = opts.study_name or default_study_name(spec)
    # Fail fast on bad services before loading a multi-GB model.
    tracker = Tracker.open(opts.tracking_uri, experiment_name(spec))
    storage = open_storage(opts.storage, heartbeat_interval=opts.heartbeat_interval)
    # Workers of one study need distinct seeds, or they propose the same points (optuna#1547).
    seed = None if spec.seed is None else spec.seed + opts.worker
    study = create_study(spec, storage, name, seed)
    done = finished_count(study)
    if done >= spec.trials:
        console.print(f"study {name}: budget of {spec.trials} trials already spent ({done} finished); nothing to do")
        return study

    task = load_task(spec, opts.data_dir)
    items = task.load("validation")
    if spec.validation_size is not None:
        items = items[: spec.validation_size]
    split = task.split_info("validation")
    model, tokenizer = load_model(spec.model, device=opts.device)
    hw = hardware.describe(model.device)
    evaluator = Evaluator(model, tokenizer, task, chat_template=spec.chat_template, batch_size=spec.batch_size)
    params, tags = study_params(spec, model, task, split, hw)
    params["validation_items_used"] = len(items)
    parent = tracker.parent_run(name, params=params, tags={**tags, "dtune.storage": _storage_tag(opts.storage)})
    if parent and study.user_attrs.get("mlflow_parent_run_id") != parent:
        study.set_user_attr("mlflow_parent_run_id", parent)
    console.print(f"study [bold]{name}[/] · {spec.task} on {spec.model} · {len(items)} validation items · "
                  f"{hardware.summary(hw)} · {done}/{spec.trials} trials finished")

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), console=console, disable=not opts.show_progress, transient=False)
    trials_bar = progress.add_task("trials", total=spec.trials, completed=done, info="")
    items_bar = progress.add_task("  items", total=len(items), info="")

    def on_trial_start(number: int, config) -> None:
        knobs = ", ".join(f"{k}={v}" for k, v in config.normalized().to_dict().items()
                          if k in {"mode", "window", "threshold", "alpha", "early_exit", "block_size"})
        progress.reset(items_bar, total=len(items), info=f"trial {number}: {knobs}")

    def on_progress(seen: int, total: int, correct: int) -> None:
        progress.update(items_bar, completed=seen, info=f"acc {correct / max(seen, 1):.1%}")

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        progress.update(trials_bar, completed=finished_count(study))
        _log_trial(tracker, parent, trial)
        if parent and (trial.number % opts.refresh_every == 0):
            tracker.refresh_study_artifacts(parent, trial_points(study), title=name)

    objective = Objective(spec, evaluator, items, on_progress=on_progress, on_trial_start=on_trial_start)
    stop_at_budget = optuna.study.MaxTrialsCallback(spec.trials, states=FINISHED)
    with progress:
        study.optimize(objective, n_trials=spec.trials - done, callbacks=[after_trial, stop_at_budget],
                       catch=(RuntimeError,), gc_after_trial=False)
    if parent:
        tracker.refresh_study_artifacts(parent, trial_points(study), title=name)
    return study


def _log_trial(tracker: Tracker, parent: str | None, trial: optuna.trial.FrozenTrial) -> None:
    if not parent:
        return
    metrics = dict(trial.user_attrs.get("metrics", {}))
    metrics.update({f"constraint_{k}": v for k, v in (trial.constraints or {}).items()})
    tags = {"state": trial.state.name, "reference": trial.user_attrs.get("reference") or "",
            "config_key": trial.user_attrs.get("config_key", ""),
            "duplicate_of": str(trial.user_attrs.get("duplicate_of", ""))}
    params = {**trial.params, **{f"config.{k}": v for k, v in trial.user_attrs.get("config", {}).items()}}
    tracker.log_trial(parent, trial.number, params=params, metrics=metrics, tags=tags, state=trial.state.name)


def _storage_tag(url: str) -> str:
    from .study import _redact

    return _redact(url)
