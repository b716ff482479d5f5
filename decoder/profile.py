"""Profiles: a tuned `DecodeConfig` plus its provenance, in one small versioned JSON file (docs/profiles.md).

The file is a valid Hugging Face `generation_config.json` with everything of ours under a namespaced `"dtune"` key,
so what reads that file still can. Production code calls `load_profile(source, model=model)`: a profile tuned for
another model is refused, and MLflow is imported only to read a `models:/` or `runs:/` URI, so the decoder itself
never needs it.
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
    """A profile as read: its decode config, its metadata (`meta`: model, task, metrics, provenance) and format version."""
    decode: DecodeConfig
    meta: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


def profile_document(config: DecodeConfig, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document of a profile: `generation_config.json` keys for other readers, ours under `"dtune"`."""
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


def check_writable(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Where a profile may be written: refuse a directory, any existing file that is not a dtune profile (it was
    not written by dtune: never replaced), an existing profile unless `overwrite`, and a folder that can't be
    created or written. Called before the work that produces the profile, and again just before writing."""
    out = Path(path)
    if out.is_dir():
        raise ProfileError(f"{out} is a directory; give a file path for the profile (e.g. {out}/profile.json)")
    if out.exists() or out.is_symlink():
        if not _is_profile(out):
            raise ProfileError(f"{out} exists and is not a dtune profile; refusing to overwrite it (choose another "
                               "path)")
        if not overwrite:
            raise ProfileError(f"{out} already holds a dtune profile; pass --overwrite to replace it, or choose "
                               "another path")
    check_folder(out.parent, what=str(out))
    return out


def check_folder(folder: Path, *, what: str | None = None) -> None:
    """A folder profiles can be written to: it is a directory (or can be made under one) and writable."""
    what = what or f"a profile under {folder}"
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ProfileError(f"can't write {what}: {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ProfileError(f"can't write {what}: {folder} is not writable")


def _is_profile(path: Path) -> bool:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):  # unreadable, binary, not JSON
        return False
    return isinstance(doc, dict) and isinstance(doc.get("dtune"), dict) and doc["dtune"].get("format") == FORMAT


def save_profile(path: str | os.PathLike, config: DecodeConfig, meta: dict[str, Any] | None = None, *,
                 overwrite: bool = False) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves a half-written profile in production.

    Never replaces a file dtune did not write, and replaces an earlier profile only when `overwrite`
    (`check_writable`; ProfileError otherwise)."""
    out = check_writable(path, overwrite=overwrite)
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


REGISTRY_SCHEMES = ("models:/", "runs:/")  # MLflow URIs: a registered version (by alias or number), a run artifact


def is_registry_uri(source: str | os.PathLike) -> bool:
    """Whether `source` is an MLflow URI (`models:/...`, `runs:/...`) rather than a file path."""
    return isinstance(source, str) and source.startswith(REGISTRY_SCHEMES)


def read_profile(source: str | os.PathLike, *, tracking_uri: str | None = None) -> Profile:
    """The whole profile (decode config + metadata) of a file, or of an MLflow URI such as
    ``models:/gsm8k-llada@production`` (``tracking_uri`` defaults to MLflow's own: ``$MLFLOW_TRACKING_URI``, else
    ``sqlite:///mlflow.db``). Every way a profile can be wrong or missing is a ProfileError."""
    if is_registry_uri(source):
        with tempfile.TemporaryDirectory(prefix="dtune-profile-") as tmp:
            return _read_file(_download(str(source), tracking_uri, Path(tmp)), label=str(source))
    return _read_file(Path(source))


def _download(uri: str, tracking_uri: str | None, into: Path) -> Path:
    """The one profile file a registry URI names, downloaded into `into` (MLflow imported here only).

    A ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI is resolved here with a client bound to the given store:
    MLflow's own models:/ download looks the name up in the process-wide default registry (./mlflow.db), whatever
    tracking URI it is given."""
    try:
        import mlflow.artifacts
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise ProfileError(f"loading {uri} needs MLflow (pip install mlflow); a profile file path does not") from None
    try:
        source = uri
        if uri.startswith("models:/"):
            # The registry is the tracking store unless $MLFLOW_REGISTRY_URI says otherwise.
            tracking = tracking_uri or mlflow.get_tracking_uri()
            client = MlflowClient(tracking_uri=tracking, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or tracking)
            name, sep, alias = uri[len("models:/"):].partition("@")
            if sep:
                version = client.get_model_version_by_alias(name, alias).version
            else:
                name, _, version = name.partition("/")
                if not version.isdigit():
                    raise ProfileError(f"{uri}: use models:/NAME@ALIAS or models:/NAME/VERSION")
            source = client.get_model_version_download_uri(name, str(version))
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(into),
                                                         tracking_uri=tracking_uri))
    except MlflowException as exc:
        message = " ".join(str(exc.message).split())[:300]
        raise ProfileError(f"cannot load profile {uri}: {message}") from None
    except OSError as exc:
        raise ProfileError(f"cannot load profile {uri}: {exc}") from None
    files = [local] if local.is_file() else sorted(local.rglob("*.json"))
    if len(files) != 1:
        raise ProfileError(f"{uri} holds {len(files)} JSON files, not one profile")
    return files[0]


