"""Sandbox basics at both levels: statuses, output capture, ordering of parallel runs, configuration errors."""

from __future__ import annotations

import pytest

from tuner.sandbox import (
    Limits,
    ProgramResult,
    SandboxError,
    isolation_level,
    run_program,
    run_programs,
)


def _bwrap_works() -> bool:
    try:
        return isolation_level("bwrap") == "bwrap"
    except SandboxError:
        return False


BWRAP = _bwrap_works()
LEVELS = [
    pytest.param(
        "bwrap",
        marks=pytest.mark.skipif(not BWRAP, reason="needs bubblewrap: apt-get install bubblewrap (user namespaces on)"),
    ),
    "subprocess",
]
T3 = Limits(timeout_s=3)


def test_default_level_is_bwrap_or_a_refusal(monkeypatch):
    monkeypatch.delenv("DTUNE_SANDBOX_ISOLATION", raising=False)
    if BWRAP:
        assert isolation_level() == "bwrap"
        assert run_program("pass\n", T3).isolation == "bwrap"
    else:
        with pytest.raises(SandboxError, match="DTUNE_SANDBOX_ISOLATION=subprocess"):
            isolation_level()


@pytest.mark.parametrize("level", LEVELS)
def test_statuses(level):
    ok = run_program("print('hello')\n", T3, isolation=level)
    assert isinstance(ok, ProgramResult)
    assert ok.status == "passed" and ok.passed and ok.returncode == 0 and "hello" in ok.output
    assert ok.isolation == level and ok.duration_s > 0
    bad = run_program("assert 1 + 1 == 3, 'math is broken'\n", T3, isolation=level)
    assert bad.status == "failed" and "math is broken" in bad.output and "AssertionError" in bad.reason
    syntax = run_program("def f(:\n", T3, isolation=level)
    assert syntax.status == "failed" and "SyntaxError" in syntax.reason


@pytest.mark.parametrize("level", LEVELS)
def test_exit_zero_before_the_end_is_not_a_pass(level):
    for early in ("import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "raise SystemExit\n", "exit()\n"):
        res = run_program(early + "assert False, 'tests never ran'\n", T3, isolation=level)
        assert res.status == "failed", (early, res)
        assert res.returncode == 0 and "before the end" in res.reason


@pytest.mark.parametrize("level", LEVELS)
def test_main_guard_and_future_import(level):
    src = "from __future__ import annotations\nif __name__ == '__main__':\n    print('main ran')\n"
    res = run_program(src, T3, isolation=level)
    assert res.passed and "main ran" in res.output


@pytest.mark.parametrize("level", LEVELS)
def test_run_programs_keeps_order_and_runs_in_parallel(level):
    sources = [f"import time\ntime.sleep({0.3 if i % 2 else 0.0})\nprint('item', {i})\n" for i in range(8)]
    sources[3] = "assert False\n"
    results = run_programs(sources, T3, max_workers=4, isolation=level)
    assert [r.status for r in results] == ["passed"] * 3 + ["failed"] + ["passed"] * 4
    assert {r.isolation for r in results} == {level}
    for i, r in enumerate(results):
        if i != 3:
            assert f"item {i}" in r.output
    assert run_programs([], T3, isolation=level) == []


@pytest.mark.parametrize("level", LEVELS)
def test_output_is_bounded_excerpt(level):
    res = run_program("for i in range(20000):\n    print('line', i)\n", Limits(timeout_s=5), isolation=level)
    assert res.passed and res.output_truncated
    assert "line 0" in res.output and "line 19999" in res.output and "bytes omitted" in res.output
    assert len(res.output) < 3 * Limits().excerpt_bytes


@pytest.mark.parametrize("level", LEVELS)
def test_limits_are_applied_as_given(level):
    src = (
        "import resource\n"
        "print('AS', resource.getrlimit(resource.RLIMIT_AS)[0] >> 20)\n"
        "print('FSIZE', resource.getrlimit(resource.RLIMIT_FSIZE)[0] >> 20)\n"
        "print('NOFILE', resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    res = run_program(
        src, Limits(timeout_s=3, memory_mb=300, file_size_mb=5, max_open_files=77), isolation=level
    )
    assert res.passed and "AS 300\n" in res.output and "FSIZE 5\n" in res.output and "NOFILE 77" in res.output


def test_bad_configuration():
    with pytest.raises(ValueError):
        Limits(timeout_s=0)
    with pytest.raises(SandboxError, match="unknown sandbox isolation 'docker'"):
        run_program("pass", T3, isolation="docker")
    with pytest.raises(SandboxError, match="unknown sandbox isolation 'auto'"):
        run_program("pass", T3, isolation="auto")  # there is no silent fallback any more


def _is_zombie(pid: int) -> bool:
    from tuner.sandbox.procs import _read_stat

    st = _read_stat(pid)
    return st is not None and st.zombie


def _wait_until_zombie(pid: int, timeout_s: float) -> bool:
    """Poll (without reaping) until ``pid`` has exited and waits as a zombie; False if it didn't within the time."""
    import time

    deadline = time.monotonic() + timeout_s
    while not _is_zombie(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_process_limit_counts_threads_and_zombies_of_the_shared_uid():
    """Unprivileged, RLIMIT_NPROC is sized as "what the uid already has + the program's allowance". The kernel
    charges every thread and every unreaped zombie, so the count must too, or the program's first fork fails."""
    import os
    import threading

    from tuner.sandbox.procs import count_tasks_of_uid, tasks_of_uid

    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait) for _ in range(3)]
    for t in threads:
        t.start()
    pid = os.fork()
    if pid == 0:
        os._exit(0)  # stays a zombie until we reap it below
    try:
        _wait_until_zombie(pid, timeout_s=5.0)  # the child has exited, and we don't reap it yet
        tasks = tasks_of_uid(os.getuid())
        total = count_tasks_of_uid(os.getuid())
    finally:
        stop.set()
        for t in threads:
            t.join()
        os.waitpid(pid, 0)
    assert tasks[os.getpid()] >= 4  # ourselves: the main thread and three more
    assert tasks[pid] == 1  # the zombie still counts
    assert total >= tasks[os.getpid()] + tasks[pid]  # both existed throughout


