"""Your own workload through the CLI: an lm-eval task file and an unlabelled prompts file (`examples/`) tuned with
the defaults for a task without a spec, the prompts file judged by agreement with the baseline, no labels read."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import MODEL, REPO, child_env, tracking_store

from decoder import read_profile

EXAMPLES = REPO / "examples"
SMALL = ["--trials", "3", "--batch-size", "12", "--set", "validation_size=24", "--set", "test_size=24",
         "--set", "decode.gen_length=32", "--set", "race.min_items=24", "--set", "chunk_size=12"]


def tuner(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuner", *args], cwd=cwd, env=child_env(), capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def prompts_study(tmp_path_factory):
    """A three-trial study of examples/prompts.jsonl (gen 64, 24 prompts a split), shown and exported."""
    tmp = tmp_path_factory.mktemp("prompts-study")
    store = ["--storage", f"sqlite:///{tmp}/s.db", "--tracking-uri", tracking_store(tmp)]
    # As the README's example: agreement on the answer after "####" (gen 64 reaches it). 24 prompts resolve nothing
    # but the baseline within the default margin, and the baseline is never a pick: a 60-point margin gives the
    # export a real pick to confirm.
    task = ["--task", str(EXAMPLES / "prompts.jsonl"), "--model", MODEL, *SMALL[4:], "--set", "decode.gen_length=64",
            "--set", "task_options.answer_regex=#### (-?[0-9]+)", "--set", "constraint.max_drop=60"]
    run = tuner(["run", *task, *SMALL[:4], *store, "--accept-low-power", "--no-progress"], tmp)
    assert run.returncode == 0, run.stderr[-3000:]
    show = tuner(["show", *task, "--json", *store], tmp)
    assert show.returncode == 0, show.stderr[-3000:]
    export = tuner(["export", *task, *store, "--force", "--out", str(tmp / "p.json")], tmp)
    return run, json.loads(show.stdout), export, tmp / "p.json"


def test_an_unlabelled_prompts_file_is_tuned_by_agreement_with_the_baseline(prompts_study):
    run, shown, export, profile = prompts_study
    assert "unlabelled prompts; dtune split them by a stable hash" in run.stderr  # the task's notice, at start
    assert "agreement vs tokens/s; feasible = the disagreement's upper bound" in " ".join(run.stdout.split())
    trials = {t["label"] or t["number"]: t for t in shown["trials"]}
    assert trials["vanilla"]["accuracy"] == 1.0 and trials["vanilla"]["drop_upper"] == 0.0  # agrees with itself
    assert shown["baseline"].get("accuracy") is None  # no labels: no accuracy is claimed
    others = [t for t in shown["trials"] if t["label"] != "vanilla"]
    # the quality of a trial is its agreement with the baseline: 1 − its disagreement estimate
    assert all(t["accuracy"] == pytest.approx(1 - t["drop"]) for t in others)
    assert export.returncode in (0, 3), export.stderr[-3000:]
    assert " test items" in export.stderr and "accuracy so far" not in export.stderr  # progress claims no accuracy


def test_the_exported_profile_records_the_agreement_promise(prompts_study):
    _, _, export, path = prompts_study
    if export.returncode == 3:
        pytest.skip("nothing resolved on 24 prompts to export")  # --force writes it whenever a pick exists
    meta = read_profile(path).meta
    assert "whatever the right answers are, accuracy can fall by at most that rate" in meta["promise"]
    rule = meta["test"]["non_inferiority"]
    assert rule["metric"] == "agreement" and "disagreement_points" in rule
    assert rule["n"] == meta["test"]["sequential"]["items_decoded"] <= 24  # the looks it took, of 24 test prompts
    assert "accuracy" not in meta["test"]["pick"] and meta["test"]["paired_test"] == {}


def test_an_lm_eval_task_file_is_tuned_with_its_labels(tmp_path):
    store = ["--storage", f"sqlite:///{tmp_path}/s.db", "--tracking-uri", tracking_store(tmp_path)]
    task = ["--task", str(EXAMPLES / "arith.yaml"), "--model", MODEL]
    run = tuner(["run", *task, "--trials", "1", *SMALL[2:], *store, "--accept-low-power", "--no-progress"], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "dtune divided its test split by a stable hash" in run.stderr  # no validation split in the file: said so
    assert "accuracy vs tokens/s" in run.stdout and "drop [upper]" in run.stdout
