"""`DecodeConfig`: every knob of one generation, validated when built, so a bad combination fails before a model runs.

Three modes share one block loop (see `decoder.generate`):

* `vanilla`   — LLaDA's low-confidence remasking: `steps` forwards per answer split evenly over blocks, each step a
                full forward over prompt + answer, committing a fixed quota of the most confident masked tokens.
* `fast`      — Fast-dLLM: prefix KV cache refreshed at each block start, the whole suffix fed, every masked block
                token with confidence >= `threshold` committed (at least one per step). No early exit by default.
* `streaming` — Streaming-dLLM: `fast` plus suffix pruning to a `window` of masks after the block and the trailing
                position, the dynamic threshold `threshold * (1 - alpha * (1 - r))`, and EOS early exit.

`threshold` is the paper's `tau0` in streaming mode. `window=None` means "no pruning" (the whole suffix is fed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

MODES = ("vanilla", "fast", "streaming")
MODE_DEFAULT: Any = "mode-default"  # sentinel: "take this mode's default"


@dataclass(frozen=True)
class DecodeConfig:
    mode: str = "streaming"
    gen_length: int = 256
    block_size: int = 32
    # vanilla only: total denoising steps (must be a multiple of the number of blocks); default = gen_length.
    steps: int | None = None
    # fast / streaming: acceptance threshold (streaming: tau0).
    threshold: float = 0.9
    # streaming only: suffix window in tokens (None = keep the whole suffix) and dynamic-threshold strength.
    # Left unset they take the mode's default (streaming: 128 / 0.3 ; fast, vanilla: None / 0.0).
    window: int | None = MODE_DEFAULT  # type: ignore[assignment]
    alpha: float = MODE_DEFAULT  # type: ignore[assignment]
    # Stop a row once a completed block contains EOS (default: on in streaming, off otherwise).
    early_exit: bool | None = None
    temperature: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        streaming = self.mode == "streaming"
        defaults: dict[str, Any] = {"early_exit": streaming}
        if self.window == MODE_DEFAULT:
            object.__setattr__(self, "window", 128 if streaming else None)
        if self.alpha == MODE_DEFAULT:
            object.__setattr__(self, "alpha", 0.3 if streaming else 0.0)
        if self.mode == "vanilla" and self.steps is None:
            defaults["steps"] = self.gen_length if isinstance(self.gen_length, int) else None
        for key, value in defaults.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        self.validate()

    def validate(self) -> None:
        """Ranges, types and combinations; raises ConfigError naming the knob."""
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        _int("gen_length", self.gen_length, 1)
        _int("block_size", self.block_size, 1)
        if self.gen_length % self.block_size:
            raise ConfigError(f"gen_length ({self.gen_length}) must be a multiple of block_size ({self.block_size})")
        n_blocks = self.gen_length // self.block_size
        _float("threshold", self.threshold, 0.0, 1.0)
        _float("alpha", self.alpha, 0.0, 1.0)
        _float("temperature", self.temperature, 0.0, 100.0)
        if not isinstance(self.early_exit, bool):
            raise ConfigError(f"early_exit must be a bool, got {self.early_exit!r}")
        if self.seed is not None:
            _int("seed", self.seed, 0)
        if self.mode == "vanilla":
            if self.window is not None or self.alpha != 0.0:
                raise ConfigError("window and alpha apply to streaming mode only (mode=vanilla)")
            _int("steps", self.steps, 1)
            if self.steps % n_blocks:
                raise ConfigError(f"steps ({self.steps}) must be a multiple of the number of blocks ({n_blocks})")
            if self.steps > self.gen_length:
                raise ConfigError(f"steps ({self.steps}) can't exceed gen_length ({self.gen_length})")
        elif self.steps is not None:
            raise ConfigError(f"steps applies to vanilla mode only (mode={self.mode}); {self.mode} uses threshold")
        if self.window is not None:
            _int("window", self.window, 1)
        if self.mode == "fast":
            if self.window is not None and self.window < self.gen_length - self.block_size:
                raise ConfigError("fast mode feeds the whole suffix: use mode=streaming to prune with a window")
            if self.alpha != 0.0:
                raise ConfigError("fast mode has a fixed threshold: use mode=streaming for alpha > 0")

    # The knobs a mode actually reads; others are normalised away so equal configs compare and hash equal.
    def normalized(self) -> DecodeConfig:
        if self.mode == "vanilla":
            return dataclasses.replace(self, threshold=0.9)
        if self.mode == "fast":
            return dataclasses.replace(self, window=None)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecodeConfig:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown decode knob(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DecodeConfig:
        """Named reference points: 'vanilla', 'fast' (Fast-dLLM, threshold 0.9) and 'streaming' (paper defaults)."""
        base = {
            "vanilla": {"mode": "vanilla"},
            "fast": {"mode": "fast", "threshold": 0.9},
            "streaming": {"mode": "streaming", "threshold": 0.9, "window": 128, "alpha": 0.3},
        }
        if name not in base:
            raise ConfigError(f"unknown preset {name!r}; known: {', '.join(base)}")
        return cls.from_dict({**base[name], **overrides})


def _int(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < lo:
        raise ConfigError(f"{name} must be >= {lo}, got {value}")


def _float(name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not lo <= float(value) <= hi:
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {value}")
