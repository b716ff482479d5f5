"""Profiles in MLflow's model registry, against a real local SQLite store and a real `mlflow server` on loopback:
register → alias `candidate` → promote → `decoder.load_profile("models:/NAME@production")`.

The export that registers a profile of a real study is in test_tuner_study.py; here the profile is written by
`decoder.save_profile` with the metadata an export gives it, so each store is exercised in seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import child_env, tracking_store
from mlflow import MlflowClient

from decoder import DecodeConfig, ProfileError, load_profile, read_profile, save_profile
from tuner.cli import main
from tuner.tracking import Tracker
from tuner.tracking.registry import (
    CANDIDATE,
    PRODUCTION,
    RegistryError,
    promote,
    register_profile,
    registry_client,
)

EXP = "dtune-registry-test"


def meta(confirmed: bool = True, accuracy: float = 0.9) -> dict:
    """The parts of an export's metadata the version's tags come from."""
    return {"confirmed": confirmed, "model": {"id": "dtune/tiny-arith", "fingerprint": "abc123"},
            "task": {"name": "arith"}, "study": {"name": "arith-study", "trial": 7},
            "test": {"pick": {"accuracy": accuracy, "accuracy_ci_low": accuracy - 0.05,
                              "accuracy_ci_high": accuracy + 0.03, "n": 500},
                     "baseline": {"accuracy": 0.91, "reused_from": None},
                     "non_inferiority": {"drop_points": 1.0, "upper_bound_points": 2.4, "margin_points": 3.0},
                     "speedup_tokens_per_s": 23.456}}


@pytest.fixture
def sqlite_uri(tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)  # stray ./mlflow.db or ./mlruns land here, and are not the store under test
    (tmp_path / "store").mkdir()
    return tracking_store(tmp_path / "store")


def register_promote_load(uri: str, tmp: Path, artifact_location: str | None = None) -> None:
    """The whole path on one store: two exports register versions 1 and 2, each becoming the candidate; promoting
    the candidate points production at it; production code loads it by alias; promoting a version by number
    moves the alias back."""
    tracker = Tracker.open(uri, EXP, artifact_location=artifact_location)
    parent = tracker.parent_run("arith-study", params={"task": "arith"}, tags={})
    assert parent
    first = DecodeConfig(mode="streaming", gen_length=64, block_size=16, window=32, threshold=0.9, alpha=0.3)
    second = DecodeConfig(mode="streaming", gen_length=64, block_size=16, window=16, threshold=0.8, alpha=0.5)
    p1 = save_profile(tmp / "profiles" / "arith-1.json", first, meta())
    p2 = save_profile(tmp / "profiles" / "arith-2.json", second, meta(accuracy=0.88))

    v1 = register_profile(registry_client(tracker.tracking_uri), "arith-tiny", p1, parent, meta())
    assert (v1.version, v1.alias, v1.uri) == ("1", CANDIDATE, "models:/arith-tiny@candidate")
    assert v1.source == f"runs:/{parent}/registry/arith-1"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version("arith-tiny", "1")
    assert mv.run_id == parent
    assert mv.tags["task"] == "arith" and mv.tags["model"] == "dtune/tiny-arith"
    assert mv.tags["model_fingerprint"] == "abc123" and mv.tags["dtune.confirmed"] == "true"
    assert mv.tags["test_accuracy"] == "90.0" and mv.tags["test_accuracy_ci95"] == "85.0–93.0"
    assert mv.tags["speedup_tokens_per_s"] == "23.46" and mv.tags["test_items"] == "500"
    assert load_profile("models:/arith-tiny@candidate", tracking_uri=uri) == first
    with pytest.raises(ProfileError, match="arith-tiny@production"):  # nothing promoted yet
        load_profile("models:/arith-tiny@production", tracking_uri=uri)

    done = promote("arith-tiny", tracking_uri=uri)  # the candidate goes to production
    assert (done.version, done.alias, done.previous) == ("1", PRODUCTION, None)
    assert load_profile("models:/arith-tiny@production", tracking_uri=uri) == first

    v2 = register_profile(registry_client(tracker.tracking_uri), "arith-tiny", p2, parent, meta(accuracy=0.88))
    assert v2.version == "2"
    assert str(client.get_model_version_by_alias("arith-tiny", CANDIDATE).version) == "2"
    assert load_profile("models:/arith-tiny@production", tracking_uri=uri) == first  # production unchanged
    assert promote("arith-tiny", tracking_uri=uri).previous == "1"
    profile = read_profile("models:/arith-tiny@production", tracking_uri=uri)
    assert profile.decode == second and profile.meta["test"]["pick"]["accuracy"] == 0.88
    assert promote("arith-tiny", version="1", tracking_uri=uri).previous == "2"  # roll back by number
    assert load_profile("models:/arith-tiny/1", tracking_uri=uri) == first
    assert load_profile("models:/arith-tiny@production", tracking_uri=uri) == first
    assert load_profile(p2) == second  # file paths keep working


def test_register_promote_and_load_on_the_local_sqlite_store(sqlite_uri, tmp_path):
    register_promote_load(sqlite_uri, tmp_path, artifact_location=str(tmp_path / "artifacts"))


def test_register_promote_and_load_through_a_tracking_server(mlflow_server, tmp_path, monkeypatch, capfd):
    """An MLflow 3 server checks a version's source against its run (a runs:/ URI of that run_id): the path a team
    uses. Ending a trial's run against a server prints no per-run "View run" line (the worker prints the study's
    link once)."""
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    register_promote_load(mlflow_server, tmp_path)
    tracker = Tracker.open(mlflow_server, EXP)
    parent = tracker.parent_run("arith-study", params={}, tags={})
    capfd.readouterr()
    assert tracker.log_trial(parent, 0, params={"w": 1}, metrics={"accuracy": 0.5}, tags={}, state="COMPLETE")
    assert "View run" not in capfd.readouterr().out


def test_promote_refuses_a_forced_profile_and_missing_versions(sqlite_uri, tmp_path):
    tracker = Tracker.open(sqlite_uri, EXP, artifact_location=str(tmp_path / "artifacts"))
    parent = tracker.parent_run("s", params={}, tags={})
    path = save_profile(tmp_path / "forced.json", DecodeConfig(mode="fast", gen_length=64), meta(confirmed=False))
    register_profile(registry_client(tracker.tracking_uri), "forced", path, parent, meta(confirmed=False))
    with pytest.raises(RegistryError, match="failed its held-out confirmation"):
        promote("forced", tracking_uri=sqlite_uri)
    assert promote("forced", force=True, tracking_uri=sqlite_uri).version == "1"
    with pytest.raises(RegistryError, match="no version 9"):
        promote("forced", version="9", tracking_uri=sqlite_uri)
    with pytest.raises(RegistryError, match="no version with alias 'staging'"):
        promote("forced", from_alias="staging", tracking_uri=sqlite_uri)
    with pytest.raises(RegistryError, match="not valid"):
        register_profile(registry_client(tracker.tracking_uri), "bad/name", path, parent, meta())


def test_promote_cli_prints_the_uri_production_loads(sqlite_uri, tmp_path, capsys):
    tracker = Tracker.open(sqlite_uri, EXP, artifact_location=str(tmp_path / "artifacts"))
    parent = tracker.parent_run("s", params={}, tags={})
    config = DecodeConfig(mode="streaming", gen_length=64, window=32)
    path = save_profile(tmp_path / "p.json", config, meta())
    register_profile(registry_client(tracker.tracking_uri), "arith-cli", path, parent, meta())
    assert main(["promote", "arith-cli", "--tracking-uri", sqlite_uri]) == 0
    out = capsys.readouterr().out
    assert "arith-cli version 1 → alias production" in out and "models:/arith-cli@production" in out
    assert "test accuracy 90.0% [95% CI 85.0–93.0]" in out
    assert load_profile("models:/arith-cli@production", tracking_uri=sqlite_uri) == config
    assert main(["promote", "arith-cli", "--version", "4", "--tracking-uri", sqlite_uri]) == 2
    assert "no version 4" in capsys.readouterr().err


def test_decoder_imports_no_mlflow_until_a_registry_uri_is_loaded(tmp_path):
    """Production code that loads profile files never pays for (or needs) MLflow; a models:/ URI imports it."""
    path = save_profile(tmp_path / "p.json", DecodeConfig(mode="fast", gen_length=64))
    code = ("import sys, decoder\nfrom decoder import load_profile, read_profile, DecodeConfig\n"
            f"assert load_profile({str(path)!r}).mode == 'fast'\n"
            "print('mlflow' in sys.modules)\n"
            "try:\n    load_profile('models:/nothing@production', tracking_uri='sqlite:///' + sys.argv[1])\n"
            "except decoder.ProfileError as exc:\n    print('mlflow' in sys.modules, type(exc).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "empty.db")], capture_output=True, text=True,
                          env=child_env(), cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "ProfileError"]
