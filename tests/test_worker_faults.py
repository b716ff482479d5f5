"""Issue 18, one test per bug found by killing workers and stopping PostgreSQL: each drives the worker, storage,
objective or tracker code where the bug was, on a real SQLite or PostgreSQL study and a real MLflow store, and
fails on the code before the fix. The end-to-end run that found them is in tests/test_distributed.py.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import warnings

import optuna
import pytest
from helpers import spec_for
from mlflow import MlflowClient
from optuna.trial import TrialState
from rich.console import Console

from tuner.app.context import Context, Options
from tuner.storage.database import open_storage
from tuner.storage.locks import StudyLock
from tuner.storage.retry import stale_handler
from tuner.study.lifecycle import FINISHED, create_study, fail_stale_trials
from tuner.study.objective import Objective
from tuner.study.space import config_key, distributions, suggest
from tuner.workers.worker import Worker, WorkerOptions

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed")


def _suggest_all(spec, trial):
    return {name: suggest(trial, name, dist) for name, dist in distributions(spec).items()}


def _fail_as_stale(url: str, study_name: str, number: int) -> None:
    """What another worker does to a trial whose heartbeat it judges stale: fail it and queue its retry."""
    other = optuna.load_study(study_name=study_name, storage=open_storage(url, heartbeat_interval=1))
    trial = next(t for t in other.get_trials() if t.number == number)
    other._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    stale_handler(other._storage)(other, other.get_trials()[number])


# --------------------------------------------------------------------------------------- 1: taken over
def test_a_worker_whose_trial_another_worker_failed_goes_on(tmp_path):
    """Optuna 5 answers the tell of a trial another worker already failed with `AssertionError: Should not
    reach.`, not the ValueError older releases raised; the worker must go on either way (its retry holds the
    result). Trial 0 is taken over before its objective returns, trial 1 before an objective write fails."""
    url = f"sqlite:///{tmp_path}/s.db"
    spec = spec_for(tmp_path, 3)
    storage = open_storage(url, heartbeat_interval=1)
    lock = StudyLock(storage, "taken")
    study, _ = create_study(spec, storage, "taken", 0, lock=lock)
    taken: list[int] = []

    def objective(trial):
        _suggest_all(spec, trial)
        if trial.number in (0, 1):
            _fail_as_stale(url, "taken", trial.number)
            taken.append(trial.number)
            if trial.number == 1:
                trial.set_user_attr("metrics", {})  # refused: the trial is finished
        return 0.5, float(trial.number)

    out = io.StringIO()
    worker = Worker(Context(spec, Options(storage=url)), WorkerOptions(heartbeat_interval=1),
                    console=Console(file=out, width=200))
    worker.work(study, lock, objective)
    lock.close()
    trials = study.get_trials()
    assert taken == [0, 1]
    assert [t.state for t in trials[:2]] == [TrialState.FAIL, TrialState.FAIL]
    assert len([t for t in trials if t.state in FINISHED]) == 3
    assert "trial 0 was failed and re-queued by another worker" in out.getvalue()
    assert "trial 1 was failed and re-queued by another worker" in out.getvalue()


# --------------------------------------------------------------------------------------- 2: outage grace
def test_the_study_lock_marks_the_storage_recovered_after_an_outage(pg_own):
    """A worker waiting on the study lock through an outage must start the post-outage grace period like every
    other path that waits on the database: right after it, every heartbeat looks old, and a live trial must not be
    judged stale."""
    pg = pg_own  # this test stops PostgreSQL: a cluster of its own
    url = pg.create_database("lock_outage")
    storage = open_storage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="live", directions=["maximize", "maximize"])
    live = study.ask()
    storage.record_heartbeat(live._trial_id)
    lock = StudyLock(storage, "live")
    pg.halt("fast")
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(lock.acquire()))
    waiter.start()
    time.sleep(3)  # longer than the grace period: the live trial's heartbeat is old when the database is back
    pg.resume()
    waiter.join(60)
    assert got == [True]
    assert storage.recovered_at is not None
    assert storage._get_stale_trial_ids(study._study_id) == []  # within the grace period after the outage
    lock.close()


def test_reading_trials_through_optunas_cache_waits_out_an_outage(pg_own):
    """`study.get_trials()` goes through Optuna's cache to private storage methods (`_get_trials`); those wait
    through an outage like every other call (they once ended the worker: "lost the study storage …
    PendingRollbackError"), and mark the storage recovered."""
    pg = pg_own  # this test stops PostgreSQL: a cluster of its own
    url = pg.create_database("cache_outage")
    storage = open_storage(url, heartbeat_interval=1)
    study = optuna.create_study(storage=storage, study_name="cached", directions=["maximize", "maximize"])
    study.enqueue_trial({})
    pg.halt("fast")
    got: list = []
    reader = threading.Thread(target=lambda: got.append(len(study.get_trials(deepcopy=False))))
    reader.start()
    time.sleep(2)
    pg.resume()
    reader.join(60)
    assert got == [1] and storage.recovered_at is not None


# --------------------------------------------------------------------------------------- 3: constraints
def test_a_retry_sets_its_own_constraint(tmp_path):
    """A stale trial that had already set its constraint is retried without it: the retry's own
    `set_constraint` must count (Optuna ignores a key already set, with a UserWarning)."""
    url = f"sqlite:///{tmp_path}/s.db"
    spec = spec_for(tmp_path, 4)
    storage = open_storage(url, heartbeat_interval=1, grace_period=1)
    study, _ = create_study(spec, storage, "constraint", 0)
    first = study.ask()
    _suggest_all(spec, first)
    first.set_constraint("accuracy", 0.25)
    first.set_user_attr("metrics", {"accuracy": 0.1})
    storage.record_heartbeat(first._trial_id)
    time.sleep(2.5)
    fail_stale_trials(study)
    retry = next(t for t in study.get_trials() if t.system_attrs.get("failed_trial") == first.number)
    assert retry.constraints == {} and "metrics" not in retry.user_attrs
    assert retry.user_attrs["reference"] == "vanilla"
    for _ in range(2):  # the two other references come first
        study.ask()
    again = study.ask()
    assert again.number == retry.number
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again.set_constraint("accuracy", -0.5)
    study.tell(again, [0.5, 1.0])
    assert study.get_trials()[again.number].constraints == {"accuracy": -0.5}


# --------------------------------------------------------------------------------------- 4-6: MLflow
def _study_tracking(tmp_path, spec, study, storage):
    """What a worker logs to MLflow with (`StudyTracking`), on a study of hand-made trials."""
    from tuner.tracking import Tracker
    from tuner.workers.study_tracking import StudyTracking

    tracker = Tracker.open(f"sqlite:///{tmp_path}/mlflow.db", "dtune-arith", retries=0)
    parent = tracker.parent_run(study.study_name, params={}, tags={})
    ctx = Context(spec, Options(storage=storage.url, study_name=study.study_name))
    return StudyTracking(ctx, tracker, StudyLock(storage, study.study_name), parent), tracker


def _finished_trials(spec, study, n: int, failed: int = 0) -> None:
    dists = distributions(spec)
    params = {name: (d.choices[0] if isinstance(d, optuna.distributions.CategoricalDistribution) else d.low)
              for name, d in dists.items()}
    for i in range(n + failed):
        state = TrialState.FAIL if i < failed else TrialState.COMPLETE
        study.add_trial(optuna.trial.create_trial(
            state=state, values=None if state == TrialState.FAIL else [0.5, 10.0 + i], params=params,
            distributions=dists, user_attrs={"metrics": {"accuracy": 0.5, "tokens_per_s": 10.0 + i}}))


def test_mlflow_converges_to_the_study_at_refresh_and_the_parent_run_is_closed(tmp_path):
    """Trials whose logging was lost (MLflow failing longer than the retries, a worker killed before its
    backlog drained) are logged at the next refresh; the parent's n_failed counts the study's failed trials; the
    worker that sees the study complete closes the parent run."""
    url = f"sqlite:///{tmp_path}/s.db"
    spec = spec_for(tmp_path, 4)
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="converge", directions=["maximize", "maximize"])
    _finished_trials(spec, study, 3, failed=1)
    tracking, tracker = _study_tracking(tmp_path, spec, study, storage)
    tracking.log_trial(study.get_trials()[1])  # the one trial whose logging got through
    tracking.refresh(study)
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    runs = client.search_runs([tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{tracking.parent}'")
    assert sorted(int(r.data.tags["dtune.trial_number"]) for r in runs) == [0, 1, 2, 3]
    assert {int(r.data.tags["dtune.trial_number"]): r.info.status for r in runs}[0] == "FAILED"
    parent = client.get_run(tracking.parent)
    assert parent.data.metrics["n_failed"] == 1 and parent.data.metrics["n_complete"] == 3
    assert parent.info.status == "RUNNING"
    tracking.finish(study)
    assert client.get_run(tracking.parent).info.status == "FINISHED"
    tracking.lock.close()


# --------------------------------------------------------------------------------------- 7: duplicates
def test_a_duplicate_of_a_running_configuration_waits_for_its_result(tmp_path):
    """Two trials of one configuration claimed at the same time: the second copies the first's result once it
    is in, instead of evaluating the configuration again (this objective has no evaluator: evaluating fails)."""
    url = f"sqlite:///{tmp_path}/s.db"
    spec = spec_for(tmp_path, 4)
    storage = open_storage(url, heartbeat_interval=1)
    study = optuna.create_study(storage=storage, study_name="dupes", directions=["maximize", "maximize"])
    point = {"window": 16, "threshold": 0.8, "alpha": 0.5, "early_exit": True}
    point = {k: v for k, v in point.items() if k in distributions(spec)}
    study.enqueue_trial(point)
    study.enqueue_trial(point)
    objective = Objective(spec, None, list(range(16)))  # type: ignore[arg-type]
    objective.poll_s = 0.2
    first = study.ask()
    params = _suggest_all(spec, first)
    first.set_user_attr("config_key", config_key(spec.config_for(params)))
    second = study.ask()

    def finish_first() -> None:
        time.sleep(1.0)
        first.set_user_attr("metrics", {"accuracy": 0.25, "tokens_per_s": 7.0})
        study.tell(first, [0.25, 7.0])

    finisher = threading.Thread(target=finish_first)
    finisher.start()
    started = time.monotonic()
    values = objective(second)
    finisher.join()
    assert values == (0.25, 7.0) and time.monotonic() - started >= 0.9
    assert study.get_trials()[second.number].user_attrs["duplicate_of"] == first.number


# --------------------------------------------------------------------------------------- 8: worker index
def test_the_n_workers_parent_names_workers_by_their_own_index(tmp_path):
    """The parent takes its workers' indices from the study and hands them out, so "worker 5 … was killed" is
    the process whose own lines say "worker 5"; a worker started by hand later gets the next free index."""
    from tuner.workers.launcher import exit_lines

    url = f"sqlite:///{tmp_path}/s.db"
    spec = spec_for(tmp_path, 4)
    storage = open_storage(url)
    create_study(spec, storage, "index", 0, worker=None)  # a worker already started on another machine
    _, first = create_study(spec, storage, "index", 0, worker=None, reserve=4)
    _, late = create_study(spec, storage, "index", 0, worker=None)
    assert (first, late) == (1, 5)
    assert exit_lines([1, 2, 3, 4], [101, 102, 103, 104], [0, -9, 0, 2]) == [
        "worker 2 (pid 102) was killed by signal 9", "worker 4 (pid 104) exited with code 2"]


# --------------------------------------------------------------------------------------- 9: show / export
def test_show_finds_a_study_run_with_validation_size(tmp_path, capsys):
    """`run --validation-size 48` changes the default study name; `show` (no such option) finds that study, and
    with two candidates lists both instead of telling the user to run a new study."""
    from tuner.cli import main

    url = f"sqlite:///{tmp_path}/s.db"
    common = ["--task", "arith", "--model", spec_for(tmp_path, 4).model, "--storage", url]
    for o in ("references=[{name: vanilla, mode: vanilla, steps: 32}]",):
        common += ["--set", o]
    base = spec_for(tmp_path, 4, ["references=[{name: vanilla, mode: vanilla, steps: 32}]"])
    storage = open_storage(url)
    from tuner.study.lifecycle import default_study_name
    from tuner.study.spec import load_spec

    ran = load_spec("arith", [f"model={base.model!r}", "references=[{name: vanilla, mode: vanilla, steps: 32}]",
                              "validation_size=48"])
    create_study(ran, storage, default_study_name(ran), 0)
    assert main(["show", *common, "--json"]) == 0
    captured = capsys.readouterr()
    assert default_study_name(ran) in captured.out and "--validation-size 48" in captured.err
    other = load_spec("arith", [f"model={base.model!r}", "references=[{name: vanilla, mode: vanilla, steps: 32}]",
                                "validation_size=64"])
    create_study(other, storage, default_study_name(other), 0)
    assert main(["show", *common]) == 2
    err = capsys.readouterr().err
    assert default_study_name(ran) in err and default_study_name(other) in err and "--study-name" in err
    assert "first" not in err  # not "run ... first": the studies exist


# --------------------------------------------------------------------------------------- 10: stderr noise
def test_creating_a_study_prints_no_optuna_info_line(tmp_path):
    """The --n-workers parent creates the study; Optuna's "[I …] A new study created in RDB" is not for users."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    optuna_logger = logging.getLogger("optuna")
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    optuna_logger.addHandler(handler)
    try:
        create_study(spec_for(tmp_path, 4), open_storage(f"sqlite:///{tmp_path}/s.db"), "quiet", 0)
    finally:
        optuna_logger.removeHandler(handler)
        optuna.logging.set_verbosity(before)
    assert not [r for r in records if "A new study created" in r.getMessage()]
    assert optuna.logging.get_verbosity() == before


def test_the_waiting_line_does_not_count_a_dead_workers_trial(tmp_path):
    """A worker with nothing to claim says what it waits for: a trial whose heartbeat stopped is not "running
    on other workers" (it is re-queued once stale, which this worker then evaluates)."""
    url = f"sqlite:///{tmp_path}/s.db"
    spec = spec_for(tmp_path, 1)
    storage = open_storage(url, heartbeat_interval=1, grace_period=5)
    lock = StudyLock(storage, "wait")
    study, _ = create_study(spec, storage, "wait", 0, lock=lock)
    dead = study.ask()  # claimed by a worker that died after one heartbeat
    _suggest_all(spec, dead)
    storage.record_heartbeat(dead._trial_id)
    time.sleep(2)

    def objective(trial):
        _suggest_all(spec, trial)
        return 0.5, 1.0

    out = io.StringIO()
    worker = Worker(Context(spec, Options(storage=url)), WorkerOptions(heartbeat_interval=1),
                    console=Console(file=out, width=300))
    worker.work(study, lock, objective)
    lock.close()
    text = out.getvalue()
    assert "0 trial(s) still running on other workers" in text and f"trial(s) {dead.number} without a heartbeat" in text
    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL  # re-queued once stale; the worker then claimed work
    assert any(t.system_attrs.get("failed_trial") == dead.number for t in trials)
    assert len([t for t in trials if t.state in FINISHED]) == 1
