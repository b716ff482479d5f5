"""`DecodeConfig`: every knob of one generation, validated when built, so a bad combination fails before a model runs.

Three modes share one block loop (see `decoder.decoding`):

* `vanilla`   — LLaDA's low-confidence remasking: `steps` forwards per answer split evenly over blocks, each step a
                full forward over prompt + answer, committing a fixed quota of the most confident masked tokens.
* `fast`      — Fast-dLLM: prefix KV cache refreshed at each block start, the whole suffix fed, every masked block
                token with confidence >= `threshold` committed (at least one per step). No early exit by default.
* `streaming` — Streaming-dLLM: `fast` plus suffix pruning to a `window` of masks after the block and the trailing
                position, the dynamic threshold `threshold * (1 - alpha * (1 - r))`, and EOS early exit.

`threshold` is the paper's `tau0` in streaming mode. `window=None` means "no pruning" (the whole suffix is fed).

`KNOBS` describes every field once — its kind and valid range, which modes read it, whether a study may search it
and its vanilla-neutral value — and is what the tuner's spec, study and both CLIs read. Adding a knob means a field
and a row here, and the decoding code that reads it; nothing in the tuner names knobs one by one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError

MODES = ("vanilla", "fast", "streaming")
MODE_DEFAULT: Any = "mode-default"  # sentinel: "take this mode's default"


@dataclass(frozen=True)
class Knob:
    """One DecodeConfig field as the rest of dtune sees it.

    kind:      "int", "float", "bool" or "mode" (one of MODES).
    low/high:  valid range of a number (ints: low only).
    none:      what None means, for a knob where None is a value of its own (window: no pruning).
    modes:     the modes that read it; the others must leave it at its neutral default.
    search:    how a study may search it: "range" (a float interval) or "choices" (a list); None = never.
    neutral:   for a searched knob, the value closest to vanilla decoding, in order of preference among the
               values a space offers ("high" / "low" = the end of a range, "max" = the largest choice). The
               vanilla reference reports this point to the sampler, which models only the searched space.
    flags:     the command-line options of both CLIs.
    """

    name: str
    kind: Literal["int", "float", "bool", "mode"]
    help: str
    low: float | None = None
    high: float | None = None
    none: str = ""
    modes: tuple[str, ...] = MODES
    search: Literal["range", "choices"] | None = None
    neutral: tuple[Any, ...] = ()
    flags: tuple[str, ...] = ()

    def check(self, value: Any) -> None:
        """Type and range of one value; raises ConfigError naming the knob."""
        if value is None and self.optional:
            return
        if self.kind == "mode":
            if value not in MODES:
                raise ConfigError(f"{self.name} must be one of {', '.join(MODES)}, got {value!r}")
        elif self.kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{self.name} must be a bool, got {value!r}")
        elif self.kind == "int":
            _int(self.name, value, int(self.low if self.low is not None else 0))
        else:
            _float(self.name, value, float(self.low), float(self.high))

    def neutral_value(self, low: float | None = None, high: float | None = None,
                      choices: tuple[Any, ...] | None = None) -> Any:
        """The most vanilla-like value a searched space offers (a range [low, high] or a list of choices)."""
        for want in self.neutral:
            if choices is None:
                if want == "high":
                    return high
                if want == "low":
                    return low
            elif want == "max":
                numbers = [c for c in choices if c is not None]
                if numbers:
                    return max(numbers)
            elif want in choices:
                return want
        return choices[0] if choices is not None else low

    @property
    def optional(self) -> bool:
        return bool(self.none)

    def describe(self) -> str:
        """What values it takes, in words, for messages."""
        kinds = {"bool": "true/false", "mode": f"one of {', '.join(MODES)}",
                 "int": "positive integers" if self.low == 1 else f"integers >= {self.low:g}",
                 "float": f"numbers in [{self.low}, {self.high}]"}
        return kinds[self.kind] + (f" or null ({self.none})" if self.none else "")

    @property
    def option(self) -> str:
        return self.flags[0] if self.flags else "--" + self.name.replace("_", "-")


KNOBS: dict[str, Knob] = {k.name: k for k in (
    Knob("mode", "mode", "decoding mode"),
    Knob("gen_length", "int", "answer tokens decoded", low=1),
    Knob("block_size", "int", "tokens per block (decoded left to right)", low=1, search="choices"),
    Knob("steps", "int", "vanilla: total denoising steps", low=1, none="the mode's default", modes=("vanilla",)),
    Knob("threshold", "float", "fast/streaming acceptance threshold (streaming: tau0)", low=0.0, high=1.0,
         modes=("fast", "streaming"), search="range", neutral=("high",), flags=("--threshold", "--tau0")),
    Knob("window", "int", "streaming suffix window in tokens; 'none' = no pruning", low=1, none="no pruning",
         modes=("streaming",), search="choices", neutral=(None, "max")),
    Knob("alpha", "float", "streaming dynamic-threshold strength", low=0.0, high=1.0, modes=("streaming",),
         search="range", neutral=("low",)),
    Knob("early_exit", "bool", "stop a row once a completed block holds EOS", search="choices", neutral=(False,)),
    Knob("temperature", "float", "0 = greedy; above 0 samples with Gumbel noise", low=0.0, high=100.0),
    Knob("seed", "int", "seed of the sampling noise", low=0, none="unseeded"),
)}


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
        for name in ("mode", "gen_length", "block_size"):
            KNOBS[name].check(getattr(self, name))
        if self.gen_length % self.block_size:
            raise ConfigError(f"gen_length ({self.gen_length}) must be a multiple of block_size ({self.block_size})")
        n_blocks = self.gen_length // self.block_size
        for name in ("threshold", "alpha", "temperature", "early_exit", "seed"):
            KNOBS[name].check(getattr(self, name))
        if self.mode == "vanilla":
            if self.window is not None or self.alpha != 0.0:
                raise ConfigError("window and alpha apply to streaming mode only (mode=vanilla)")
            _int("steps", self.steps, 1)  # required in vanilla (its default was filled in above)
            if self.steps % n_blocks:
                raise ConfigError(f"steps ({self.steps}) must be a multiple of the number of blocks ({n_blocks})")
            if self.steps > self.gen_length:
                raise ConfigError(f"steps ({self.steps}) can't exceed gen_length ({self.gen_length})")
        elif self.steps is not None:
            raise ConfigError(f"steps applies to vanilla mode only (mode={self.mode}); {self.mode} uses threshold")
        KNOBS["window"].check(self.window)
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
