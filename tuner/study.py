"""One tuning study: an Optuna multi-objective study (maximise accuracy and tokens/s) over a spec's search space.

* Storage: Optuna's RDB storage through SQLAlchemy — a SQLite file by default, any SQLAlchemy URL (PostgreSQL)
  otherwise — so re-running the same command resumes the study and Ctrl-C keeps every finished trial.
* Reference points (vanilla, Fast-dLLM, the paper's setting) are enqueued first, so every front is judged
  against them. Fast-dLLM is the streaming point (window = none, alpha = 0, no early exit), identical by test.
* Sampler: GPSampler by default — Optuna's sampler table recommends it for budgets up to a few hundred trials,
  it handles 2 objectives (log-EHVI) with constraints (`trial.set_constraint`), and a handful of mixed knobs is
  where a GP model beats TPE's independent density estimates and NSGA-II's random first generation (50 trials).
* The accuracy constraint (at most `max_drop` points below the baseline) goes to the sampler through
  `trial.set_constraint`, and hopeless trials are stopped early: the validation split is evaluated in chunks and a
  trial is pruned once its accuracy cannot reach the bar at 95% confidence (Optuna's pruners are
  single-objective only; raising TrialPruned still marks the trial pruned).
* A configuration already evaluated is not evaluated again: the trial copies the earlier result.
"""

from __future__ import annotations

import json
import logging
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from decoder import DecodeConfig

from .evaluate import EvalResult, Evaluator
from .pareto import TrialPoint, pareto_front
from .spec import StudySpec
from .stats import cannot_reach

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///dtune.db"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class StorageError(RuntimeError):
    """The study database can't be reached or used."""


def default_study_name(spec: StudySpec) -> str:
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.model.rstrip("/").split("/")[-1])
    return f"{spec.task}-{model}-{spec.fingerprint()}"


def open_storage(url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 retry_stale: int | None = 2) -> optuna.storages.RDBStorage:
    """RDB storage with the options many workers need: heartbeats (a killed worker's trial is failed and
    re-queued by another worker) and pre-pinged pooled connections (PostgreSQL drops idle ones during long trials).
    """
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 30}
    callback = None
    if heartbeat_interval:
        callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retry_stale)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                                          grace_period=grace_period, heartbeat_stale_trial_callback=callback)
    except Exception as exc:  # SQLAlchemy raises many types: bad URL, refused connection, auth, corrupt file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"can't open the study storage {_redact(url)}: {first}") from None


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def make_sampler(spec: StudySpec, seed: int | None) -> optuna.samplers.BaseSampler:
    n_startup = max(3, min(10, spec.trials // 3))
    if spec.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup)
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, multivariate=True)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def distributions(spec: StudySpec) -> dict[str, optuna.distributions.BaseDistribution]:
    """The search space as Optuna distributions, plus `mode` (streaming, and vanilla for its reference)."""
    dists: dict[str, optuna.distributions.BaseDistribution] = {}
    modes = sorted({spec.reference_config(r).mode for r in spec.references} | {"streaming"})
    if len(modes) > 1:
        dists["mode"] = optuna.distributions.CategoricalDistribution(modes)
    for k in spec.search_space:
        if k.is_categorical:
            dists[k.name] = optuna.distributions.CategoricalDistribution(list(k.choices))
        else:
            dists[k.name] = optuna.distributions.FloatDistribution(k.low, k.high, step=k.step, log=k.log)
    return dists


def reference_params(spec: StudySpec, name: str) -> dict[str, Any]:
    """A reference's point in the space. Vanilla doesn't read the streaming knobs; it reports each knob's neutral
    value so every trial covers the whole space (the GP models only the space that all complete trials share)."""
    ref = spec.reference(name)
    cfg = spec.reference_config(ref)
    params: dict[str, Any] = {}
    if "mode" in distributions(spec):
        params["mode"] = cfg.mode
    for k in spec.search_space:
        params[k.name] = getattr(cfg, k.name) if cfg.mode == "streaming" or k.name == "block_size" else k.default()
    return params