class _LateReaper:
    """A parent that forks a child which exits at once, and reaps it only when the test says so (`reap`), never by
    itself: the child is a zombie someone else must reap, like a killed run's orphans waiting for init. As root both
    run as a throw-away uid, so the zombies of other processes on the machine (other test workers, other jobs of
    root) can't enter the count; otherwise as our own uid."""

    def __init__(self) -> None:
        import os
        import random

        self.uid = random.randrange(1_500_000_000, 1_501_000_000) if os.geteuid() == 0 else os.getuid()
        cmd_r, self._cmd = os.pipe()
        out_r, out_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the parent-to-be of the zombie
            try:
                os.close(self._cmd)
                os.close(out_r)
                if self.uid != os.getuid():
                    os.setgroups([])
                    os.setgid(self.uid)
                    os.setuid(self.uid)
                child = os.fork()
                if child == 0:
                    os._exit(0)
                os.write(out_w, f"{child}\n".encode())
                if os.read(cmd_r, 1) == b"r":
                    os.waitpid(child, 0)
                    os.read(cmd_r, 1)  # until the test closes the pipe
            finally:
                os._exit(0)
        os.close(cmd_r)
        os.close(out_w)
        with os.fdopen(out_r) as out:
            self.child = int(out.readline())

    def reap(self) -> None:
        import os

        os.write(self._cmd, b"r")

    def close(self) -> None:
        import os

        os.close(self._cmd)
        os.waitpid(self.pid, 0)


def test_the_process_limit_waits_for_zombies_that_another_parent_will_reap(monkeypatch):
    """Zombies charged to our uid at a run's start but reaped during it would hand the program their slots on top of
    its allowance (the hostile fork-count test once forked 40 with an allowance of 16): so the limit is sized only
    after the zombies another process will reap are gone. The zombie's parent reaps it once the wait has begun (at
    the wait's first poll), not after a delay the test must beat."""
    import os
    import time

    import tuner.sandbox.procs as procs
    from tuner.sandbox.procs import wait_for_reaping

    reaper = _LateReaper()
    try:
        assert _wait_until_zombie(reaper.child, timeout_s=60.0)
        assert wait_for_reaping(reaper.uid, tolerate=10**6, wait_s=5.0) >= 1 and _is_zombie(reaper.child)  # tolerated
        polls = []
        sleep = time.sleep

        def poll(seconds: float) -> None:
            if not polls:
                reaper.reap()  # the wait is under way, the zombie still there
            polls.append(seconds)
            sleep(seconds)

        monkeypatch.setattr(procs.time, "sleep", poll)
        start = time.monotonic()
        left = wait_for_reaping(reaper.uid, wait_s=5.0)
        waited = time.monotonic() - start
        monkeypatch.undo()
        assert polls  # it did wait for the zombie
        assert left == 0 and not os.path.exists(f"/proc/{reaper.child}")  # reaped before the wait returned
        assert waited < 4.0
    finally:
        reaper.close()


def test_a_zombie_nobody_reaps_costs_one_wait_not_one_per_run():
    import time

    from tuner.sandbox.procs import wait_for_reaping

    reaper = _LateReaper()
    try:
        assert _wait_until_zombie(reaper.child, timeout_s=60.0)
        start = time.monotonic()
        left = wait_for_reaping(reaper.uid, wait_s=0.5)
        first = time.monotonic() - start
        assert left >= 1 and first >= 0.5
        start = time.monotonic()
        assert wait_for_reaping(reaper.uid, wait_s=0.5) >= 1  # still there, and known
        assert time.monotonic() - start < first / 2
    finally:
        reaper.close()
