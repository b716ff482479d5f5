"""Many workers on one study: PostgreSQL + an MLflow server, the SQLite defaults, crashes, outages, `--n-workers`.

The integration tests start real worker processes (`python -m tuner run`) on the bundled tiny model with the small
settings of tests/helpers.py, a throw-away PostgreSQL cluster (tools/pg_server.py; skipped without Debian's
server binaries) and an `mlflow server` subprocess, SIGKILL one worker in the middle of a trial and check what
the study and the tracking server hold afterwards. Heartbeats are every 2 s (stale after 6 s) to keep them short.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from helpers import MODEL, Parked, Parking, child_env, spec_for, tracking_store
from mlflow import MlflowClient
from mlflow.entities import ViewType
from optuna.trial import TrialState

from tools.pg_server import wait_until
from tuner.storage.database import open_storage
from tuner.storage.errors import StorageError
from tuner.study.lifecycle import FINISHED, create_study, fail_stale_trials
from tuner.study.objective import Objective
from tuner.study.space import distributions, suggest

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed")]
REPO = Path(__file__).resolve().parents[1]
HEARTBEAT = "2"  # seconds; stale after 3 intervals
REFERENCES = ("vanilla", "fast-dllm", "paper")


def tiny_args(trials: int, validation_size: int = 16) -> list[str]:
    """helpers.small_args, smaller still (4 workers share 2 cores), and no accuracy bar: the tiny model's
    accuracy is noise at this size, and without pruning every finished trial is COMPLETE, which the checks count."""
    sets = ["decode.gen_length=64", "batch_size=16", "chunk_size=8", f"validation_size={validation_size}",
            f"task_options.validation_size={validation_size}", "task_options.test_size=16",
            "references=[{name: vanilla, mode: vanilla, steps: 16}, "
            "{name: fast-dllm, mode: streaming, window: null, threshold: 0.9, alpha: 0.0, early_exit: false}, "
            "{name: paper, mode: streaming, window: 32, threshold: 0.9, alpha: 0.3, early_exit: true}]",
            "search_space.window.choices=[16, 32, null]", "constraint.max_drop=100", f"trials={trials}"]
    args = ["--task", "arith", "--model", MODEL, "--no-progress", "--accept-low-power", "--heartbeat-interval",
            HEARTBEAT]
    for s in sets:
        args += ["--set", s]
    return args


def start_workers(n: int, args: list[str], cwd: Path, tag: str, env: dict[str, str] | None = None
                  ) -> list[subprocess.Popen]:
    procs = []
    for i in range(n):
        out = open(cwd / f"{tag}-{i}.out", "w")  # noqa: SIM115 - closed when the process is reaped
        procs.append(subprocess.Popen([sys.executable, "-m", "tuner", "run", *args], cwd=cwd,
                                      env=env or child_env(), stdout=out, stderr=subprocess.STDOUT, text=True))
    return procs


def logs(cwd: Path, tag: str) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(cwd.glob(f"{tag}-*.out")))


def load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def worker_pid(trial: optuna.trial.FrozenTrial) -> int | None:
    match = re.search(r":(\d+)\)$", trial.user_attrs.get("worker", ""))
    return int(match.group(1)) if match else None


def kill_the_baseline_mid_trial(storage: str, name: str, procs: list[subprocess.Popen], parking: Parking) -> int:
    """SIGKILL the worker running the baseline (vanilla, the slowest trial) while it is parked at the start of its
    evaluation; returns the killed trial's number. Killing the baseline also checks that its retry stays the
    baseline."""
    by_pid = {p.pid: p for p in procs}

    def baseline(parked: list[Parked]) -> Parked | None:
        if not parked:  # (a trial is parked only once the study exists)
            return None
        trials = {t.number: t for t in load(storage, name).get_trials(deepcopy=False)}
        return next((m for m in parked if m.pid in by_pid and m.trial in trials
                     and trials[m.trial].user_attrs.get("reference") == "vanilla"), None)

    victim = baseline(parking.wait(lambda parked: baseline(parked) is not None, procs))
    assert victim is not None
    running = load(storage, name).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert victim.trial in {t.number for t in running}
    parking.kill(victim)
    by_pid[victim.pid].wait()
    return victim.trial


def wait_all(procs: list[subprocess.Popen], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    return codes


def check_study(storage: str, name: str, budget: int, killed: int | None) -> optuna.Study:
    """Exactly `budget` finished trials, none lost, none evaluated twice, the killed one retried."""
    study = load(storage, name)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == budget, [(t.number, t.state.name) for t in trials]
    assert all(t.state == TrialState.COMPLETE for t in finished)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # Each reference evaluated to completion exactly once.
    for ref in REFERENCES:
        assert [t.user_attrs.get("reference") for t in finished].count(ref) == 1, ref
    # Every failed trial (a killed worker's) was re-queued and its retry finished: nothing lost.
    retries = [t for t in trials if "failed_trial" in t.system_attrs]
    retry_of = {t.system_attrs["failed_trial"]: t for t in retries}
    assert len(retry_of) == len(retries)  # each failed trial re-queued once, not by every worker that noticed
    for t in trials:
        if t.state == TrialState.FAIL:
            assert t.number in retry_of and retry_of[t.number].state == TrialState.COMPLETE, t.number
    if killed is not None:
        original, retry = trials[killed], retry_of.get(killed)
        assert original.state == TrialState.FAIL
        assert retry is not None and retry.state == TrialState.COMPLETE
        assert retry.params == original.params
        assert retry.user_attrs.get("reference") == original.user_attrs.get("reference")
        assert retry.user_attrs["worker"] != original.user_attrs["worker"]
    baseline = study.user_attrs["baseline"]
    assert trials[baseline["trial"]].user_attrs["reference"] == "vanilla"
    assert trials[baseline["trial"]].state == TrialState.COMPLETE
    return study


def check_mlflow(uri: str, name: str, study: optuna.Study, killed: int | None) -> None:
    """One parent run (none created and deleted either), one nested run per trial, all under it."""
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("dtune-arith")
    parents = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL,
                                 filter_string=f"tags.`dtune.run_type` = 'study' AND tags.`dtune.study` = '{name}'")
    assert len(parents) == 1
    parent = parents[0].info.run_id
    assert study.user_attrs["mlflow_parent_run_id"] == parent
    children = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000,
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    numbers = [int(c.data.tags["dtune.trial_number"]) for c in children]
    assert len(numbers) == len(set(numbers))  # one nested run per trial
    finished = {t.number for t in study.get_trials(states=FINISHED)}
    assert finished <= set(numbers)
    if killed is not None:  # the worker that noticed the dead one's trial logged it as failed
        run = next(c for c in children if int(c.data.tags["dtune.trial_number"]) == killed)
        assert run.data.tags["dtune.state"] == "FAIL" and run.info.status == "FAILED"
    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {"pareto.html", "trials.csv", "front.json"} <= artifacts


# ---------------------------------------------------------------------------------------------- servers


# ---------------------------------------------------------------------------------------------- fast checks


def _stale_storage(url: str):
    return open_storage(url, heartbeat_interval=1, grace_period=1)


def test_a_retried_trial_keeps_its_params_and_reference(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    spec = spec_for(tmp_path, 4)
    storage = _stale_storage(url)
    study, _ = create_study(spec, storage, "retry", 0)
    vanilla = study.ask()  # the first enqueued reference; its worker "dies": only one heartbeat, ever
    for name, dist in distributions(spec).items():
        suggest(vanilla, name, dist)
    storage.record_heartbeat(vanilla._trial_id)
    time.sleep(2.5)
    fail_stale_trials(study)
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.state == TrialState.WAITING and retry.user_attrs["reference"] == "vanilla"
    assert retry.params == trials[0].params
    # A retry that somehow lost the attr still finds its reference through the original trial.
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=trials[0].params,
                                              distributions=trials[0].distributions,
                                              system_attrs={"failed_trial": 0}))
    picked = [study.ask() for _ in range(3)]  # WAITING trials come first: fast-dllm, paper, then the retries
    assert [Objective.reference_of(t) for t in picked] == ["fast-dllm", "paper", "vanilla"]
    assert Objective.reference_of(study.ask()) == "vanilla"


def test_a_running_trial_without_any_heartbeat_is_an_orphan_and_retried(tmp_path):
    storage = _stale_storage(f"sqlite:///{tmp_path}/s.db")
    storage.orphan_after_s = 1
    study, _ = create_study(spec_for(tmp_path, 4), storage, "orphan", 0)
    study.ask()  # created, never heartbeated: a worker killed before its first heartbeat
    time.sleep(1.5)
    fail_stale_trials(study)
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert any(t.system_attrs.get("failed_trial") == 0 and t.state == TrialState.WAITING for t in trials)


def test_sqlite_on_a_network_file_system_is_refused(tmp_path, monkeypatch):
    import tuner.storage.database as storage_mod

    monkeypatch.setattr(storage_mod, "_fs_type", lambda path: "nfs4")
    with pytest.raises(StorageError, match="network file system"):
        open_storage(f"sqlite:///{tmp_path}/s.db")


def test_worker_command_lines():
    from tuner.workers.launcher import child_argv, parse_n_workers, worker_devices

    argv = ["run", "--task", "arith", "--n-workers", "4", "--device=cuda", "--no-progress", "--worker-index", "7",
            "--set", "trials=8"]
    assert child_argv(argv, "cuda:2", 9) == ["run", "--task", "arith", "--set", "trials=8", "--worker-child",
                                             "--device", "cuda:2", "--worker-index", "9"]
    assert child_argv(["run", "--n-workers=2"], None, None) == ["run", "--worker-child"]
    assert parse_n_workers("3") == 3 and parse_n_workers("0") is None and parse_n_workers("x") is None
    assert worker_devices(3, "cpu") == ["cpu"] * 3 and worker_devices(2, "cuda:1") == ["cuda:1"] * 2


def test_an_objective_error_surfaces_and_is_not_taken_for_a_stale_take_over(tmp_path):
    """Only a trial another worker finished while this one ran it means "taken over, go on" (tests/
    test_worker_faults.py); the objective's own errors stop the worker at once (they once made it fail trials
    forever)."""
    from tuner.app.context import Context, Options
    from tuner.storage.locks import StudyLock
    from tuner.workers.worker import Worker, WorkerOptions

    url = f"sqlite:///{tmp_path}/s.db"
    storage = open_storage(url, heartbeat_interval=1)
    lock = StudyLock(storage, "bug")
    spec = spec_for(tmp_path, 4)
    study, _ = create_study(spec, storage, "bug", 0, lock=lock)

    def broken(trial):
        raise ValueError("a bug in the objective")

    worker = Worker(Context(spec, Options(storage=url)), WorkerOptions(heartbeat_interval=1))
    with pytest.raises(ValueError, match="a bug"):
        worker.work(study, lock, broken)
    assert len(study.get_trials(states=(TrialState.FAIL,))) == 1 and len(study.get_trials()) == 3  # + 2 queued refs
    lock.close()


CLAIM_SCRIPT = textwrap.dedent("""
    import sys, time
    from tuner.app.context import Context, Options
    from tuner.storage.database import open_storage
    from tuner.storage.locks import StudyLock
    from tuner.study.lifecycle import create_study
    from tuner.study.space import distributions, suggest
    from tuner.study.spec import load_spec
    from tuner.workers.worker import Worker, WorkerOptions

    url, budget = sys.argv[1], int(sys.argv[2])
    spec = load_spec("arith", [f"trials={budget}", "sampler=random"])
    storage = open_storage(url, heartbeat_interval=2)
    lock = StudyLock(storage, "claims")
    study, worker = create_study(spec, storage, "claims", 0, worker=None, lock=lock)

    def objective(trial):
        for name, dist in distributions(spec).items():
            suggest(trial, name, dist)
        time.sleep(0.3)
        return 0.5, float(trial.number)

    Worker(Context(spec, Options(storage=url)), WorkerOptions(heartbeat_interval=2)).work(study, lock, objective)
    print("worker", worker)
