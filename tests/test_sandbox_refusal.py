"""Refuse by default (issue 17): without a working bubblewrap no model-written code runs, unless opted in.

bwrap is hidden by pointing PATH at a folder that holds only a python3 (or also a fake, broken ``bwrap``);
the level cache is reset around every test so that neither the refusal nor the real bwrap leaks between tests.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tuner.base.errors import TunerError
from tuner.sandbox import Limits, SandboxError, require_isolation, reset_cache, run_program, run_programs
from tuner.tasks.base import Task
from tuner.tasks.code_task import CodeTask
from tuner.tasks.gsm8k import GSM8K
from tuner.tasks.humaneval import HumanEval
from tuner.tasks.mbpp import MBPP

T3 = Limits(timeout_s=3)


@pytest.fixture
def bin_dir(monkeypatch):
    """A PATH with python3 and nothing else (so no bwrap), no opt-in, fresh level cache.

    World-readable (not under ``tmp_path``): as root the runs switch to a throw-away uid, which must be able to
    execute a fake ``bwrap`` placed here.
    """
    path = Path(tempfile.mkdtemp(prefix="dtune-test-bin-"))
    path.chmod(0o755)
    (path / "python3").symlink_to(os.path.realpath(sys.executable))
    monkeypatch.setenv("PATH", str(path))
    monkeypatch.delenv("DTUNE_SANDBOX_ISOLATION", raising=False)
    reset_cache()
    yield path
    reset_cache()
    shutil.rmtree(path)


def _refusal(exc: SandboxError) -> str:
    msg = str(exc)
    assert "\n" not in msg, msg
    assert "bubblewrap" in msg and "apt-get install bubblewrap" in msg, msg
    assert "DTUNE_SANDBOX_ISOLATION=subprocess" in msg, msg
    return msg


def _witness(bin_dir: Path) -> tuple[Path, str]:
    """A file any uid can append to (root's throw-away uid included) and a program that appends to it."""
    witness = bin_dir / "ran.txt"
    witness.touch()
    witness.chmod(0o666)
    return witness, f"open({str(witness)!r}, 'a').write('ran')\n"


def test_without_bwrap_code_is_refused_and_never_runs(bin_dir, monkeypatch):
    witness, src = _witness(bin_dir)
    with pytest.raises(SandboxError) as first:
        run_program(src, T3)
    msg = _refusal(first.value)
    assert "`bwrap` is not on PATH" in msg
    with pytest.raises(SandboxError) as batch:
        run_programs([src, src], T3)
    with pytest.raises(SandboxError) as explicit:
        run_program(src, T3, isolation="bwrap")
    with pytest.raises(SandboxError) as early:
        require_isolation()
    assert str(batch.value) == str(explicit.value) == str(early.value) == msg
    assert witness.read_text() == "", "a program ran although the sandbox refused"
    assert isinstance(first.value, TunerError) and isinstance(first.value, RuntimeError)
    monkeypatch.setenv("DTUNE_SANDBOX_ISOLATION", "subprocess")  # the same program does run once opted in
    assert run_program(src, T3).passed and witness.read_text() == "ran"


def test_a_broken_bwrap_is_refused_with_its_reason(bin_dir):
    calls = bin_dir / "calls"
    calls.touch(mode=0o666)
    calls.chmod(0o666)
    fake = bin_dir / "bwrap"
    fake.write_text(
        f"#!/bin/sh\necho x >> {calls}\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IROTH)
    with pytest.raises(SandboxError) as exc:
        require_isolation()
    msg = _refusal(exc.value)
    assert "does not work here" in msg and "setting up uid map: Permission denied" in msg
    probes = calls.read_text().count("x")
    assert probes >= 1
    with pytest.raises(SandboxError) as again:
        run_program("pass\n", T3)
    assert str(again.value) == msg
    assert calls.read_text().count("x") == probes, "the refusal is cached: bwrap is probed once per process"


def test_the_opt_in_runs_plain_subprocesses(bin_dir, monkeypatch, caplog):
    monkeypatch.setenv("DTUNE_SANDBOX_ISOLATION", "subprocess")
    assert require_isolation().level == "subprocess"
    res = run_program("print('ran unisolated')\n", T3)
    assert res.passed and res.isolation == "subprocess" and "ran unisolated" in res.output
    assert [r.isolation for r in run_programs(["pass\n"] * 2, T3)] == ["subprocess"] * 2
    # asking for bwrap explicitly still refuses: the opt-in is only the subprocess level
    with pytest.raises(SandboxError, match="not on PATH"):
        run_program("pass\n", T3, isolation="bwrap")


def test_unknown_levels_name_both_choices(bin_dir, monkeypatch):
    monkeypatch.setenv("DTUNE_SANDBOX_ISOLATION", "auto")
    with pytest.raises(SandboxError) as exc:
        require_isolation()
    assert "'auto'" in str(exc.value) and "bwrap" in str(exc.value) and "subprocess" in str(exc.value)


def test_tasks_say_whether_they_need_the_sandbox():
    assert Task.needs_sandbox is False and CodeTask.needs_sandbox is True
    assert HumanEval.needs_sandbox and MBPP.needs_sandbox
    assert not GSM8K.needs_sandbox


def test_require_isolation_is_cheap_once_resolved():
    reset_cache()
    try:
        first = require_isolation("subprocess")
        start = time.monotonic()
        for _ in range(100):
            assert require_isolation("subprocess") == first
        assert time.monotonic() - start < 0.5
    finally:
        reset_cache()
