"""Profiles: a tuned `DecodeConfig` plus its provenance, in one small versioned JSON file.

The file is a valid Hugging Face `generation_config.json` (diffusion checkpoints such as Dream keep their decoding
knobs there, and transformers / vLLM read that file) with everything of ours under a namespaced `"dtune"` key:

    {"max_new_tokens": 256, "do_sample": false,
     "dtune": {"format": "dtune-profile", "format_version": 1,
               "decode": {...DecodeConfig...}, "meta": {...model, task, metrics, provenance...}}}

Production code calls `load_profile(path)` and gets a `DecodeConfig`; the tuner's export fills `meta`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import DecodeConfig
from .errors import ConfigError, ProfileError

FORMAT = "dtune-profile"
FORMAT_VERSION = 1


@dataclass
class Profile:
    decode: DecodeConfig
    meta: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


def profile_document(config: DecodeConfig, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "max_new_tokens": config.gen_length,
        "do_sample": config.temperature > 0,
        "dtune": {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "decode": config.to_dict(),
            "meta": meta or {},
        },
    }


def save_profile(path: str | os.PathLike, config: DecodeConfig, meta: dict[str, Any] | None = None) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves a half-written profile in production."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(profile_document(config, meta), indent=2, sort_keys=False, default=str) + "\n"
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def read_profile(path: str | os.PathLike) -> Profile:
    """The whole profile (decode config + metadata); every way a file can be wrong is a ProfileError."""
    p = Path(path)
    if not p.is_file():
        raise ProfileError(f"profile {p} does not exist")
    try:
        doc = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"profile {p} is not valid JSON ({exc})") from None
    block = doc.get("dtune") if isinstance(doc, dict) else None
    if not isinstance(block, dict) or block.get("format") != FORMAT:
        raise ProfileError(f"{p} is not a dtune profile (no 'dtune' block with format {FORMAT!r})")
    version = block.get("format_version")
    if version != FORMAT_VERSION:
        raise ProfileError(
            f"profile {p} has format_version {version!r}; this dtune reads version {FORMAT_VERSION}"
            + (" (upgrade dtune)" if isinstance(version, int) and version > FORMAT_VERSION else "")
        )
    decode = block.get("decode")
    if not isinstance(decode, dict):
        raise ProfileError(f"profile {p} has no 'decode' settings")
    try:
        config = DecodeConfig.from_dict(decode)
    except (ConfigError, TypeError) as exc:
        raise ProfileError(f"profile {p} holds invalid decode settings: {exc}") from None
    meta = block.get("meta") or {}
    if not isinstance(meta, dict):
        raise ProfileError(f"profile {p}: 'meta' must be an object")
    return Profile(decode=config, meta=meta, format_version=version)


def load_profile(path: str | os.PathLike) -> DecodeConfig:
    """The one call production code needs: the tuned DecodeConfig of a profile file."""
    return read_profile(path).decode
