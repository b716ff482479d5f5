"""The hostile tests again, as an unprivileged user: run as root, this re-runs tests/test_sandbox_hostile.py
under a throw-away uid and asserts that it passes.

Why a test inside the suite rather than a CI-only step: CI then runs exactly README's ``python -m pytest -q``
and still covers the unprivileged case (bwrap without the root-only uid switch, and the ``subprocess`` level
with its documented exposures), and a developer who runs the suite as root gets the same coverage.

The uid is a random one far from real users and from the sandbox pool, with no passwd entry: nothing is added
to /etc/passwd and nothing needs removing afterwards except its processes (killed by uid) and its temp folder.
The throw-away uid can't be assumed to read the checkout or this interpreter (a clone under /root, a pyenv in a
private home), so the run is staged: a world-readable temp folder gets a copy of the `tuner` package, the hostile
test module and the pure-Python packages pytest needs, and runs under this interpreter if that uid can execute it,
else the system's `python3` of the same version. Only when neither works is the test skipped with the reason --
unless ``DTUNE_TEST_UNPRIVILEGED=require`` (set by ``.ci/run``), which turns every such skip into a failure.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tuner.sandbox import SandboxError, isolation_level
from tuner.sandbox.procs import kill_uid, pids_of_uid
from tuner.sandbox.uids import _uid_range

REPO = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("DTUNE_TEST_UNPRIVILEGED", "") == "require"
#: Where the throw-away uid is drawn from: above login uids and the usual subuid ranges, below the sandbox pool.
UID_BASE, UID_SPAN = 1_400_000_000, 1_000_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (as CI runs it): switching to a throw-away uid"),
]


def _cannot(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"DTUNE_TEST_UNPRIVILEGED=require, but {reason}")
    pytest.skip(reason)


def _free_uid() -> int:
    pool = _uid_range()
    for _ in range(100):
        uid = random.randrange(UID_BASE, UID_BASE + UID_SPAN)
        try:
            pwd.getpwuid(uid)
            continue
        except KeyError:
            pass
        if uid not in pool and not pids_of_uid(uid):
            return uid
    raise RuntimeError("no free uid found")


@pytest.fixture
def unprivileged():
    """(uid, home) for one test; afterwards every process of the uid is killed and its folder removed."""
    uid = _free_uid()
    home = Path(tempfile.mkdtemp(prefix="dtune-unpriv-"))
    os.chown(home, uid, uid)
    try:
        yield uid, home
    finally:
        kill_uid(uid)
        shutil.rmtree(home, ignore_errors=True)


#: What the staged run imports besides the standard library: pytest and the packages it needs (all pure Python).
STAGED_PACKAGES = ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "pygments", "py")


def _stage(home: Path) -> Path:
    """A world-readable copy of what the hostile tests need, outside the checkout."""
    import importlib.util

    stage = home / "stage"
    shutil.copytree(REPO / "tuner", stage / "tuner", ignore=shutil.ignore_patterns("__pycache__"))
    # tuner's errors format through decoder.errors (torch-free; the package imports its names lazily)
    shutil.copytree(REPO / "decoder", stage / "decoder", ignore=shutil.ignore_patterns("__pycache__", "bundled"))
    (stage / "tests").mkdir()
    shutil.copy(REPO / "tests" / "test_sandbox_hostile.py", stage / "tests")
    for name in STAGED_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, stage / "site" / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (stage / "site").mkdir(exist_ok=True)
            shutil.copy(origin, stage / "site" / origin.name)
    for path in [stage, *stage.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return stage


def _interpreters() -> list[str]:
    """This interpreter, then the system's python3 of the same version (world-executable on Debian)."""
    found = [sys.executable]
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system and os.path.realpath(system) != os.path.realpath(sys.executable):
        found.append(system)
    return found


def _as(uid: int, home: Path, argv: list[str], timeout: float, cwd: Path = REPO,
        pythonpath: str = str(REPO)) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),  # the same bwrap as ours
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONPATH": pythonpath,  # the staged copy, whatever an editable install elsewhere points to
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
    }
    if "DTUNE_SANDBOX_PYTHON" in os.environ:
        env["DTUNE_SANDBOX_PYTHON"] = os.environ["DTUNE_SANDBOX_PYTHON"]
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            user=uid,
            group=uid,
            extra_groups=[],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    except OSError as exc:  # exec as that uid failed, e.g. the interpreter is under a private home
        return subprocess.CompletedProcess(argv, 126, f"{type(exc).__name__}: {exc}", None)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{argv[1:4]} as uid {uid} timed out after {timeout}s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, None)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def test_hostile_programs_as_an_unprivileged_user(unprivileged):
    uid, home = unprivileged
    stage = _stage(home)
    path = f"{stage}{os.pathsep}{stage / 'site'}"
    version = f"import sys; assert sys.version_info[:2] == {tuple(sys.version_info[:2])}"
    python, why = None, ""
    for candidate in _interpreters():
        probe = _as(uid, home, [candidate, "-S", "-c", f"{version}; import pytest, tuner; print(tuner.__file__)"], 60,
                    cwd=stage, pythonpath=path)
        if probe.returncode == 0 and Path(probe.stdout.strip()).resolve().is_relative_to(stage):
            python = candidate
            break
        why += f" {candidate}: {_last_line(probe.stdout)};"
    if python is None:
        _cannot(f"uid {uid} can run no Python {sys.version_info[0]}.{sys.version_info[1]} on the staged copy:{why}")

    try:
        bwrap_as_root = isolation_level("bwrap") == "bwrap"
    except SandboxError:
        bwrap_as_root = False
    check = "from tuner.sandbox import isolation_level as f\ntry:\n    print(f('bwrap'))\nexcept Exception as e:\n    print(e)"
    bwrap_probe = _as(uid, home, [python, "-S", "-c", check], 60, cwd=stage, pythonpath=path)
    bwrap_unprivileged = bwrap_probe.stdout.strip().endswith("bwrap")
    if bwrap_as_root and not bwrap_unprivileged:
        _cannot(f"bwrap works as root but not as uid {uid}: {_last_line(bwrap_probe.stdout)}")

    report = home / "report.xml"
    argv = [
        python,
        "-S",
        "-m",
        "pytest",
        "tests/test_sandbox_hostile.py",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
    ]
    argv += [f"--basetemp={home / 'pytest'}", f"--junitxml={report}", f"--rootdir={stage}"]
    run = _as(uid, home, argv, 400, cwd=stage, pythonpath=path)
    assert run.returncode == 0, f"hostile tests failed as uid {uid}:\n{run.stdout[-6000:]}"

    cases = ET.parse(report).getroot().iter("testcase")
    ran: dict[str, int] = {"bwrap": 0, "subprocess": 0}
    for case in cases:
        name = case.get("name", "")
        if case.find("skipped") is None and case.find("failure") is None and case.find("error") is None:
            for level in ran:
                if name.endswith(f"[{level}]"):
                    ran[level] += 1
    assert ran["subprocess"] >= 10, (ran, run.stdout[-3000:])
    if bwrap_unprivileged:
        assert ran["bwrap"] >= 10, (ran, run.stdout[-3000:])
    print(f"as uid {uid}: {ran} tests passed per level; {_last_line(run.stdout)}")
