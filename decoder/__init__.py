"""dtune's decoder: native LLaDA / Dream models and vanilla, Fast-dLLM and Streaming-dLLM decoding.

    from decoder import load_model, load_profile, generate
    model, tok = load_model("GSAI-ML/LLaDA-8B-Instruct")          # or a local checkpoint directory
    config = load_profile("gsm8k.profile.json")                     # a tuned DecodeConfig
    result = generate(model, ["Question: ..."], config, tokenizer=tok)
    result.texts, result.counters.tokens_per_s, result.counters.nfe

This package knows nothing of tasks, Optuna or MLflow: it turns prompts into completions and counts its own cost.

Names are imported on first use (PEP 562), so `decoder.config` (the knob table, which the tuner's CLI reads to
build its options) can be imported without importing torch: `python -m tuner --help` stays instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS = {
    "DecodeConfig": "config", "KNOBS": "config", "Counters": "counters",
    "ConfigError": "errors", "DecoderError": "errors", "ModelLoadError": "errors", "ProfileError": "errors",
    "BlockEvent": "decoding", "GenerationResult": "decoding", "generate": "decoding",
    "build_random_model": "loading", "load_model": "loading", "save_checkpoint": "loading",
    "DiffusionLM": "model", "ModelArgs": "model",
    "load_profile": "profile", "read_profile": "profile", "save_profile": "profile",
    "encode_prompt": "prompts",
}
__all__ = [
    "KNOBS", "BlockEvent", "ConfigError", "Counters", "DecodeConfig", "DecoderError", "DiffusionLM", "GenerationResult",
    "ModelArgs", "ModelLoadError", "ProfileError", "build_random_model", "encode_prompt", "generate", "load_model",
    "load_profile", "read_profile", "save_checkpoint", "save_profile",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .config import KNOBS, DecodeConfig
    from .counters import Counters
    from .decoding import BlockEvent, GenerationResult, generate
    from .errors import ConfigError, DecoderError, ModelLoadError, ProfileError
    from .loading import build_random_model, load_model, save_checkpoint
    from .model import DiffusionLM, ModelArgs
    from .profile import load_profile, read_profile, save_profile
    from .prompts import encode_prompt


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'decoder' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value
