"""`tuner export`: pick a Pareto point, confirm it on the held-out test split, write (and log) its profile."""

from __future__ import annotations

import argparse

from rich.console import Console

from ..export import export
from .common import context_from_args, spec_from_args

EXIT_OK = 0


def main(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    report = export(context_from_args(args, spec), rule=args.pick, max_drop=args.max_drop, out=args.out,
                    force=args.force)
    t = report.test
    Console().print(
        f"exported trial {report.pick.number} ({args.pick}) → [bold]{report.path}[/]\n"
        f"test: {t['pick']['accuracy']:.1%} vs baseline {t['baseline']['accuracy']:.1%} "
        f"(drop {t['accuracy_drop_points']:.1f} pts, allowed {t['max_drop_points']}; McNemar p="
        f"{t['paired_test']['p_value']:.3g}) · {t['pick']['tokens_per_s']:.1f} vs {t['baseline']['tokens_per_s']:.1f}"
        f" tokens/s{'' if report.confirmed else ' · NOT CONFIRMED (forced)'}")
    return EXIT_OK
