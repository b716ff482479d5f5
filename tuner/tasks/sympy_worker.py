"""Standalone worker process that compares two LaTeX answers with sympy (run as a script, not imported).

Why a separate process: ``sympy.simplify`` or evaluating a parsed power such as ``10^{10^{10}}`` can run for
minutes inside C code where no Python-level alarm fires. The parent (:mod:`tuner.tasks.math_equiv`) can kill
this process on its own clock and start a fresh one; an alarm here handles the common, interruptible case
cheaply, and an address-space limit turns runaway big-number arithmetic into a MemoryError.

Protocol: one JSON object per line on stdin ``{"a": str, "b": str, "timeout": float}``; one JSON object per
line on stdout ``{"equal": bool, "error": str | null}``. The first line written is ``{"ready": ...}``.
It exits when stdin closes.
"""

from __future__ import annotations

import json
import signal
import sys


def _limit_memory(mib: int = 2048) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (mib << 20, mib << 20))
    except (ImportError, ValueError, OSError):
        pass


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise _Timeout()


def _compare(a: str, b: str):
    """Harness rule: parse both with ``parse_latex``; equal iff ``simplify(a - b) == 0``."""
    import sympy
    from sympy.parsing.latex import parse_latex

    try:
        x, y = parse_latex(a), parse_latex(b)
    except (_Timeout, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - LaTeXParsingError, SympifyError, TypeError ...
        return False, f"unparseable: {type(exc).__name__}"
    try:
        diff = x - y
    except (_Timeout, MemoryError):
        raise
    except TypeError:
        return False, "cannot subtract"
    try:
        return bool(sympy.simplify(diff) == 0), None
    except (_Timeout, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001
        return False, f"simplify failed: {type(exc).__name__}"


def main() -> int:
    _limit_memory()
    signal.signal(signal.SIGALRM, _on_alarm)
    try:
        import sympy  # noqa: F401
        from sympy.parsing.latex import parse_latex

        parse_latex("1")  # fails here if antlr4-python3-runtime is missing or of the wrong version
        ready = {"ready": True, "error": None}
    except Exception as exc:  # noqa: BLE001
        ready = {"ready": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            signal.setitimer(signal.ITIMER_REAL, max(0.1, float(req.get("timeout", 5.0))))
            try:
                equal, error = _compare(str(req["a"]), str(req["b"]))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Timeout:
            equal, error = False, "timeout"
        except MemoryError:
            equal, error = False, "memory"
        except Exception as exc:  # noqa: BLE001
            equal, error = False, f"{type(exc).__name__}"
        sys.stdout.write(json.dumps({"equal": equal, "error": error}) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
