"""`tuner show`: a study's finished trials and its Pareto front (a table, or `--json`)."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from ..base.errors import EXIT_OK
from ..report.files import front_table
from ..storage.record import read_trials
from ..storage.shared_ledger import baseline_summary, study_ledger
from ..study.lifecycle import FINISHED
from ..study.points import trial_points
from ..study.repeats import repeats_avoided
from ..verdict.pareto import pareto_front
from .common import (
    Columns,
    context_from_args,
    format_drop,
    format_params,
    format_speed,
    print_front,
    spec_from_args,
    stdout_console,
)


def main(args: argparse.Namespace) -> int:
    """Print the study's finished trials and Pareto front (`--json`: as JSON); returns the exit code."""
    spec = spec_from_args(args)
    study = context_from_args(args, spec).load_study()
    points = trial_points(study, spec.constraint)
    best = pareto_front(points)
    baseline, columns = baseline_summary(study), Columns.of(spec.constraint, study_ledger(study).labelled)
    if args.json:
        shown = dict(study=study.study_name, baseline=baseline.to_dict() if baseline else None,
                     trials=[p.to_dict() for p in points], front=front_table(best),
                     repeats_avoided=repeats_avoided(study))
        print(json.dumps(shown, default=str))
        return EXIT_OK
    out = stdout_console()
    table = Table(title=f"{study.study_name}: {len(points)} finished trials")
    for col in ("trial", "state", "ref", "items", columns.quality, columns.bound_header, "tokens/s", "NFE",
                "feasible", "params"):
        table.add_column(col)
    for p in sorted(points, key=lambda p: p.number):
        table.add_row(str(p.number), p.state, p.label or "", "" if p.n is None else str(p.n), f"{p.accuracy:.1%}",
                      format_drop(p), format_speed(p), "" if p.nfe is None else f"{p.nfe:.1f}",
                      "yes" if p.feasible else "no", format_params(p.params))
    out.print(table)
    print_front(out, study.study_name, best, baseline, columns)
    repeats = repeats_avoided(study)
    distinct = len({t.config_key for t in read_trials(study, states=FINISHED) if t.config_key})
    out.print(f"{distinct} distinct configurations in {len(points)} finished trials; {repeats} repeated proposal(s) "
              "of the sampler replaced by fresh ones", highlight=False)
    return EXIT_OK
