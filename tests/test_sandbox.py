"""Sandbox basics: statuses, output capture, ordering of parallel runs, configuration errors."""

from __future__ import annotations

import shutil

import pytest

from tuner.sandbox import Limits, ProgramResult, SandboxError, isolation_level, run_program, run_programs

LEVELS = ["subprocess"] + (["bwrap"] if isolation_level() == "bwrap" else [])


def test_isolation_level_is_known():
    assert isolation_level() in ("bwrap", "subprocess")
    if not shutil.which("bwrap"):
        assert isolation_level() == "subprocess"


@pytest.mark.parametrize("level", LEVELS)
def test_statuses(level):
    ok = run_program("print('hello')\n", Limits(timeout_s=3), isolation=level)
    assert isinstance(ok, ProgramResult)
    assert ok.status == "passed" and ok.passed and ok.returncode == 0 and "hello" in ok.output
    assert ok.isolation == level and ok.duration_s > 0
    bad = run_program("assert 1 + 1 == 3, 'math is broken'\n", Limits(timeout_s=3), isolation=level)
    assert bad.status == "failed" and "math is broken" in bad.output and "AssertionError" in bad.reason
    syntax = run_program("def f(:\n", Limits(timeout_s=3), isolation=level)
    assert syntax.status == "failed" and "SyntaxError" in syntax.reason


@pytest.mark.parametrize("level", LEVELS)
def test_exit_zero_before_the_end_is_not_a_pass(level):
    for early in ("import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "raise SystemExit\n", "exit()\n"):
        res = run_program(early + "assert False, 'tests never ran'\n", Limits(timeout_s=3), isolation=level)
        assert res.status == "failed", (early, res)
        assert res.returncode == 0 and "before the end" in res.reason


@pytest.mark.parametrize("level", LEVELS)
def test_main_guard_and_future_import(level):
    src = "from __future__ import annotations\nif __name__ == '__main__':\n    print('main ran')\n"
    res = run_program(src, Limits(timeout_s=3), isolation=level)
    assert res.passed and "main ran" in res.output


def test_run_programs_keeps_order_and_runs_in_parallel():
    sources = [f"import time\ntime.sleep({0.3 if i % 2 else 0.0})\nprint('item', {i})\n" for i in range(8)]
    sources[3] = "assert False\n"
    results = run_programs(sources, Limits(timeout_s=3), max_workers=4)
    assert [r.status for r in results] == ["passed"] * 3 + ["failed"] + ["passed"] * 4
    for i, r in enumerate(results):
        if i != 3:
            assert f"item {i}" in r.output
    assert run_programs([], Limits(timeout_s=3)) == []


def test_output_is_bounded_excerpt():
    res = run_program("for i in range(20000):\n    print('line', i)\n", Limits(timeout_s=5))
    assert res.passed and res.output_truncated
    assert "line 0" in res.output and "line 19999" in res.output and "bytes omitted" in res.output
    assert len(res.output) < 3 * Limits().excerpt_bytes


def test_bad_configuration():
    with pytest.raises(ValueError):
        run_program("pass", Limits(timeout_s=0))
    with pytest.raises(SandboxError):
        run_program("pass", Limits(timeout_s=1), isolation="docker")
