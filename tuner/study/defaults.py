"""The study spec of a task that comes without one (an lm-eval task file, `lm-eval:NAME`, a prompts file).

The defaults are the built-in specs' choices made general: the answer length from the task (`max_gen_toks`), block
32, the search space every built-in spec searches (windows below the answer length, or none; tau0, alpha, early
exit), the vanilla / Fast-dLLM / paper references, and the accuracy constraint, or the agreement constraint where
the task has no labels. `--set` overrides any field; the answer length's dependants (the vanilla steps, the window
choices, the paper's window) follow an overridden `decode.gen_length` unless they are overridden too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..tasks import Task
from ..verdict.constraint import Constraint
from .spec import SpecError, StudySpec, apply_overrides, spec_from_dict

DEFAULT_GEN_LENGTH = 256  # a prompts file says nothing about its answers' length: lm-eval's default
BLOCK_SIZE = 32
WINDOWS = (16, 32, 64, 96, 128, 192, 256)
PAPER_WINDOW_SHARE = 3 / 8  # the paper's window: 96 of 256 answer tokens for LLaDA on GSM8K (Table 11), 32 of 128 on arith
DEFAULT_MAX_DROP = 5.0


def spec_for_task(task_name: str, task: Task, model: str | None, overrides: list[str]) -> StudySpec:
    """A spec for `task` (opened by `tuner.tasks.get_task`) with `overrides` (`--set`, shortcut flags) applied."""
    given = apply_overrides({}, overrides)
    if not (model or given.get("model")):
        raise SpecError(f"--model is required for {task_name}: a task without a study spec names no model")
    gen = int(getattr(task, "default_gen_length", None) or DEFAULT_GEN_LENGTH)
    gen = max(BLOCK_SIZE, -(-gen // BLOCK_SIZE) * BLOCK_SIZE)  # whole blocks
    data: dict[str, Any] = {
        "task": task_name, "model": model or given.get("model"),
        "description": f"{task_name}: defaults for a task without a study spec (tuner.study.defaults)",
        "decode": {"gen_length": gen, "block_size": BLOCK_SIZE},
        "constraint": dataclasses.asdict(Constraint(max_drop=DEFAULT_MAX_DROP,
                                                    metric="accuracy" if task.labelled else "agreement")),
        "race": {"min_items": 150, "growth": 2}, "trials": 30, "sampler": "gp", "seed": 0, "batch_size": 1,
        "chunk_size": 50,
    }
    data = apply_overrides(data, overrides)
    gen_length = (data.get("decode") or {}).get("gen_length", gen)
    if not isinstance(gen_length, int) or isinstance(gen_length, bool):
        raise SpecError(f"decode.gen_length must be int, got {gen_length!r}")
    windows = [w for w in WINDOWS if w < gen_length]
    data.setdefault("search_space", {
        "window": {"choices": [*windows, None]}, "threshold": {"low": 0.5, "high": 0.99},
        "alpha": {"low": 0.0, "high": 0.7}, "early_exit": {"choices": [True, False]}})
    paper = min(windows, key=lambda w: abs(w - PAPER_WINDOW_SHARE * gen_length)) if windows else None
    data.setdefault("references", [
        {"name": "vanilla", "mode": "vanilla", "steps": gen_length},
        {"name": "fast-dllm", "mode": "streaming", "window": None, "threshold": 0.9, "alpha": 0.0,
         "early_exit": False},
        {"name": "paper", "mode": "streaming", "window": paper, "threshold": 0.9, "alpha": 0.3, "early_exit": True}])
    spec = spec_from_dict(data)
    if spec.constraint.needs_labels and not task.labelled:
        raise SpecError(f"{task_name} has no labels, so the accuracy constraint can't judge it: use the agreement "
                        "constraint (constraint.metric=agreement, the default for such a task)")
    return spec
