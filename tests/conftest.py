"""Fixtures shared by the test modules: real services on loopback, started once per test session (per pytest-xdist
worker: each has its own, on its own free port and in its own folder) and stopped after it.

* `pg`            — a throw-away PostgreSQL cluster (tools/pg_server.py; skipped without the server binaries), shared:
                    each test creates databases of its own names in it and never stops it;
* `pg_own`        — a cluster of the test's own, for tests that stop PostgreSQL (an outage);
* `mlflow_server` — `mlflow server` with a SQL backend and an artifact root, as docs/scale-out.md sets it up; tests
                    use study and experiment names of their own in it.

Plain helpers (the small study's options, the child-process environment) are in helpers.py.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import child_env

from tools.pg_server import PostgresServer, PostgresUnavailable, wait_until


@functools.lru_cache
def _module_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _runs_sandboxed_programs(path: Path) -> bool:
    """The sandbox's modules and the code tasks' scoring: their after-test checks look machine-wide (no process of
    the sandbox's uid pool, no run folder left), so no two of them may run at once."""
    text = _module_text(path)
    return path.name.startswith("test_sandbox") or "tuner.sandbox" in text or "scoring_sandbox" in text


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist (`-n auto`, pyproject's addopts) sends each test to whichever worker is free, except that the tests
    of a module with module-scoped fixtures (a study run by the CLI, a loaded model, a server) go to one worker
    together, so those are made once, and all the modules that run sandboxed programs go to one worker, one after
    another (`_runs_sandboxed_programs`). (xdist's own `--dist loadgroup` can't do it with pytest 9.2: the group it
    appends to a test's id no longer reaches the scheduler.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            path = config.rootpath / module
            if _runs_sandboxed_programs(path):
                return "sandboxed programs"
            return module if 'scope="module"' in _module_text(path) else nodeid

    return Scheduling(config, log)


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject's addopts): two workers more than the cores, at most 4. Much of a test's time is spent
    waiting (on the processes it starts, on PostgreSQL and MLflow, on an outage it stages), which the extra workers
    fill; with a core taken by another job they also keep the suite's share of the machine."""
    return min(4, (os.cpu_count() or 1) + 2)


def pytest_collection_modifyitems(config, items):
    """The slow tests first (a stable sort), so that none of them is left to run alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Each test process decodes on one thread, and so does every process a test starts (helpers.child_env sets it
    too; this covers those started without it): the xdist workers share the cores, and a core taken by another job
    stalls every parallel region of a 2-thread decode (a `tuner run` took 4 minutes to its first trial). A user's own
    OMP_NUM_THREADS wins."""
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"
    yield


@pytest.fixture(scope="session", autouse=True)
def _speed_record(tmp_path_factory):
    """Studies run by the tests keep their machine record of reference passes and plan probes (tuner.study.timing)
    in the test run's temporary folder, shared by its xdist workers (written atomically), not in the user's
    ~/.cache (child processes inherit it)."""
    if "DTUNE_SPEED_CACHE" not in os.environ:
        root = tmp_path_factory.getbasetemp()
        root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
        os.environ["DTUNE_SPEED_CACHE"] = str(root / "speed-record.json")
    yield


def _start_pg() -> PostgresServer:
    try:
        return PostgresServer.start()
    except PostgresUnavailable as exc:
        why = " ".join(str(exc).split())[:300]  # one line
        pytest.skip(f"needs PostgreSQL: apt-get install postgresql (as .ci/run does) [{why}]")


@pytest.fixture(scope="session")
def pg():
    server = _start_pg()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_own():
    """A cluster for this test alone: it may stop and restart it (`halt`, `resume`) without disturbing others."""
    server = _start_pg()
    try:
        yield server
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """`mlflow server` with a SQL backend and an artifact root, as docs/scale-out.md sets it up."""
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    # MLflow 3's server also starts a job runner (a dozen huey consumer processes, each importing MLflow: half a
    # minute of CPU at every start) for GenAI jobs these tests never submit.
    env = {**child_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return True
        except OSError:
            return False

    try:
        if not wait_until(lambda: proc.poll() is not None or healthy(), 240, poll_s=1.0) or proc.poll() is not None:
            pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def scoring_sandbox(monkeypatch):
    """For tests of code-task *scoring* (not of isolation, which tests/test_sandbox_hostile.py covers): where
    bubblewrap is missing they opt into the subprocess level, as a user would with DTUNE_SANDBOX_ISOLATION, rather
    than being refused; with bwrap they use it as production does."""
    from tuner.sandbox import SandboxError
    from tuner.sandbox.levels import require_isolation, reset_cache

    try:
        require_isolation()
    except SandboxError:
        monkeypatch.setenv("DTUNE_SANDBOX_ISOLATION", "subprocess")
        reset_cache()
    yield
    reset_cache()
