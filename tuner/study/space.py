"""A spec's search space as Optuna sees it, and what makes two trials the same configuration."""

from __future__ import annotations

import json
from typing import Any

import optuna

from decoder.config import DecodeConfig

from .spec import StudySpec


def distributions(spec: StudySpec) -> dict[str, optuna.distributions.BaseDistribution]:
    """The search space as Optuna distributions: the streaming knobs only.

    `mode` is not searched: vanilla is a reference point, evaluated once (a constrained GP favours the most
    accurate point and spent most of its trials on vanilla repeats when it could), and Optuna refuses a
    categorical whose choices change within a study."""
    dists: dict[str, optuna.distributions.BaseDistribution] = {}
    for k in spec.search_space:
        if k.is_categorical:
            dists[k.name] = optuna.distributions.CategoricalDistribution(list(k.choices))
        else:
            dists[k.name] = optuna.distributions.FloatDistribution(k.low, k.high, step=k.step, log=k.log)
    return dists


def reference_params(spec: StudySpec, name: str) -> dict[str, Any]:
    """A reference's point in the space: a streaming reference's own knobs; vanilla, which reads none of them but
    block_size, at the most vanilla-like corner (`Dimension.most_vanilla_like`)."""
    cfg = spec.reference_config(spec.reference(name))
    params: dict[str, Any] = {}
    for k in spec.search_space:
        own = cfg.mode == "streaming" or k.name == "block_size"
        params[k.name] = getattr(cfg, k.name) if own else k.most_vanilla_like()
    return params


def suggest(trial: optuna.Trial, name: str, dist: optuna.distributions.BaseDistribution) -> Any:
    """Ask the trial for one knob through the public suggest API (enqueued values come back as given)."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def config_key(config: DecodeConfig) -> str:
    """What makes two trials the same configuration. Floats are rounded to 9 decimals: a sampler proposes
    0.6999999999999998 where an earlier trial ran 0.7, and the decoder can't tell them apart."""
    knobs = {k: round(v, 9) if isinstance(v, float) else v for k, v in config.normalized().to_dict().items()}
    return json.dumps(knobs, sort_keys=True)