""")


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_concurrent_workers_create_one_study_and_claim_exactly_the_budget(backend, request, tmp_path):
    """4 processes on a fresh database: one schema, one study, references enqueued once, distinct worker
    indices, and exactly the budget of finished trials (the claim is atomic under the study lock)."""
    if backend == "postgresql":
        url = request.getfixturevalue("pg").create_database("claims")
    else:
        url = f"sqlite:///{tmp_path}/claims.db"
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM_SCRIPT, url, "12"], env=child_env(), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-2000:] for r in results]
    indices = sorted(int(r[0].split()[-1]) for r in results)
    assert indices == list(range(4))
    study = load(url, "claims")
    trials = study.get_trials()
    assert len([t for t in trials if t.state in FINISHED]) == 12 and len(trials) == 12
    assert [t.user_attrs.get("reference") for t in trials[:3]] == list(REFERENCES)
    assert [t.user_attrs.get("reference") for t in trials].count("vanilla") == 1


# ---------------------------------------------------------------------------------------------- 4 workers, SIGKILL


def run_four_and_kill_one(args: list[str], storage: str, name: str, tmp_path: Path) -> int:
    """Start 4 workers, each parked in its first trial; SIGKILL the baseline's worker there, release the others and
    wait for them to finish cleanly; the killed trial's number."""
    parking = Parking(tmp_path)
    procs = start_workers(4, args, tmp_path, "w", env=parking.env())
    try:
        killed = kill_the_baseline_mid_trial(storage, name, procs, parking)
        parking.release_all()
        codes = wait_all(procs, 300)
    except BaseException:
        for p in procs:
            p.kill()
        print(logs(tmp_path, "w"))
        raise
    assert sorted(codes) == [-signal.SIGKILL, 0, 0, 0], logs(tmp_path, "w")
    return killed


