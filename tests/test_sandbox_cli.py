"""Code tasks refuse at once, in one line, where model-written code can't be isolated (bwrap hidden from PATH)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import child_env

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def no_bwrap_env(tmp_path: Path) -> dict[str, str]:
    """PATH without bwrap: a folder with just python3, plus the directories that don't hold bwrap."""
    env = child_env()
    env.pop("DTUNE_SANDBOX_ISOLATION", None)
    keep = [d for d in env.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "bwrap").exists()]
    env["PATH"] = os.pathsep.join(keep)
    assert shutil.which("bwrap", path=env["PATH"]) is None
    return env


@pytest.mark.parametrize("command", [
    ["eval", "--task", "humaneval", "--limit", "2"],
    ["run", "--task", "humaneval", "--trials", "1", "--storage", "sqlite:///s.db", "--tracking-uri", "sqlite:///m.db"],
    ["export", "--task", "mbpp", "--storage", "sqlite:///s.db", "--tracking-uri", "sqlite:///m.db"],
])
def test_a_code_task_without_bwrap_exits_2_with_one_line_and_loads_no_model(tmp_path, command):
    # A model path that doesn't exist: had the model been loaded first, the error would be about it.
    args = [sys.executable, "-m", "tuner", *command, "--model", str(tmp_path / "no-model"), "--data-dir", str(FIXTURES)]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=no_bwrap_env(tmp_path), timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "bubblewrap" in lines[0] and "DTUNE_SANDBOX_ISOLATION=subprocess" in lines[0]
    assert not list(tmp_path.glob("*.db"))  # nothing was created either
