"""`tuner export`: pick a Pareto point, confirm it on the held-out test split, write (and log, and optionally
register) its profile."""

from __future__ import annotations

import argparse

from rich.console import Console

from ..export import export
from .common import context_from_args, item_progress, spec_from_args

EXIT_OK = 0


def main(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    err = Console(stderr=True)
    with item_progress(err, "test items") as on_progress:
        report = export(context_from_args(args, spec), rule=args.pick, max_drop=args.max_drop, out=args.out,
                        force=args.force, register=args.register, on_progress=on_progress,
                        on_stage=lambda line: err.print(line, highlight=False, markup=False, soft_wrap=True))
    t = report.test
    rule = t["non_inferiority"]
    speedup = t["speedup_tokens_per_s"]
    Console().print(
        f"exported trial {report.pick.number} ({args.pick}) → [bold]{report.path}[/]\n"
        f"test (n={rule['n']}): {t['pick']['accuracy']:.1%} vs baseline {t['baseline']['accuracy']:.1%} · paired "
        f"drop {rule['drop_points']:.1f} points, {rule['confidence']:.0%} upper bound {rule['upper_bound_points']:.1f}"
        f" vs margin {rule['margin_points']:g} → {'confirmed' if report.confirmed else 'NOT CONFIRMED (forced)'}"
        + (f" · {speedup:.1f}x the baseline's tokens/s" if speedup else "")
        + (" · baseline's test figures reused" if t["baseline"].get("reused_from") else ""), soft_wrap=True)
    if report.registered is not None:
        r = report.registered
        Console().print(f"registered: {r.name} version {r.version}, alias {r.alias} ({r.uri}); promote it with "
                        f"`python -m tuner promote {r.name} --version {r.version}`", soft_wrap=True)
    return EXIT_OK
