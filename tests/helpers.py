"""Plain helpers shared by the test modules (fixtures live in conftest.py): the small arith study every tuner test
runs, and where its database and tracking store are."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

from tuner.storage.database import open_storage
from tuner.study.lifecycle import default_study_name
from tuner.study.spec import load_spec

MODEL = os.environ.get("DTUNE_TEST_MODEL", "dtune/tiny-arith")
REPO = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    """The environment of a `python -m tuner` child process: no inherited study or tracking URL, one thread per
    process (the machine's cores are shared), and the repository importable (tools/)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPTUNA_STORAGE", "MLFLOW_TRACKING_URI")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@functools.lru_cache
def _empty_mlflow_store() -> Path:
    """An empty MLflow SQLite store, migrated once per test process (removed at its exit)."""
    from mlflow import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="dtune-test-mlflow-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder / "mlflow.db"


def tracking_store(tmp: Path) -> str:
    """`sqlite:///<tmp>/mlflow.db`, begun as a copy of an empty store: MLflow migrates a new SQLite store on its
    first open, ~2.5 CPU-s of every small study that would make its own (the SQLite-defaults fault test still
    has its four workers create theirs)."""
    db = Path(tmp) / "mlflow.db"
    if not db.exists():
        shutil.copyfile(_empty_mlflow_store(), db)
    return f"sqlite:///{db}"


def small_args(tmp: Path, trials: int) -> list[str]:
    """`tuner run` options of a study small enough for CI: 24 validation items at gen length 64."""
    # The task generates only what the tests read (its own splits default to 1,200 / 1,500 problems: 1.6 CPU-s
    # of every process); tests that widen validation_size stay within 96.
    overrides = ["task_options.validation_size=96", "task_options.test_size=48",
                 "validation_size=24", "test_size=24", "decode.gen_length=64", "batch_size=12", "chunk_size=8",
                 "references=[{name: vanilla, mode: vanilla, steps: 32}, "
                 "{name: fast-dllm, mode: streaming, window: null, threshold: 0.9, alpha: 0.0, early_exit: false}, "
                 "{name: paper, mode: streaming, window: 32, threshold: 0.9, alpha: 0.3, early_exit: true}]",
                 "search_space.window.choices=[16, 32, null]", f"trials={trials}"]
    args = ["--task", "arith", "--model", MODEL, "--storage", f"sqlite:///{tmp}/study.db",
            "--tracking-uri", tracking_store(tmp)]
    for o in overrides:
        args += ["--set", o]
    return args


def spec_for(tmp: Path, trials: int, extra: list[str] | None = None):
    """The spec those options make (plus `extra` overrides)."""
    args = small_args(tmp, trials)
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    return load_spec("arith", overrides + [f"model={json.dumps(MODEL)}", *(extra or [])])


def load(tmp: Path, trials: int) -> optuna.Study:
    """That study, as the run left it."""
    spec = spec_for(tmp, trials)
    return optuna.load_study(study_name=default_study_name(spec), storage=open_storage(f"sqlite:///{tmp}/study.db"))


@dataclass(frozen=True)
class Parked:
    """A worker parked where its trial's evaluation starts (tuner.workers.parking): the trial is RUNNING, its
    configuration recorded, and it stays so until the test releases it or the worker is killed."""

    path: Path
    pid: int
    trial: int
    worker: str


class Parking:
    """The test's side of tuner.workers.parking: workers started with `env()` park every trial they are about to
    evaluate until `release`d (one) or `release_all()`; a fault lands while trials are provably evaluating."""

    def __init__(self, tmp_path: Path) -> None:
        self.folder = tmp_path / "park"
        self.folder.mkdir()
        (self.folder / "hold").touch()
        self.gone: set[Path] = set()  # markers of workers the test killed (they never remove their own)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        return {**(child_env() if base is None else base), "DTUNE_TEST_PARK": str(self.folder)}

    def parked(self) -> list[Parked]:
        out = []
        for path in sorted(self.folder.glob("*.parked")):
            if path in self.gone:
                continue
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):  # released meanwhile
                continue
            out.append(Parked(path, data["pid"], data["trial"], data["worker"]))
        return out

    def wait(self, predicate, procs: list[subprocess.Popen], timeout_s: float = 240) -> list[Parked]:
        """Wait until `predicate(parked)` holds; fails at once if one of `procs` exits meanwhile."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            exited = [p.args for p in procs if p.poll() is not None]
            assert not exited, f"a worker exited while the test waited for parked trials: {exited}"
            parked = self.parked()
            if predicate(parked):
                return parked
            time.sleep(0.1)
        raise AssertionError(f"parked trials never matched: {self.parked()}")

    def kill(self, parked: Parked) -> None:
        """SIGKILL a parked worker (mid-trial: its trial is RUNNING and cannot finish before the signal)."""
        os.kill(parked.pid, signal.SIGKILL)
        self.gone.add(parked.path)

    def release(self, parked: Parked) -> None:
        parked.path.unlink(missing_ok=True)

    def release_all(self) -> None:
        (self.folder / "hold").unlink(missing_ok=True)
