"""Tracker against real MLflow stores (sqlite files under tmp_path, a dead http port); nothing is mocked.

A fresh sqlite store costs ~4 s of migrations, so one migrated template is copied per test.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import multiprocessing as mp
import shutil
import time
from pathlib import Path

import pytest
from helpers import tracking_store
from mlflow import MlflowClient
from mlflow.entities import ViewType

from tuner.tracking import STUDY_TAG, Tracker, TrackingError
from tuner.verdict.pareto import TrialPoint

EXP = "dtune-test"


@pytest.fixture
def store(tmp_path, monkeypatch) -> tuple[str, Path]:
    """(tracking URI, artifact root) of a private, already-migrated store; CWD moved so stray ./mlruns land here."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "store").mkdir()
    return tracking_store(tmp_path / "store"), tmp_path / "artifacts"


def open_tracker(store, **kw) -> Tracker:
    uri, artifacts = store
    return Tracker.open(uri, EXP, artifact_location=str(artifacts), **kw)


def children(tracker: Tracker, parent: str) -> list:
    return tracker.client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )


def test_parent_run_is_idempotent_across_trackers(store):
    t1 = open_tracker(store)
    pid = t1.parent_run(
        "gsm8k-llada", params={"task": "gsm8k", "trials": 40, "space.w": [1, 8]}, tags={"hw.gpu": "H100"}
    )
    assert pid
    assert t1.parent_run("gsm8k-llada", params={"task": "gsm8k"}, tags={}) == pid
    t2 = open_tracker(store)  # a second worker / a resumed study
    assert t2.experiment_id == t1.experiment_id
    assert t2.parent_run("gsm8k-llada", params={}, tags={"dtune.note": "resumed"}) == pid
    run = t1.client.get_run(pid)
    assert run.info.run_name == "gsm8k-llada"
    assert run.data.params == {"task": "gsm8k", "trials": "40", "space.w": "[1, 8]"}
    assert run.data.tags[STUDY_TAG] == "gsm8k-llada" and run.data.tags["hw.gpu"] == "H100"
    assert run.data.tags["dtune.note"] == "resumed"  # missing tags are added on resume
    assert t1.parent_run("other-study", params={}, tags={}) not in (None, pid)


def test_trial_runs_are_nested_and_relogging_updates(store):
    t = open_tracker(store)
    pid = t.parent_run("s", params={}, tags={})
    long = "x" * 7000
    ids = {
        n: t.log_trial(
            pid,
            n,
            params={"window": n, "threshold": None, "blob": long},
            metrics={"accuracy": 0.5 + n / 10, "tokens_per_s": 100.0 * (n + 1), "nfe": float("nan")},
            tags={"reference": "vanilla" if n == 0 else ""},
            state=state,
        )
        for n, state in [(0, "COMPLETE"), (1, "PRUNED"), (2, "FAIL"), (3, "RUNNING")]
    }
    assert all(ids.values())
    runs = {r.info.run_id: r for r in children(t, pid)}
    assert set(runs) == set(ids.values())
    status = {int(r.data.tags["dtune.trial_number"]): r.info.status for r in runs.values()}
    assert status == {0: "FINISHED", 1: "KILLED", 2: "FAILED", 3: "RUNNING"}
    r0 = runs[ids[0]]
    assert r0.info.run_name == "trial-0" and r0.data.tags["mlflow.parentRunId"] == pid
    assert r0.data.params["threshold"] == "none" and len(r0.data.params["blob"]) == 6000
    assert "nfe" not in r0.data.metrics  # NaN skipped

    # The running trial finishes; trial 0 is re-logged: same runs, updated values.
    assert (
        t.log_trial(pid, 3, params={"window": 3}, metrics={"accuracy": 0.9}, tags={}, state="COMPLETE")
        == ids[3]
    )
    assert (
        t.log_trial(pid, 0, params={"extra": 1}, metrics={"accuracy": 0.99}, tags={}, state="COMPLETE")
        == ids[0]
    )
    runs = {r.info.run_id: r for r in children(t, pid)}
    assert len(runs) == 4
    assert runs[ids[3]].info.status == "FINISHED"
    assert runs[ids[0]].data.metrics["accuracy"] == pytest.approx(0.99)
    assert runs[ids[0]].data.params["extra"] == "1" and runs[ids[0]].data.params["window"] == "0"


