"""What the subcommands share: the spec and context from the parsed options, and the tables they print."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..app.context import Context, Options
from ..storage.record import BaselineSummary
from ..study.spec import SpecError, StudySpec, load_spec, override_value
from ..tasks.registry import task_source
from ..verdict.constraint import Constraint
from ..verdict.pareto import TrialPoint


def spec_from_args(args: argparse.Namespace, extra: list[str] | None = None) -> StudySpec:
    """The spec `--task`/`--spec` names, with `--model` and a command's shortcut flags, then the `--set` overrides.

    The `--set` overrides are applied last, so each is validated even where a shortcut flag sets the same field
    (`--set trials=many --trials 2` is refused, not silently replaced); a flag and an override that give one
    field two different values are refused too, since either choice would drop one without a word."""
    shortcuts = ([f"model={json.dumps(args.model)}"] if args.model else []) + list(extra or [])
    overrides = list(args.overrides)
    if not args.spec and task_source(args.task) != "builtin":
        # A task without a study spec (an lm-eval task file, lm-eval:NAME, a prompts file): read and checked in
        # full here, before any model loads, then studied with the defaults.
        from ..study.defaults import spec_for_task
        from ..tasks import get_task

        spec = spec_for_task(args.task, get_task(args.task, data_dir=args.data_dir), args.model, shortcuts + overrides)
        _check_conflicts(shortcuts, overrides)
        return spec
    spec = load_spec(args.spec or args.task, shortcuts + overrides)
    _check_conflicts(shortcuts, overrides)
    if args.spec and args.task != spec.task:
        raise SpecError(f"--task {args.task} but the spec {args.spec} is for task {spec.task!r}; give the same task "
                        "(or leave --spec out to use the built-in spec)")
    return spec


def _check_conflicts(shortcuts: list[str], overrides: list[str]) -> None:
    """Refuse `--trials 5 --set trials=3`: two values for one field."""
    flags = {}
    for item in shortcuts:
        key, _, value = item.partition("=")
        flags[key] = value
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in flags:
            continue
        try:
            same = override_value(value) == override_value(flags[key])
        except SpecError:
            same = False  # the override's own check names the bad value
        if not same:
            flag = "--" + key.replace("_", "-")
            raise SpecError(f"{flag} {override_value(flags[key])} and --set {item} give {key} two values; give one")


def context_from_args(args: argparse.Namespace, spec: StudySpec) -> Context:
    """The command's context: the spec with the storage, tracking, study name, device and data options given."""
    return Context(spec, Options(storage=getattr(args, "storage", Options.storage),
                                 tracking_uri=getattr(args, "tracking_uri", None),
                                 study_name=getattr(args, "study_name", None), device=args.device,
                                 data_dir=args.data_dir, compile=getattr(args, "compile", False)))


def stdout_console() -> Console:
    """The console for result tables: rich folds a table to 80 columns when stdout is not a terminal (a log file,
    a pipe), which cuts every cell to a few letters; there, a width a log viewer shows whole."""
    out = Console()
    return out if out.is_terminal else Console(width=200)


def usage_error(message: str) -> SpecError:
    """A bad option value, reported like a bad spec field: one line, exit 2."""
    return SpecError(message)


@dataclass(frozen=True)
class Columns:
    """What a study's tables call its quality and its constrained quantity: accuracy and the paired drop, or, on a
    task without labels, agreement with the baseline and the disagreement rate."""

    quality: str = "accuracy"
    bound: str = "drop"

    @classmethod
    def of(cls, constraint: Constraint, labelled: bool) -> Columns:
        return cls("accuracy" if labelled else "agreement", constraint.quantity)

    @property
    def bound_header(self) -> str:
        """The bound's column header, its brackets escaped (rich would read "[upper]" as markup and drop it)."""
        return escape(f"{self.bound} [upper]")


def print_front(out: Console, name: str, front: list[TrialPoint], baseline: BaselineSummary | None,
                columns: Columns = Columns()) -> None:
    """The front as a table (quality, CI, the constrained quantity's bound, tokens/s, NFE, knobs), then the baseline
    it is judged against."""
    table = Table(title=f"Pareto front of {name} ({columns.quality} vs tokens/s; feasible = the {columns.bound}'s "
                        "upper bound within the margin)")
    for col in ("trial", "ref", "items", columns.quality, "interval", columns.bound_header, "tokens/s", "NFE", "params"):
        table.add_column(col)
    for p in front:
        ci = "" if p.ci_low is None else f"{p.ci_low:.1%}–{p.ci_high:.1%}"
        table.add_row(str(p.number), p.label or "", "" if p.n is None else str(p.n), f"{p.accuracy:.1%}", ci,
                      format_drop(p), format_speed(p), "" if p.nfe is None else f"{p.nfe:.1f}",
                      format_params(p.params))
    out.print(table)
    if baseline is not None and baseline.accuracy is not None:
        out.print(f"baseline ({baseline.reference}, trial {baseline.trial}): accuracy {baseline.accuracy:.1%} on "
                  f"{baseline.n if baseline.n is not None else '?'} items; accuracy above = the baseline's minus the "
                  "paired drop")


def format_drop(p: TrialPoint) -> str:
    """The paired drop against the baseline and its upper bound, in points."""
    if p.drop is None:
        return ""
    return f"{100 * p.drop:.1f} [{100 * (p.drop_upper or 0.0):.1f}]"


def format_speed(p: TrialPoint) -> str:
    """Tokens/s with the spread of its timing passes, and `noisy` when the machine was too busy to trust it."""
    text = f"{p.tokens_per_s:.1f}"
    if p.speed_spread is not None:
        text += f" ±{100 * p.speed_spread / 2:.0f}%"
    return text + (" noisy" if p.speed_noisy else "")


def format_params(params: dict[str, Any]) -> str:
    """Knobs as ``k=v`` words, floats to 3 significant digits."""
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


@contextlib.contextmanager
def item_progress(console: Console, label: str, *, every: float = 0.1,
                  labelled: bool = True) -> Iterator[Callable[[int, int, int], None]]:
    """An `on_progress(seen, total, correct)` callback: a live bar on a terminal; on a log file (nohup, CI, a
    scheduler) one plain line each time another `every` of the items is done, since a bar only renders at its end
    there (with the accuracy so far when the task is `labelled`: an unlabelled task has no correct answers)."""
    if console.is_terminal:
        from rich.progress import Progress

        with Progress(console=console, transient=True) as progress:
            bar = progress.add_task(label, total=None)
            yield lambda seen, total, correct: progress.update(bar, completed=seen, total=total)
        return
    state = {"step": -1, "seen": 0}
    steps = round(1 / every)

    def line(seen: int, total: int, correct: int) -> None:
        if seen <= state["seen"]:  # the next decode began
            state["step"] = -1
        state["seen"] = seen
        step = min(int(seen * steps / max(total, 1)), steps)
        if step > state["step"]:
            state["step"] = step
            accuracy = f" · accuracy so far {correct / max(seen, 1):.1%}" if labelled else ""
            console.print(f"  {seen}/{total} {label}{accuracy}", highlight=False, markup=False, soft_wrap=True)

    yield line