def suggest(trial: optuna.Trial, name: str, dist: optuna.distributions.BaseDistribution) -> Any:
    """Ask the trial for one knob through the public suggest API (enqueued values come back as given)."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def config_key(config: DecodeConfig) -> str:
    return json.dumps(config.normalized().to_dict(), sort_keys=True)


def create_study(spec: StudySpec, storage: optuna.storages.BaseStorage, name: str, seed: int | None) -> optuna.Study:
    """Create the study, or load it (resume, or another worker created it first).

    Only the process that creates the study records the spec and enqueues the reference points, so workers that
    start together never enqueue (and evaluate) a reference twice.
    """
    directions = ["maximize", "maximize"]
    sampler = make_sampler(spec, seed)
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=directions, sampler=sampler)
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    with warnings.catch_warnings():  # set_metric_names is "experimental" since Optuna 3.2, and stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", "tokens_per_s"])
    study.set_user_attr("spec", spec.to_dict())
    for ref in spec.references:
        study.enqueue_trial(reference_params(spec, ref.name), user_attrs={"reference": ref.name})
    return study


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


@dataclass
class TrialOutcome:
    number: int
    config: DecodeConfig
    result: EvalResult | None
    reused_from: int | None = None


class Objective:
    """Evaluates one trial: suggest knobs → DecodeConfig → (dedupe) → chunked evaluation → constraint."""

    def __init__(self, spec: StudySpec, evaluator: Evaluator, items: list, *,
                 on_progress: Callable[[int, int, int], None] | None = None,
                 on_trial_start: Callable[[int, DecodeConfig], None] | None = None):
        self.spec, self.evaluator, self.items = spec, evaluator, items
        self.on_progress, self.on_trial_start = on_progress, on_trial_start
        self.dists = distributions(spec)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        params = {name: suggest(trial, name, dist) for name, dist in self.dists.items()}
        reference = trial.user_attrs.get("reference")
        if reference is not None:
            config = self.spec.reference_config(self.spec.reference(reference))
        else:
            config = self.spec.config_for(params)
        key = config_key(config)
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("config_key", key)
        earlier = self._earlier(trial.study, key, trial.number)
        if earlier is not None:
            return self._reuse(trial, earlier)

        baseline = self.baseline_accuracy(trial.study)
        is_baseline = reference == self.spec.constraint.baseline
        target = None if baseline is None or is_baseline else baseline - self.spec.constraint.max_drop / 100
        if self.on_trial_start:
            self.on_trial_start(trial.number, config)
        stop = None if target is None else (lambda c, seen, total: cannot_reach(c, seen, total, target))
        result = self.evaluator.evaluate(self.items, config, chunk_size=self.spec.chunk_size, should_stop=stop,
                                         on_progress=self.on_progress)
        metrics = result.metrics()
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("outcomes", "".join("1" if o else "0" for o in result.outcomes))
        if is_baseline:
            trial.study.set_user_attr("baseline", {"trial": trial.number, "accuracy": result.accuracy,
                                                   "reference": reference})
            target = result.accuracy - self.spec.constraint.max_drop / 100
        # <= 0 is feasible: how far the accuracy falls short of the bar (unknown bar: treated as feasible).
        trial.set_constraint("accuracy", 0.0 if target is None else target - result.accuracy)
        if result.stopped_early:
            trial.set_user_attr("pruned_after", result.n)
            raise optuna.TrialPruned(f"accuracy {result.accuracy:.3f} after {result.n} items can't reach {target:.3f}")
        return result.accuracy, result.tokens_per_s

    @staticmethod
    def baseline_accuracy(study: optuna.Study) -> float | None:
        base = study.user_attrs.get("baseline")
        return None if base is None else float(base["accuracy"])

    @staticmethod
    def _earlier(study: optuna.Study, key: str, number: int) -> FrozenTrial | None:
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.number != number and t.user_attrs.get("config_key") == key:
                return t
        return None

    def _reuse(self, trial: optuna.Trial, earlier: FrozenTrial) -> tuple[float, float]:
        trial.set_user_attr("duplicate_of", earlier.number)
        trial.set_user_attr("metrics", earlier.user_attrs.get("metrics", {}))
        for key, value in (earlier.constraints or {}).items():
            trial.set_constraint(key, value)
        return tuple(earlier.values)  # type: ignore[return-value]


def trial_points(study: optuna.Study) -> list[TrialPoint]:
    """Every finished trial as a TrialPoint (pruned ones carry their partial accuracy).

    Feasibility is judged against the study's baseline when it is known: a trial that finished before the
    baseline (another worker still running it) could only record an unknown bar in its constraint.
    """
    base = study.user_attrs.get("baseline")
    spec = study.user_attrs.get("spec") or {}
    max_drop = float((spec.get("constraint") or {}).get("max_drop", 1.0))
    bar = None if base is None else float(base["accuracy"]) - max_drop / 100
    points = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        m = t.user_attrs.get("metrics", {})
        acc = t.values[0] if t.values else m.get("accuracy", 0.0)
        tps = t.values[1] if t.values else m.get("tokens_per_s", 0.0)
        if bar is not None:
            feasible = acc >= bar - 1e-12
        else:
            feasible = all(v <= 0 for v in (t.constraints or {}).values())
        points.append(TrialPoint(
            number=t.number, accuracy=float(acc), tokens_per_s=float(tps), feasible=feasible, state=t.state.name,
            params=dict(t.params), label=t.user_attrs.get("reference"), nfe=m.get("nfe"),
            ci_low=m.get("accuracy_ci_low"), ci_high=m.get("accuracy_ci_high"),
        ))
    return points


def front(study: optuna.Study) -> list[TrialPoint]:
    return pareto_front(trial_points(study))


def wait_for(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()
