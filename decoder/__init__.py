"""dtune's decoder: native LLaDA / Dream models and vanilla, Fast-dLLM and Streaming-dLLM decoding.

    from decoder import load_model, load_profile, generate
    model, tok = load_model("GSAI-ML/LLaDA-8B-Instruct")          # or a local checkpoint directory
    config = load_profile("gsm8k.profile.json")                     # a tuned DecodeConfig
    result = generate(model, ["Question: ..."], config, tokenizer=tok)
    result.texts, result.counters.tokens_per_s, result.counters.nfe

This package knows nothing of tasks, Optuna or MLflow: it turns prompts into completions and counts its own cost.
"""

from .config import DecodeConfig
from .counters import Counters
from .errors import ConfigError, DecoderError, ModelLoadError, ProfileError
from .generate import GenerationResult, generate
from .loading import build_random_model, load_model, save_checkpoint
from .model import DiffusionLM, ModelArgs
from .profile import load_profile, read_profile, save_profile

__all__ = [
    "ConfigError", "Counters", "DecodeConfig", "DecoderError", "DiffusionLM", "GenerationResult", "ModelArgs",
    "ModelLoadError", "ProfileError", "build_random_model", "generate", "load_model", "load_profile",
    "read_profile", "save_checkpoint", "save_profile",
]

__version__ = "0.1.0"
