"""Profiles in MLflow's model registry: a confirmed export becomes a version, aliases say which one production uses.

A version's source is the profile uploaded to the study's parent run (``registry/<profile name>/``, one file), with
that run's id: an MLflow 3 server accepts only a source it can tie to the run it names (``_validate_source_run``),
and the registry page then links back to the study. Unlike the tracker's calls these raise: registering or
promoting is what the user asked for, so a failure is a one-line :class:`RegistryError` (exit 2).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..base.errors import TunerError, one_line
from ..storage.record import ProfileMeta
from .values import tag_value

CANDIDATE, PRODUCTION = "candidate", "production"
ARTIFACT_DIR = "registry"  # under the study's parent run: registry/<profile stem>/<profile file>
CONFIRMED_TAG = "dtune.confirmed"

# MLflow's own rule for registered-model names is loose (no "/" or ":" among others); ours keeps names that read
# well in a models:/NAME@alias URI and on every artifact store.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")  # MLflow refuses aliases like "v1" or "latest"


class RegistryError(TunerError):
    """A registry name is malformed, the registry can't be reached, or the version/alias asked for doesn't exist."""


def check_name(name: str) -> str:
    """Refuse a bad registered-model name at once (before any decoding)."""
    if not _NAME.match(name or ""):
        raise RegistryError(f"registered model name {name!r} is not valid: use letters, digits, '.', '_' and '-' "
                            "(starting with a letter or digit, at most 100 characters)")
    return name


def check_alias(alias: str) -> str:
    """Refuse a bad alias at once, before anything is done (MLflow reserves ``latest`` and ``v<number>``)."""
    if not _ALIAS.match(alias or "") or re.fullmatch(r"v\d+|latest", alias.lower()):
        raise RegistryError(f"alias {alias!r} is not valid: letters, digits, '_' and '-', starting with a letter "
                            "('latest' and 'v<number>' are reserved by MLflow)")
    return alias


def model_uri(name: str, alias: str = PRODUCTION) -> str:
    """What production code passes to `decoder.load_profile`."""
    return f"models:/{name}@{alias}"


@dataclass(frozen=True)
class RegisteredProfile:
    """A registered version of a profile, and the alias just pointed at it."""
    name: str
    version: str
    alias: str | None
    source: str

    @property
    def uri(self) -> str:
        """The URI to load it by: ``models:/NAME@ALIAS``, else ``models:/NAME/VERSION``."""
        return model_uri(self.name, self.alias) if self.alias else f"models:/{self.name}/{self.version}"


def profile_tags(meta: ProfileMeta | Mapping[str, Any]) -> dict[str, str]:
    """The version's tags, from a profile's metadata: what a reviewer filters and compares versions by."""
    meta = meta if isinstance(meta, ProfileMeta) else ProfileMeta.read(meta)
    test, pick, rule = meta.test, meta.test.pick, meta.test.non_inferiority

    def pct(x: Any) -> str:
        return f"{100 * x:.1f}" if isinstance(x, (int, float)) else ""

    tags = {
        "task": meta.task.get("name"),
        "model": meta.model.get("id"),
        "model_fingerprint": meta.model.get("fingerprint"),
        "test_accuracy": pct(pick.get("accuracy")),
        "test_accuracy_ci95": (f"{pct(pick.get('accuracy_ci_low'))}–{pct(pick.get('accuracy_ci_high'))}"
                               if "accuracy_ci_low" in pick else ""),
        "test_items": pick.get("n"),
        "baseline_test_accuracy": pct(test.baseline.get("accuracy")),
        "paired_drop_points": rule.get("drop_points"),
        "paired_drop_upper_points": rule.get("upper_bound_points"),
        "margin_points": rule.get("margin_points"),
        "speedup_tokens_per_s": (f"{test.speedup_tokens_per_s:.2f}"
                                 if isinstance(test.speedup_tokens_per_s, (int, float)) else ""),
        "study": meta.study.name,
        "trial": meta.study.trial,
        CONFIRMED_TAG: str(bool(meta.confirmed)).lower(),
    }
    return {k: tag_value(v) for k, v in tags.items() if v not in (None, "")}


def registry_client(tracking_uri: str | None, client: Any = None) -> Any:
    """A client whose registry is the tracking store's (or $MLFLOW_REGISTRY_URI). MlflowClient(tracking_uri=X)
    alone resolves its registry from the process-wide default (./mlflow.db), not from X."""
    if client is not None:
        return client
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri or mlflow.get_tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or uri)


def _fail(what: str, exc: Exception) -> RegistryError:
    return RegistryError(f"{what}: {one_line(exc, with_type=True, limit=300)}")


def register_profile(client: Any, name: str, profile: str | Path, run_id: str,
                     meta: ProfileMeta | Mapping[str, Any], *,
                     alias: str | None = CANDIDATE) -> RegisteredProfile:
    """Upload `profile` to run `run_id`, add it as a new version of registered model `name` (created on first use)
    tagged from `meta`, and point `alias` at it. `client` comes from :func:`registry_client`."""
    from mlflow.exceptions import MlflowException

    check_name(name)
    if alias:
        check_alias(alias)
    path = Path(profile)
    folder = f"{ARTIFACT_DIR}/{path.stem}"
    tags = profile_tags(meta)
    try:
        client.log_artifact(run_id, str(path), folder)
        try:
            client.create_registered_model(
                name, tags={k: tags[k] for k in ("task", "model") if k in tags},
                description="dtune decoding profiles (Hugging Face generation_config.json with a 'dtune' block); "
                            "load one with decoder.load_profile('models:/NAME@production').")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"runs:/{run_id}/{folder}"
        version = client.create_model_version(
            name, source, run_id=run_id, tags=tags,
            description=f"{tags.get('task', '?')} on {tags.get('model', '?')}: test accuracy "
                        f"{tags.get('test_accuracy', '?')}% [95% CI {tags.get('test_accuracy_ci95', '?')}], "
                        f"{tags.get('speedup_tokens_per_s', '?')}x the baseline's tokens/s; trial "
                        f"{tags.get('trial', '?')} of study {tags.get('study', '?')}")
        if alias:
            client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as exc:
        raise _fail(f"could not register {path.name} as {name!r}", exc) from None
    return RegisteredProfile(name=name, version=str(version.version), alias=alias, source=source)


@dataclass(frozen=True)
class Promotion:
    """What `promote` did: the alias now at `version`, the version it named before, and the version's tags."""
    name: str
    version: str
    alias: str
    previous: str | None  # the version the alias pointed at before, if any
    tags: dict[str, str]


