"""Are two normalised MATH answers equivalent?

Order of checks (the first that decides wins):
  1. identical strings -> equal. (Departure from the harness, which only asks sympy and so scores an exact
     match of an unparseable answer such as the interval ``[2,5)`` as wrong.)
  2. both plain numbers (integers, decimals, ``a/b``, ``\\frac{a}{b}``/``\\dfrac``/``\\tfrac`` of integers, with
     signs) -> exact rational comparison. Gives the harness's verdict without starting sympy, e.g.
     ``\\frac{1}{2}`` == ``0.5``.
  3. the harness rule: ``parse_latex`` both, equal iff ``sympy.simplify(a - b) == 0``, with a timeout
     (default 5 s, as the harness) -- run in a separate worker process that is killed when it overruns.

If sympy/antlr4 cannot be used, step 3 answers "not equal" and a warning is logged once.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

log = logging.getLogger("tuner.tasks.math")

_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_SLASH_RE = re.compile(r"^([+-]?)(\d+)/(\d+)$")
_FRAC_RE = re.compile(r"^([+-]?)\\[dt]?frac\{([+-]?\d+)\}\{([+-]?\d+)\}$")
_WORKER_PATH = Path(__file__).with_name("sympy_worker.py")


@dataclass(frozen=True)
class Equivalence:
    """Verdict with the step that decided it ("string", "numeric", "sympy") and any sympy error."""

    equal: bool
    method: str
    error: str | None = None


def as_fraction(text: str) -> Fraction | None:
    """Exact value of a plain numeric answer, None for anything else."""
    text = text.strip()
    try:
        if _NUMBER_RE.match(text):
            return Fraction(text)
        for regex in (_SLASH_RE, _FRAC_RE):
            match = regex.match(text)
            if match:
                sign, num, den = match.groups()
                value = Fraction(int(num), int(den))
                return -value if sign == "-" else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


class SympyWorker:
    """One long-lived ``sympy_worker.py`` process, restarted after a timeout; calls are serialised."""

    def __init__(self, startup_timeout_s: float = 120.0) -> None:
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._unavailable: str | None = None

    def _start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-u", str(_WORKER_PATH)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        line = self._readline(self.startup_timeout_s)
        ready = json.loads(line) if line else {"ready": False, "error": "worker did not start"}
        if not ready.get("ready"):
            self._unavailable = str(ready.get("error"))
            log.warning(
                "sympy LaTeX comparison unavailable (%s); MATH answers are compared as strings/numbers only. "
                "Install sympy and antlr4-python3-runtime==4.11.*",
                self._unavailable,
            )
            self._kill()

    def _readline(self, timeout_s: float) -> str | None:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        fd = self._proc.stdout.fileno()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                line = self._proc.stdout.readline()
                return line or None

    def _kill(self) -> None:
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
            self._proc = None

    def compare(self, a: str, b: str, timeout_s: float) -> tuple[bool, str | None]:
        """(equal, error); error is "timeout", "unavailable: ..." or a sympy failure description."""
        with self._lock:
            if self._unavailable is not None:
                return False, f"unavailable: {self._unavailable}"
            if self._proc is None or self._proc.poll() is not None:
                self._start()
                if self._unavailable is not None:
                    return False, f"unavailable: {self._unavailable}"
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write(json.dumps({"a": a, "b": b, "timeout": timeout_s}) + "\n")
                self._proc.stdin.flush()
            except OSError:
                self._kill()
                return False, "worker died"
            line = self._readline(timeout_s + 2.0)
            if line is None:
                self._kill()  # stuck in C code: the alarm could not interrupt it
                return False, "timeout"
            reply = json.loads(line)
            return bool(reply["equal"]), reply.get("error")

    def close(self) -> None:
        with self._lock:
            self._kill()


_worker: SympyWorker | None = None
_worker_lock = threading.Lock()


def _shared_worker() -> SympyWorker:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = SympyWorker()
            atexit.register(_worker.close)
        return _worker


def is_equiv(a: str, b: str, timeout_s: float = 5.0, use_sympy: bool = True) -> Equivalence:
    """Equivalence of two normalised answers (see module docstring for the steps)."""
    if a.strip() == b.strip():
        return Equivalence(True, "string")
    fa, fb = as_fraction(a), as_fraction(b)
    if fa is not None and fb is not None:
        return Equivalence(fa == fb, "numeric")
    if not use_sympy:
        return Equivalence(False, "string")
    equal, error = _shared_worker().compare(a, b, timeout_s)
    return Equivalence(equal, "sympy", error)