def test_four_workers_on_the_sqlite_defaults_survive_a_sigkill(tmp_path):
    """The default stores (./dtune.db, ./mlflow.db) with 4 local workers: they work — the study lock is a file
    lock beside the database, writes wait for SQLite's lock (30 s) and retry — and neither file is damaged."""
    name, budget = "four-workers-sqlite", 5
    args = [*tiny_args(budget), "--study-name", name]
    storage = f"sqlite:///{tmp_path}/dtune.db"
    killed = run_four_and_kill_one(args, storage, name, tmp_path)
    study = check_study(storage, name, budget, killed)
    check_mlflow(f"sqlite:///{tmp_path}/mlflow.db", name, study, killed)
    for db in ("dtune.db", "mlflow.db"):
        with sqlite3.connect(tmp_path / db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ---------------------------------------------------------------------------------------------- --n-workers, outages


def test_n_workers_forwards_ctrl_c_and_the_rerun_finishes(tmp_path):
    """Ctrl-C to the `--n-workers` parent once a trial is complete and both workers are in the middle of a trial
    (parked where their evaluation starts): it exits 130, both trials are re-queued (none left RUNNING), and the
    rerun finishes the budget keeping the finished trials as they were."""
    name, budget = "n-workers", 4
    args = [sys.executable, "-m", "tuner", "run", *tiny_args(budget), "--study-name", name, "--n-workers", "2"]
    tracking_store(tmp_path)  # ./mlflow.db, the default store, begun migrated (helpers.tracking_store)
    parking = Parking(tmp_path)
    parent = subprocess.Popen(args, cwd=tmp_path, env=parking.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    storage = f"sqlite:///{tmp_path}/dtune.db"
    try:
        first = parking.wait(lambda parked: len(parked) == 2, [parent])
        parking.release(first[0])  # that one trial completes; its worker parks in its next trial
        parking.wait(lambda parked: len(parked) == 2 and first[0].path not in {m.path for m in parked}, [parent])
        assert len(load(storage, name).get_trials(states=(TrialState.COMPLETE,))) == 1
        parent.send_signal(signal.SIGINT)
        out, err = parent.communicate(timeout=120)
    except BaseException:
        parent.kill()
        raise
    assert parent.returncode == 130, err[-3000:]
    study = load(storage, name)
    assert not study.get_trials(states=(TrialState.RUNNING,))  # the workers stopped their trials cleanly
    kept = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert kept
    rerun = subprocess.run(args, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "started 2 workers" in rerun.stderr
    assert rerun.stdout.count("Pareto front of") == 1  # printed by the parent only
    study = load(storage, name)
    assert len(study.get_trials(states=FINISHED)) == budget
    assert all(study.trials[n].values == v for n, v in kept.items())


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state  # a zombie has exited; only its reaping is left


def test_workers_stop_when_the_n_workers_parent_is_killed(tmp_path):
    """A parent SIGKILLed (OOM killer, scheduler) can't forward anything: its workers get SIGTERM from the kernel
    (PR_SET_PDEATHSIG), re-queue their running trials and exit instead of running on unseen."""
    name = "orphans"
    args = [sys.executable, "-m", "tuner", "run", *tiny_args(6), "--study-name", name, "--n-workers", "2"]
    tracking_store(tmp_path)  # ./mlflow.db, the default store, begun migrated
    # Both workers park in their first trial: only the parent's death can end them (the budget can't be spent).
    parking = Parking(tmp_path)
    parent = subprocess.Popen(args, cwd=tmp_path, env=parking.env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    storage = f"sqlite:///{tmp_path}/dtune.db"
    try:
        pids = {m.pid for m in parking.wait(lambda parked: len({m.pid for m in parked}) == 2, [parent])}
    except BaseException:
        parent.kill()
        raise
    running = load(storage, name).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert {worker_pid(t) for t in running} == pids
    parent.kill()
    parent.wait()
    try:
        assert wait_until(lambda: not any(_alive(p) for p in pids), 60, poll_s=0.5)
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    study = load(storage, name)
    assert not study.get_trials(states=(TrialState.RUNNING,))  # both trials were re-queued, not left running


def test_a_postgresql_outage_mid_run_is_waited_out(pg_own, tmp_path):
    """PostgreSQL stopped for longer than the heartbeat grace period once a trial is complete and the next one is
    evaluating (parked at its start, released as the outage begins): the worker waits it out and ends the study."""
    pg = pg_own
    storage = pg.create_database("outage")
    name, budget = "outage", 3  # one before the outage, one across it, one after
    args = [sys.executable, "-m", "tuner", "run", *tiny_args(budget), "--storage", storage, "--study-name", name,
            "--tracking-uri", tracking_store(tmp_path)]
    parking = Parking(tmp_path)
    worker = subprocess.Popen(args, cwd=tmp_path, env=parking.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        first = parking.wait(lambda parked: len(parked) == 1, [worker])[0]
        parking.release(first)  # that trial completes; the worker parks in the next one
        second = parking.wait(lambda parked: len(parked) == 1 and parked[0].trial != first.trial, [worker])[0]
        trials = load(storage, name).get_trials(deepcopy=False)
        assert trials[first.trial].state == TrialState.COMPLETE
        assert trials[second.trial].state == TrialState.RUNNING and "config_key" in trials[second.trial].user_attrs
        pg.halt("fast")  # drops every connection: heartbeats and the trial's writes fail until it is back
        parking.release_all()  # the trial evaluates on and writes into the outage
        time.sleep(8)  # longer than the heartbeat grace period (6 s)
        pg.resume()
        out, err = worker.communicate(timeout=300)
    except BaseException:
        worker.kill()
        raise
    assert worker.returncode == 0, err[-3000:]
    assert "unreachable" in err and "is back" in err
    study = load(storage, name)
    assert len(study.get_trials(states=FINISHED)) == budget


def test_a_lasting_outage_is_waited_out_for_outage_s_and_no_longer(pg_own):
    """One retry layer: Optuna's storage calls call each other (a trial's creation reads trials), and retries nested
    in them once waited a lasting outage out several times over (with outage_s = 2, get_all_trials gave up after
    5.3 s and create_new_trial after 21.7 s). A call now gives up at its first failure after outage_s; trial creation
    may take one round of Optuna's own deadlock retry longer (5 tries, pauses of up to 2 s, inside the call)."""
    from tuner.storage.optuna_internals import study_id
    from tuner.storage.resilience import is_transient

    pg = pg_own
    url = pg.create_database("lasting")
    storage = open_storage(url, outage_s=2.0)
    sid = study_id(optuna.create_study(storage=storage, study_name="lasting", directions=["maximize", "maximize"]))
    pg.halt("fast")
    try:
        for call, optunas_own in ((lambda: storage.get_all_trials(sid), 0.0),
                                  (lambda: storage.create_new_trial(sid), 8.0)):
            t0 = time.monotonic()
            with pytest.raises(Exception) as info:  # noqa: PT011 - SQLAlchemy's or Optuna's wrapper, as it comes
                call()
            elapsed = time.monotonic() - t0
            assert is_transient(info.value)
            # The outage's 2 s, the last backoff's jitter and a refused connect, plus Optuna's own round.
            assert 2.0 <= elapsed < 4.0 + optunas_own, elapsed
    finally:
        pg.resume()


# ---------------------------------------------------------------------------------------------- issue 18


def test_an_mlflow_server_prints_no_view_run_lines_per_trial(mlflow_server, capfd):
    """MLflow prints "🏃 View run … / 🧪 View experiment …" each time a run on a server ends, one pair per trial
    even with --no-progress; the tracker switches that off and gives the study's run URL once (Tracker.run_url)."""
    from tuner.tracking import Tracker

    tracker = Tracker.open(mlflow_server, "dtune-noise", retries=0)
    parent = tracker.parent_run("noise", params={}, tags={})
    for number in range(2):
        tracker.log_trial(parent, number, params={}, metrics={"accuracy": 0.5}, tags={}, state="COMPLETE")
    tracker.finish(parent)
    out = capfd.readouterr()
    assert "View run" not in out.out + out.err and "View experiment" not in out.out + out.err
    assert tracker.run_url(parent) == f"{mlflow_server}/#/experiments/{tracker.experiment_id}/runs/{parent}"


def test_four_workers_two_sigkills_a_40_s_postgresql_stop_and_a_replacement(pg_own, mlflow_server, tmp_path):
    """Issue 18's run: `--n-workers 4` on PostgreSQL and an MLflow server; two workers SIGKILLed mid-trial, a
    replacement worker started by hand, PostgreSQL stopped for 40 s mid-run. The study ends with exactly its
    budget, every kill retried and no live trial failed, every surviving process exits 0 without a traceback,
    MLflow holds one nested run per finished trial under a FINISHED parent, and no configuration is evaluated
    twice; each kill's retry keeps its parameters and reference, and its MLflow run is FAILED; a worker started
    after the budget is spent exits at once, cleanly. (It holds every check of a SIGKILL on PostgreSQL and an
    MLflow server, `check_study` and `check_mlflow`, as the SQLite test below does for the default stores.) The
    timeline is printed (pytest -s shows it).

    The faults land by events, not by the machine's speed (tuner.workers.parking): every worker parks where its
    trial's evaluation starts; two of the parent's parked workers are killed there, the replacement is started and
    parks in its own trial, and PostgreSQL is stopped while the three live workers are parked mid-trial; they are
    released as the outage begins, so they evaluate on and write into it."""
    pg = pg_own
    storage = pg.create_database("chaos")
    # Finished: the 2 live first claims, the replacement's trial and the 2 retries (5), and more after the outage.
    name, budget = "chaos", 8
    args = [*tiny_args(budget, validation_size=16), "--storage", storage, "--tracking-uri", mlflow_server,
            "--study-name", name]
    timeline: list[tuple[dt.datetime, str]] = []

    def note(what: str, when: dt.datetime | None = None) -> None:
        timeline.append((when or dt.datetime.now(), what))

    parking = Parking(tmp_path)
    out = open(tmp_path / "parent.out", "w")  # noqa: SIM115 - closed below
    parent = subprocess.Popen([sys.executable, "-m", "tuner", "run", *args, "--n-workers", "4"], cwd=tmp_path,
                              env=parking.env(), stdout=out, stderr=subprocess.STDOUT, text=True)
    procs = [parent]
    killed: dict[int, str] = {}  # trial number -> its worker's label
    try:
        # The references are distinct configurations (none waits for another's result), so at least 3 park.
        parked = parking.wait(lambda parked: len(parked) >= 3, procs)
        for victim in parked[:2]:
            trials = load(storage, name).get_trials(deepcopy=False)
            assert trials[victim.trial].state == TrialState.RUNNING and "config_key" in trials[victim.trial].user_attrs
            parking.kill(victim)
            killed[victim.trial] = trials[victim.trial].user_attrs["worker"]
            note(f"SIGKILL {killed[victim.trial]} in trial {victim.trial} "
                 f"({trials[victim.trial].user_attrs.get('reference') or 'sampled'})")
            if len(killed) == 1:
                replacement = subprocess.Popen([sys.executable, "-m", "tuner", "run", *args], cwd=tmp_path,
                                               env=parking.env(), stdout=open(tmp_path / "replacement.out", "w"),  # noqa: SIM115
                                               stderr=subprocess.STDOUT, text=True)
                procs.append(replacement)
                note(f"replacement worker started (pid {replacement.pid})")
        # The outage comes once the replacement is up (a worker refuses to start on an unreachable database) and
        # in the middle of a trial of its own, beside the parent's two live workers in theirs.
        live = parking.wait(lambda parked: replacement.pid in {m.pid for m in parked}, procs)
        assert len(live) == 3, live
        finished_before = len(load(storage, name).get_trials(states=FINISHED))
        pg.halt("fast")
        note(f"PostgreSQL stopped ({finished_before}/{budget} finished; trials {sorted(m.trial for m in live)} "
             "evaluating)")
        parking.release_all()
        time.sleep(40)
        pg.resume()
        note("PostgreSQL started again")
        codes = wait_all(procs, 240)
        note(f"parent exited {codes[0]}, replacement exited {codes[1]}")
    except BaseException:
        for p in procs:
            p.kill()
        print((tmp_path / "parent.out").read_text()[-6000:])
        raise
    finally:
        out.close()
    text = {p: (tmp_path / p).read_text() for p in ("parent.out", "replacement.out")}
    everything = "\n".join(text.values())
    study = load(storage, name)
    trials = study.get_trials()
    for t in trials:  # the study's own times (the workers' clocks: this machine's)
        if t.state == TrialState.FAIL:
            note(f"trial {t.number} failed (started {t.datetime_start:%H:%M:%S})", t.datetime_complete)
        if "failed_trial" in t.system_attrs:
            note(f"trial {t.number} queued as the retry of trial {t.system_attrs['failed_trial']}",
                 trials[t.system_attrs["failed_trial"]].datetime_complete)
            if t.datetime_start:
                note(f"trial {t.number} (retry of {t.system_attrs['failed_trial']}) started by "
                     f"{t.user_attrs.get('worker')}", t.datetime_start)
        if t.state in FINISHED and t.number == max(x.number for x in trials if x.state in FINISHED):
            note(f"last trial ({t.number}) finished", t.datetime_complete)
    print("\n".join(f"{when:%H:%M:%S.%f}"[:-5] + f"  {what}" for when, what in sorted(timeline)))
    print("\n".join(line for line in everything.splitlines() if any(
        w in line for w in ("unreachable", "is back", "lost its worker", "killed by signal", "re-queued by",
                            "still running", "trials finished", "holds its"))))

    assert codes == [0, 0], everything[-8000:]
    assert "Traceback" not in everything, everything[-6000:]
    assert "constraint value is ignored" not in everything
    assert "View run" not in everything and "A new study created" not in everything
    assert "Falling back to a slower alternative" not in everything
    # The parent names the killed workers as their own lines do.
    for label in killed.values():
        index, pid = re.match(r"worker (\d+) \([^:]+:(\d+)\)", label).groups()
        assert f"worker {index} (pid {pid}) was killed by signal 9" in text["parent.out"], text["parent.out"][-3000:]
    assert "exited with code" not in text["parent.out"]
    # Exactly the budget; every kill retried; no live trial failed (the only failures are the killed trials).
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == budget and not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    failed = {t.number for t in trials if t.state == TrialState.FAIL}
    assert failed == set(killed), (failed, killed)
    retry_of = {t.system_attrs["failed_trial"]: t for t in trials if "failed_trial" in t.system_attrs}
    for number in killed:
        assert retry_of[number].state in FINISHED and retry_of[number].params == trials[number].params
    for ref in REFERENCES:
        assert [t.user_attrs.get("reference") for t in finished].count(ref) == 1, ref
    # No configuration evaluated twice: a repeat copies the earlier result.
    evaluated = [t.user_attrs["config_key"] for t in finished if "duplicate_of" not in t.user_attrs]
    assert len(evaluated) == len(set(evaluated))
    # MLflow: one parent, FINISHED; one nested run per finished trial (and the killed trials as FAILED).
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("dtune-arith")
    parents = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL,
                                 filter_string=f"tags.`dtune.run_type` = 'study' AND tags.`dtune.study` = '{name}'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000,
                                  filter_string=f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    by_number: dict[int, list] = {}
    for c in children:
        by_number.setdefault(int(c.data.tags["dtune.trial_number"]), []).append(c)
    assert all(len(runs) == 1 for runs in by_number.values())
    assert {n for n, runs in by_number.items() if runs[0].data.tags["dtune.state"] in ("COMPLETE", "PRUNED")} == {
        t.number for t in finished}
    assert parents[0].data.metrics["n_failed"] == len(killed)
    # Every check of a SIGKILL on these stores, for each killed trial.
    for number in killed:
        study = check_study(storage, name, budget, number)
        check_mlflow(mlflow_server, name, study, number)
    # A worker started after the budget is spent exits at once, cleanly.
    late = subprocess.run([sys.executable, "-m", "tuner", "run", *args], cwd=tmp_path, env=child_env(),
                          capture_output=True, text=True, timeout=180)
    assert late.returncode == 0 and "already spent" in late.stderr, late.stderr[-2000:]



def test_each_gpu_worker_sees_its_own_gpu_and_a_share_of_the_cores():
    """`--n-workers` on a GPU machine: worker i sees only GPU i (mapped through the parent's own visible set), runs
    on `--device cuda`, and gets cores // n threads; workers that would share a GPU too small for the model twice are
    refused in one line (the CPU-only machine checks the rule, not a GPU)."""
    from tuner.base.errors import TunerError
    from tuner.workers.launcher import check_fits, placements

    places = placements(["cuda:0", "cuda:1", "cuda:0"], cores=16, visible="2,3")
    assert [p.device for p in places] == ["cuda"] * 3
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in places] == ["2", "3", "2"]
    assert {p.env["OMP_NUM_THREADS"] for p in places} == {"5"}
    assert placements(["cpu", "cpu"], cores=2)[0].env == {"OMP_NUM_THREADS": "1"}
    gib = 2**30
    check_fits(["cuda:0", "cuda:1"], 16 * gib, {"cuda:0": 80 * gib, "cuda:1": 80 * gib})  # one each: fine
    check_fits(["cuda:0", "cuda:0"], 2 * gib, {"cuda:0": 80 * gib})  # a small model twice: fine
    with pytest.raises(TunerError, match="2 workers would share cuda:0"):
        check_fits(["cuda:0", "cuda:0"], 40 * gib, {"cuda:0": 80 * gib})