def promote(name: str, *, version: str | None = None, from_alias: str = CANDIDATE, to_alias: str = PRODUCTION,
            force: bool = False, tracking_uri: str | None = None, client: Any = None) -> Promotion:
    """Point `to_alias` at `version` (default: the version `from_alias` names). A version whose profile was forced
    past a failed confirmation (tag dtune.confirmed=false) is refused unless `force`."""
    from mlflow.exceptions import MlflowException

    check_name(name)
    check_alias(to_alias)
    client = registry_client(tracking_uri, client)
    try:
        if version is None:
            check_alias(from_alias)
            try:
                mv = client.get_model_version_by_alias(name, from_alias)
            except MlflowException as exc:
                raise RegistryError(f"registered model {name!r} has no version with alias {from_alias!r} "
                                    f"({one_line(exc, limit=200)}); pass --version") from None
        else:
            try:
                mv = client.get_model_version(name, str(version))
            except MlflowException as exc:
                raise RegistryError(f"registered model {name!r} has no version {version} "
                                    f"({one_line(exc, limit=200)})") from None
        if mv.tags.get(CONFIRMED_TAG) == "false" and not force:
            raise RegistryError(f"version {mv.version} of {name!r} failed its held-out confirmation (it was "
                                f"exported with --force); not promoted to {to_alias!r} (--force promotes it anyway)")
        try:
            previous = client.get_model_version_by_alias(name, to_alias).version
        except MlflowException:
            previous = None
        client.set_registered_model_alias(name, to_alias, mv.version)
    except MlflowException as exc:
        raise _fail(f"could not promote {name!r}", exc) from None
    return Promotion(name=name, version=str(mv.version), alias=to_alias,
                     previous=None if previous is None else str(previous), tags=dict(mv.tags))
