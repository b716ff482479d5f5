"""Shared bits of the benchmark scripts: the machine line every table needs, markdown tables, `--out` files.

Why a module: every table in BENCHMARKS.md must say where and how it was measured (CPU, threads, torch, date,
command), and the scripts must print that the same way so the numbers can be pasted without editing.
"""

from __future__ import annotations

import datetime as _dt
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tuner.base import hardware


def machine_line(device: str = "cpu") -> str:
    """CPU/GPU, torch threads (OMP_NUM_THREADS as set), torch version and UTC date of this run."""
    info = hardware.describe(device)
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"machine: {hardware.summary(info)} (OMP_NUM_THREADS={omp}, {info['cpu_count']} cores visible), "
            f"torch {torch.__version__}, {now}")


def command_line() -> str:
    """The command that produced the output, as typed (module path relative to the repo)."""
    omp = os.environ.get("OMP_NUM_THREADS")
    prefix = f"OMP_NUM_THREADS={omp} " if omp else ""
    return prefix + "python " + " ".join(shlex.quote(a) for a in sys.argv)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A markdown table; `align` is one char per column ('l' or 'r'), numbers right-aligned by default."""
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Report:
    """Collects the printed markdown so `--out FILE` writes exactly what was shown."""

    def __init__(self, out: str | None):
        self.out, self.parts = out, []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.parts.append(text)

    def save(self) -> None:
        if self.out:
            Path(self.out).write_text("\n".join(self.parts) + "\n")


def threads_warning() -> str | None:
    """On a shared CPU, more than one OpenMP thread per contended core slows tiny forwards down many times."""
    if os.environ.get("OMP_NUM_THREADS") is None:
        return "warning: OMP_NUM_THREADS is unset; set it (e.g. 1) so numbers are comparable between runs"
    return None
