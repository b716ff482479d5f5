"""Plain helpers shared by the test modules (fixtures live in conftest.py): the small arith study every tuner test
runs, and where its database and tracking store are."""

from __future__ import annotations

import json
import os
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


def small_args(tmp: Path, trials: int) -> list[str]:
    """`tuner run` options of a study small enough for CI: 24 validation items at gen length 64."""
    overrides = ["validation_size=24", "test_size=24", "decode.gen_length=64", "batch_size=12", "chunk_size=8",
                 "references=[{name: vanilla, mode: vanilla, steps: 32}, "
                 "{name: fast-dllm, mode: streaming, window: null, threshold: 0.9, alpha: 0.0, early_exit: false}, "
                 "{name: paper, mode: streaming, window: 32, threshold: 0.9, alpha: 0.3, early_exit: true}]",
                 "search_space.window.choices=[16, 32, null]", f"trials={trials}"]
    args = ["--task", "arith", "--model", MODEL, "--storage", f"sqlite:///{tmp}/study.db",
            "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"]
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


