"""What the subcommands share: the spec and context from the parsed options, and the tables they print."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from ..context import Context, Options
from ..pareto import TrialPoint
from ..spec import SpecError, StudySpec, load_spec


def spec_from_args(args: argparse.Namespace, extra: list[str] | None = None) -> StudySpec:
    """The spec `--task`/`--spec` names, with `--set` overrides, `--model` and a command's shortcut flags."""
    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model={json.dumps(args.model)}")
    return load_spec(args.spec or args.task, overrides + (extra or []))


def context_from_args(args: argparse.Namespace, spec: StudySpec) -> Context:
    return Context(spec, Options(storage=getattr(args, "storage", Options.storage),
                                 tracking_uri=getattr(args, "tracking_uri", None),
                                 study_name=getattr(args, "study_name", None), device=args.device,
                                 data_dir=args.data_dir))


def usage_error(message: str) -> SpecError:
    """A bad option value, reported like a bad spec field: one line, exit 2."""
    return SpecError(message)


def print_front(out: Console, name: str, front: list[TrialPoint], baseline: dict | None) -> None:
    table = Table(title=f"Pareto front of {name} (accuracy vs tokens/s; feasible = the drop's upper bound within "
                        "the margin)")
    for col in ("trial", "ref", "items", "accuracy", "interval", "drop [upper]", "tokens/s", "NFE", "params"):
        table.add_column(col)
    for p in front:
        ci = "" if p.ci_low is None else f"{p.ci_low:.1%}–{p.ci_high:.1%}"
        table.add_row(str(p.number), p.label or "", "" if p.n is None else str(p.n), f"{p.accuracy:.1%}", ci,
                      format_drop(p), format_speed(p), "" if p.nfe is None else f"{p.nfe:.1f}",
                      format_params(p.params))
    out.print(table)
    if baseline:
        out.print(f"baseline ({baseline.get('reference')}, trial {baseline.get('trial')}): "
                  f"accuracy {baseline['accuracy']:.1%} on {baseline.get('n', '?')} items; accuracy above = the "
                  "baseline's minus the paired drop")


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
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
