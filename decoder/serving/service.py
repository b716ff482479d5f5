"""What one server holds, wired together: the model under the name clients give, its tokenizer, the live profile,
the batching engine and the metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..model import DiffusionLM
from .codec import Codec
from .engine import BatchOptions, Engine
from .live_profile import LiveProfile
from .metrics import Metrics


def open_profile(source: str, model_source: dict[str, Any], metrics: Metrics, *, allow_mismatch: bool = False,
                 reload_interval_s: float | None = None) -> LiveProfile:
    """Read the profile (a file or a models:/ URI) for the model of `model_source` (`model.source`, or
    `inspect_checkpoint`'s before the weights load); re-reads are counted in `metrics`."""
    return LiveProfile(source, model_source, allow_mismatch=allow_mismatch, interval_s=reload_interval_s,
                       on_reload=lambda ok: metrics.reloads.labels("ok" if ok else "failed").inc())


@dataclass
class Service:
    name: str  # the `model` a request must name
    model: DiffusionLM
    codec: Codec
    profile: LiveProfile
    engine: Engine
    metrics: Metrics

    @classmethod
    def create(cls, model: DiffusionLM, tokenizer: Any, profile: LiveProfile, metrics: Metrics, *, name: str,
               options: BatchOptions | None = None) -> Service:
        """The service of `model` decoding with `profile` (from `open_profile`); `start` runs it."""
        codec = Codec(tokenizer)
        engine = Engine(model, codec, profile, options or BatchOptions(), metrics)
        return cls(name, model, codec, profile, engine, metrics)

    def start(self) -> None:
        self.profile.start()
        self.engine.start()

    def stop(self) -> None:
        """Decode every request taken, then stop the threads."""
        self.engine.stop()
        self.profile.stop()