def _read_file(p: Path, label: str | None = None) -> Profile:
    label = label or str(p)
    if not p.is_file():
        raise ProfileError(f"profile {label} does not exist")
    try:
        doc = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"profile {label} is not valid JSON ({exc})") from None
    block = doc.get("dtune") if isinstance(doc, dict) else None
    if not isinstance(block, dict) or block.get("format") != FORMAT:
        raise ProfileError(f"{label} is not a dtune profile (no 'dtune' block with format {FORMAT!r})")
    version = block.get("format_version")
    if version != FORMAT_VERSION:
        raise ProfileError(
            f"profile {label} has format_version {version!r}; this dtune reads version {FORMAT_VERSION}"
            + (" (upgrade dtune)" if isinstance(version, int) and version > FORMAT_VERSION else "")
        )
    decode = block.get("decode")
    if not isinstance(decode, dict):
        raise ProfileError(f"profile {label} has no 'decode' settings")
    try:
        config = DecodeConfig.from_dict(decode)
    except (ConfigError, TypeError) as exc:
        raise ProfileError(f"profile {label} holds invalid decode settings: {exc}") from None
    meta = block.get("meta") or {}
    if not isinstance(meta, dict):
        raise ProfileError(f"profile {label}: 'meta' must be an object")
    return Profile(decode=config, meta=meta, format_version=version)


def load_profile(source: str | os.PathLike, model: Any = None, *, allow_mismatch: bool = False,
                 tracking_uri: str | None = None) -> DecodeConfig:
    """The one call production code needs: the tuned DecodeConfig of a profile file or of a registry URI
    (``models:/NAME@production``).

    Pass the `model` it will decode with (a loaded model, or its `source` dict): a profile tuned for another model
    (by fingerprint, else by id) is then a ProfileError unless `allow_mismatch`."""
    profile = read_profile(source, tracking_uri=tracking_uri)
    if model is not None:
        check_model(profile, model, path=source, allow_mismatch=allow_mismatch)
    return profile.decode


def check_model(profile: Profile, model: Any, *, path: str | os.PathLike = "the profile",
                allow_mismatch: bool = False) -> None:
    """Refuse a profile tuned for another model than `model` (a loaded model or its `source` dict).

    The fingerprint (config + weight headers) decides when both sides have one, so the same checkpoint under
    another path or hub id passes; otherwise the ids are compared. A profile without model metadata (written by
    hand) can't be checked and passes."""
    if allow_mismatch:
        return
    source = model if isinstance(model, dict) else getattr(model, "source", None) or {}
    tuned = profile.meta.get("model") if isinstance(profile.meta.get("model"), dict) else {}
    want_fp, have_fp = tuned.get("fingerprint"), source.get("fingerprint")
    want_id, have_id = tuned.get("id"), source.get("id")
    if want_fp and have_fp:
        mismatch = want_fp != have_fp
    else:
        mismatch = bool(want_id and have_id and want_id != have_id)
    if mismatch:
        raise ProfileError(
            f"{path} was tuned for model {want_id!r} (fingerprint {want_fp}), not {have_id!r} (fingerprint "
            f"{have_fp}); its settings need not keep this model's accuracy. Tune this model, or pass "
            "--allow-model-mismatch (allow_mismatch=True) to use it anyway")
