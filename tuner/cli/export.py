"""`tuner export`: pick a Pareto point, confirm it on the held-out test split, write (and log, and optionally
register) its profile."""

from __future__ import annotations

import argparse

from rich.console import Console

from ..app.preflight import EXPORT, preflight
from ..base.errors import EXIT_OK
from .common import context_from_args, item_progress, spec_from_args


def main(args: argparse.Namespace) -> int:
    """Pick, confirm on the test split, write (and optionally register) the profile, then print the verdict; returns
    the exit code (a pick its confirmation refuses raises ExportRefused: exit 3)."""
    spec = spec_from_args(args)
    ctx = context_from_args(args, spec)
    inputs = dict(max_drop=args.max_drop, out=args.out, overwrite=args.overwrite, register=args.register)
    preflight(ctx, EXPORT, **inputs)  # before the test split is decoded (export() finds them done)
    from ..export.pipeline import export

    err = Console(stderr=True)
    with item_progress(err, "test items", labelled=ctx.task.labelled) as on_progress:
        report = export(ctx, rule=args.pick, force=args.force, on_progress=on_progress,
                        on_stage=lambda line: err.print(line, highlight=False, markup=False, soft_wrap=True), **inputs)
    t = report.test.figures
    rule = t.non_inferiority
    speedup = t.speedup_tokens_per_s
    accuracy = (f"{t.pick['accuracy']:.1%} vs baseline {t.baseline['accuracy']:.1%} · "
                if "accuracy" in t.pick and "accuracy" in t.baseline else "")
    quantity = "disagreement with the baseline" if rule["metric"] == "agreement" else "paired drop"
    Console().print(
        f"exported trial {report.pick.number} ({args.pick}) → [bold]{report.path}[/]\n"
        f"test (n={rule['n']}): {accuracy}{quantity} {rule['estimate_points']:.1f} points, {rule['confidence']:.0%} "
        f"upper bound {rule['upper_bound_points']:.1f} vs margin {rule['margin_points']:g} → "
        f"{'confirmed' if report.confirmed else 'NOT CONFIRMED (forced)'}"
        + (f" · stopped at look {t.sequential['stages_used']} of {t.sequential['stages_planned']} "
           f"({t.sequential['items_decoded']} of {t.sequential['split_items']} test items)" if t.sequential else "")
        + (f" · {speedup:.1f}x the baseline's tokens/s" if speedup else "")
        + (" · baseline's test figures reused" if t.reused_baseline else ""), soft_wrap=True)
    if report.registered is not None:
        r = report.registered
        Console().print(f"registered: {r.name} version {r.version}, alias {r.alias} ({r.uri}); promote it with "
                        f"`python -m tuner promote {r.name} --version {r.version}`", soft_wrap=True)
    return EXIT_OK
