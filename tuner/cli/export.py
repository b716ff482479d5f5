"""`tuner export`: pick a Pareto point, confirm it on the held-out test split, write (and log, and optionally
register) its profile."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from decoder.profile import check_folder, check_writable

from .common import context_from_args, item_progress, spec_from_args

EXIT_OK = 0


def main(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    ctx = context_from_args(args, spec)
    # Where the profile goes and the study database, before torch and the rest load (export checks them again).
    if args.out is not None:
        check_writable(args.out, overwrite=args.overwrite)
    else:
        check_folder(Path("profiles"))  # the default folder (export checks the full default name)
    ctx.check_sandbox()
    ctx.check_services(create=False, write=True)
    from ..export import export

    err = Console(stderr=True)
    with item_progress(err, "test items") as on_progress:
        report = export(ctx, rule=args.pick, max_drop=args.max_drop, out=args.out, force=args.force,
                        overwrite=args.overwrite, register=args.register, on_progress=on_progress,
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
