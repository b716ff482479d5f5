"""Hostile programs: each attack must be contained and leave the host as it was.

After every test: the test process is alive, a sentinel process it owns is alive, and no process of the
sandbox uid pool is left. Attacks that only an OS boundary can stop (killing the parent, reading other
processes' environments, writing outside the work dir) run for levels that have one: bwrap always, the plain
subprocess level only as root (it then switches to a throw-away uid).
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tuner.sandbox import Limits, isolation_level, run_program, run_programs
from tuner.sandbox.procs import pids_of_uid
from tuner.sandbox.uids import _uid_range

ROOT = os.geteuid() == 0
LEVELS = ["subprocess"] + (["bwrap"] if isolation_level() == "bwrap" else [])
FAKE_SECRET = "dtune-fake-secret-7f3a9c"


def _protected(level: str) -> bool:
    return level == "bwrap" or ROOT


def _leftover_sandbox_processes(wait_s: float = 2.0) -> list[int]:
    """Live processes of any uid of the sandbox pool (root only; waits briefly for dying ones)."""
    if not ROOT:
        return []
    pool = _uid_range()
    deadline = time.monotonic() + wait_s
    while True:
        uids = set()
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    uid = os.stat(f"/proc/{name}").st_uid
                except OSError:
                    continue
                if uid in pool:
                    uids.add(uid)
        left = sorted(pid for uid in uids for pid in pids_of_uid(uid))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def host_stays_fine():
    sentinel = subprocess.Popen(
        ["sleep", "60"], env={"PATH": "/usr/bin:/bin", "DTUNE_TEST_SECRET": FAKE_SECRET}
    )
    before = {p.name for p in Path(tempfile.gettempdir()).glob("dtune-sbx-*")}
    try:
        yield sentinel
        assert sentinel.poll() is None, "sentinel process was killed"
        assert subprocess.run(["true"], timeout=10).returncode == 0, "cannot start processes any more"
        assert _leftover_sandbox_processes() == []
        after = {p.name for p in Path(tempfile.gettempdir()).glob("dtune-sbx-*")}
        assert after <= before, f"sandbox work dirs left behind: {after - before}"
    finally:
        sentinel.kill()
        sentinel.wait()


@pytest.mark.parametrize("level", LEVELS)
def test_infinite_loop_times_out(level):
    start = time.monotonic()
    res = run_program("while True:\n    pass\n", Limits(timeout_s=1.0), isolation=level)
    assert res.status == "timeout"
    assert time.monotonic() - start < 4


@pytest.mark.parametrize("level", LEVELS)
def test_fork_bomb_is_contained(level):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    res = run_program(bomb, Limits(timeout_s=1.5), isolation=level)
    assert res.status in ("timeout", "crashed")
    assert time.monotonic() - start < 8
    assert run_program("print('after')\n", Limits(timeout_s=3), isolation=level).passed


@pytest.mark.parametrize("level", LEVELS)
def test_fork_count_is_limited(level):
    src = (
        "import os, time\nn = 0\ntry:\n    while n < 500:\n        if os.fork() == 0:\n            time.sleep(30)\n"
        "            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint('forked', n)\nassert n < 40\n"
    )
    res = run_program(src, Limits(timeout_s=3, max_processes=16), isolation=level)
    assert res.passed, res


@pytest.mark.skipif(not ROOT, reason="per-run uids (and so per-run process limits) need root")
def test_fork_bomb_does_not_starve_parallel_neighbours():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    sources = [bomb] + [f"print('neighbour {i}')\n" for i in range(3)]
    results = run_programs(sources, Limits(timeout_s=1.5), max_workers=4)
    assert results[0].status in ("timeout", "crashed")
    assert [r.status for r in results[1:]] == ["passed"] * 3


@pytest.mark.parametrize("level", LEVELS)
def test_huge_output_is_capped(level):
    res = run_program(
        "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", Limits(timeout_s=3), isolation=level
    )
    assert res.status == "crashed" and "output limit" in res.reason
    assert len(res.output) < 20_000


@pytest.mark.parametrize("level", LEVELS)
def test_memory_bomb(level):
    res = run_program(
        "blocks = [bytearray(10**8) for _ in range(100)]\n",
        Limits(timeout_s=3, memory_mb=512),
        isolation=level,
    )
    assert res.status == "crashed" and "memory" in res.reason


@pytest.mark.parametrize("level", LEVELS)
def test_file_size_limit(level):
    res = run_program(
        "open('big', 'wb').write(b'x' * (64 << 20))\n", Limits(timeout_s=3, file_size_mb=8), isolation=level
    )
    assert res.status == "crashed" and "file size" in res.reason


@pytest.mark.parametrize("level", LEVELS)
def test_killing_the_parent_fails(level, host_stays_fine):
    if not _protected(level):
        pytest.skip("without bwrap or root the child shares our uid and may signal us")
    src = (
        "import os, signal\n"
        f"for pid in (os.getppid(), {os.getpid()}, {host_stays_fine.pid}):\n"
        "    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError as exc:\n        print('denied', pid, exc)\n"
        "os.kill(-1, signal.SIGKILL)\n"
    )
    res = run_program(src, Limits(timeout_s=3), isolation=level)
    assert "denied" in res.output, res  # what happens to the program itself does not matter
    assert host_stays_fine.poll() is None


@pytest.mark.parametrize("level", LEVELS)
def test_environment_secrets_are_not_visible(level, monkeypatch, host_stays_fine):
    monkeypatch.setenv("DTUNE_TEST_SECRET", FAKE_SECRET)
    src = (
        "import os\nprint(sorted(os.environ.items()))\nseen = 0\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit():\n"
        "        for f in ('environ', 'cmdline'):\n"
        "            try:\n                data = open(f'/proc/{pid}/{f}', 'rb').read()\n                seen += 1\n"
        "            except OSError:\n                continue\n"
        "            if b'" + FAKE_SECRET + "' in data:\n                print('LEAK', pid, f)\n"
        "print('scanned', seen)\n"
    )
    res = run_program(src, Limits(timeout_s=3), isolation=level)
    assert res.passed and "scanned" in res.output
    assert "DTUNE_TEST_SECRET" not in res.output
    if _protected(level):
        assert "LEAK" not in res.output, res.output


@pytest.mark.parametrize("level", LEVELS)
def test_writes_outside_the_work_dir_fail(level, tmp_path):
    if not _protected(level):
        pytest.skip("without bwrap or root the child can write wherever we can")
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    victim.chmod(0o666)
    escape = Path(tempfile.gettempdir()) / f"dtune-escape-{os.getpid()}"
    repo_file = Path(__file__).resolve()
    repo_before = repo_file.read_bytes()
    src = (
        "import os\n"
        f"for path in ({str(victim)!r}, {str(tmp_path / 'new.txt')!r}, {str(repo_file)!r}, {str(escape)!r},"
        " '/etc/dtune-test', '/usr/dtune-test'):\n"
        "    try:\n        open(path, 'a').write('pwned')\n        print('WROTE', path)\n"
        "    except OSError as exc:\n        print('blocked', path, type(exc).__name__)\n"
        "open('local.txt', 'w').write('fine')\nprint('cwd ok', os.listdir('.'))\n"
    )
    res = run_program(src, Limits(timeout_s=3), isolation=level)
    assert res.passed and "cwd ok" in res.output and "local.txt" in res.output, res.output
    for path in (victim, tmp_path / "new.txt", repo_file, "/etc/dtune-test", "/usr/dtune-test"):
        assert f"WROTE {path}\n" not in res.output
    assert victim.read_text() == "original"
    assert not (tmp_path / "new.txt").exists()
    assert repo_file.read_bytes() == repo_before
    if level == "bwrap":  # inside bwrap /tmp is the sandbox's own tmpfs, gone afterwards
        assert not escape.exists()
    escape.unlink(missing_ok=True)


@pytest.mark.parametrize("level", LEVELS)
def test_host_files_are_not_readable(level):
    if not _protected(level):
        pytest.skip("without bwrap or root the child reads what we can read")
    src = (
        "for path in ('/etc/shadow', '/root/.bashrc', '/proc/1/environ'):\n"
        "    try:\n        data = open(path).read()\n        print('READ', path, len(data))\n"
        "    except OSError as exc:\n        print('blocked', path, type(exc).__name__)\n"
    )
    res = run_program(src, Limits(timeout_s=3), isolation=level)
    assert res.passed
    assert "READ /etc/shadow" not in res.output and "READ /root/.bashrc" not in res.output


def test_no_network_in_bwrap():
    if "bwrap" not in LEVELS:
        pytest.skip("bwrap not available here")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    got: list[object] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                got.append(server.accept())
                return
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept)
    thread.start()
    src = (
        "import socket\n"
        f"for host in ('127.0.0.1', '1.1.1.1'):\n"
        "    try:\n"
        f"        socket.create_connection((host, {port}), timeout=1)\n        print('CONNECTED', host)\n"
        "    except OSError as exc:\n        print('no network', host, exc)\n"
    )
    res = run_program(src, Limits(timeout_s=3), isolation="bwrap")
    done.set()
    thread.join()
    server.close()
    assert res.passed and "CONNECTED" not in res.output
    assert not got


@pytest.mark.parametrize("level", LEVELS)
def test_escaped_children_are_killed(level):
    if not _protected(level):
        pytest.skip("children of our own uid cannot be swept")
    src = (
        "import os, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n    os._exit(0)\n"
        "time.sleep(0.1)\nprint('parent done')\n"
    )
    res = run_program(src, Limits(timeout_s=3), isolation=level)
    assert res.passed
    # the autouse fixture asserts that no process of the sandbox uids is left