def test_refresh_writes_artifacts_and_metrics(store):
    t = open_tracker(store)
    pid = t.parent_run("s", params={}, tags={})
    points = [
        TrialPoint(0, 0.80, 10.0, label="vanilla", params={"window": 1}),
        TrialPoint(1, 0.78, 80.0, params={"window": 4}, nfe=9.0, ci_low=0.7, ci_high=0.85),
        TrialPoint(2, 0.50, 100.0, params={"window": 8}),
        TrialPoint(3, 0.40, 50.0, feasible=False, params={"window": 6}),
        TrialPoint(4, 0.30, 20.0, state="PRUNED", params={"window": 2}),
        TrialPoint(5, math.nan, math.nan, state="FAIL", params={"window": 3}),
    ]
    t.refresh_study_artifacts(pid, points, title="s")
    t.refresh_study_artifacts(pid, points, title="s")  # rewriting is fine
    names = {a.path for a in t.client.list_artifacts(pid)}
    assert {"pareto.html", "pareto.png", "trials.csv", "trials.json", "front.json"} <= names
    folder = Path(t.client.download_artifacts(pid, "", dst_path="dl"))
    assert (folder / "pareto.png").stat().st_size > 1000
    assert b"plotly" in (folder / "pareto.html").read_bytes()[:2_000_000]
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert [r["number"] for r in rows] == ["0", "1", "2", "3", "4", "5"] and rows[1]["param.window"] == "4"
    strict = json.loads((folder / "trials.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert strict[5]["accuracy"] is None and strict[1]["on_front"] is True
    assert json.loads((folder / "front.json").read_text())["knee_trial"] == 1
    m = t.client.get_run(pid).data.metrics
    assert m["n_complete"] == 4 and m["n_pruned"] == 1 and m["n_failed"] == 1 and m["front_size"] == 3
    assert m["best_accuracy"] == pytest.approx(0.80) and m["best_tokens_per_s"] == pytest.approx(100.0)
    # reference = worst corner of complete points = (0.40, 10): 90*0.1 + 70*0.28 + 0*0.02
    assert m["hypervolume"] == pytest.approx(28.6)


def test_open_unreachable_http_fails_fast():
    start = time.monotonic()
    with pytest.raises(TrackingError, match=r"http://127\.0\.0\.1:9.*unreachable"):
        Tracker.open("http://127.0.0.1:9", EXP)
    assert time.monotonic() - start < 15
    with pytest.raises(TrackingError) as err:  # credentials never reach the message
        Tracker.open("http://alice:s3cret@127.0.0.1:9", EXP, retries=0)
    assert "s3cret" not in str(err.value) and "alice:***@" in str(err.value)


def test_open_sqlite_in_missing_directory(tmp_path):
    with pytest.raises(TrackingError, match="does not exist"):
        Tracker.open(f"sqlite:///{tmp_path / 'nope' / 'mlflow.db'}", EXP)


def test_broken_store_warns_instead_of_raising(store, tmp_path, caplog):
    t = open_tracker(store, retries=1, backoff_s=0.01)
    pid = t.parent_run("s", params={}, tags={})
    assert pid
    shutil.rmtree(tmp_path / "store")  # the sqlite file and its folder vanish mid-study
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tuner.tracking"):
        assert (
            t.log_trial(pid, 0, params={"w": 1}, metrics={"accuracy": 0.5}, tags={}, state="COMPLETE") is None
        )
        assert t.parent_run("s2", params={}, tags={}) is None
        t.refresh_study_artifacts(pid, [TrialPoint(0, 0.5, 1.0)], title="s")
        t.set_tags(pid, {"a": "b"})
        t.finish(pid)
    ours = [r for r in caplog.records if r.name == "tuner.tracking"]
    assert len(ours) == 5 and all("\n" not in r.getMessage() for r in ours)
    assert "trial 0" in ours[0].getMessage()


def test_dead_http_server_mid_run_warns(store, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    t = open_tracker(store, retries=1, backoff_s=0.01)
    pid = t.parent_run("s", params={}, tags={})
    t.client = MlflowClient(tracking_uri="http://127.0.0.1:9")  # the server went away
    with caplog.at_level(logging.WARNING, logger="tuner.tracking"):
        assert t.log_trial(pid, 0, params={}, metrics={"accuracy": 0.5}, tags={}, state="COMPLETE") is None
    assert any("trial 0" in r.getMessage() for r in caplog.records if r.name == "tuner.tracking")


def test_parent_run_race_keeps_the_oldest(store, monkeypatch):
    """Deterministic replay of the race: another worker's run appears just after our search came back empty."""
    t = open_tracker(store)
    other = t.client.create_run(
        t.experiment_id, tags={STUDY_TAG: "s", "dtune.run_type": "study"}, run_name="s", start_time=1
    ).info.run_id
    real = Tracker._study_runs
    calls = []

    def late_first_search(self, name):
        calls.append(name)
        return [] if len(calls) == 1 else real(self, name)

    monkeypatch.setattr(Tracker, "_study_runs", late_first_search)
    assert t.parent_run("s", params={"a": 1}, tags={}) == other
    active = t.client.search_runs([t.experiment_id], f"tags.`{STUDY_TAG}` = 's'")
    deleted = t.client.search_runs(
        [t.experiment_id], f"tags.`{STUDY_TAG}` = 's'", run_view_type=ViewType.DELETED_ONLY
    )
    assert [r.info.run_id for r in active] == [other] and len(deleted) == 1
    assert t.client.get_run(other).data.params == {"a": "1"}


RACES = 4


def _race_worker(uri: str, artifacts: str, study_db: str, barrier, out) -> None:
    from tuner.storage.database import open_storage
    from tuner.storage.locks import StudyLock

    tracker = Tracker.open(uri, "race-exp", artifact_location=artifacts, backoff_s=0.2)
    storage = open_storage(study_db)
    for i in range(RACES):
        barrier.wait(timeout=60)  # both workers ask for the same new study at the same moment
        with StudyLock(storage, f"raced-{i}"):  # as a worker calls it: under the study's lock
            out.put((i, tracker.parent_run(f"raced-{i}", params={"p": i}, tags={})))


def test_two_processes_end_with_one_parent(store, tmp_path):
    """Workers create the parent run under the study lock (tuner.workers.worker), the one de-duplication a study has."""
    uri, artifacts = store
    study_db = f"sqlite:///{tmp_path}/study.db"
    ctx = mp.get_context("spawn")  # a forked child would share the parent's sqlite connections
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(uri, str(artifacts), study_db, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    got: dict[int, set[str]] = {}
    for _ in range(2 * RACES):
        i, run_id = out.get(timeout=90)
        got.setdefault(i, set()).add(run_id)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("race-exp")
    for i in range(RACES):
        assert len(got[i]) == 1 and None not in got[i], got[i]
        active = client.search_runs([exp.experiment_id], f"tags.`{STUDY_TAG}` = 'raced-{i}'")
        assert [r.info.run_id for r in active] == list(got[i])
        assert active[0].data.params == {"p": str(i)}


def test_backlog_runs_calls_in_order_survives_errors_and_drains_on_close(caplog):
    import threading
    import time

    from tuner.tracking import Backlog

    done, threads = [], set()

    def slow(i):
        time.sleep(0.05)
        threads.add(threading.current_thread().name)
        done.append(i)

    def broken():
        raise RuntimeError("server said no")

    backlog = Backlog()
    backlog.submit(slow, 0)
    backlog.submit(broken)
    for i in range(1, 4):
        backlog.submit(slow, i)
    assert len(done) < 4  # submit doesn't wait for the work
    backlog.close()
    assert done == [0, 1, 2, 3] and threads == {"dtune-tracking"}
    assert "server said no" in caplog.text
    backlog.close()  # idempotent
