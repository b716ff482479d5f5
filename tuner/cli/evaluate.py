"""`tuner eval`: evaluate one configuration (a profile, or knobs) on a split and print accuracy and speed."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.progress import Progress

from decoder.cli import build_config, knobs_from_args

from ..app.preflight import EVAL, preflight
from ..base.errors import EXIT_OK
from .common import context_from_args, spec_from_args


def main(args: argparse.Namespace) -> int:
    """Evaluate one configuration on a split and print accuracy and speed (`--json`: one JSON object); returns the
    exit code."""
    spec = spec_from_args(args, [f"batch_size={args.batch_size}"] if args.batch_size else None)
    knobs = {**spec.fixed_knobs(), **knobs_from_args(args)} if not args.profile else knobs_from_args(args)
    ctx = context_from_args(args, spec)
    preflight(ctx, EVAL, profile=args.profile, knobs=knobs, split=args.split)  # all before the model loads
    items = ctx.task.load(args.split)
    items = items[: args.limit] if args.limit is not None else items
    config = build_config(args.profile, knobs, ctx.check_model(), allow_mismatch=args.allow_model_mismatch)
    evaluator = ctx.evaluator
    with Progress(console=Console(stderr=True), disable=args.json, transient=True) as progress:
        bar = progress.add_task(f"{ctx.task.name} {args.split}", total=len(items))
        result = evaluator.evaluate(items, config, on_progress=lambda seen, total, c: progress.update(bar, completed=seen))
    info = ctx.task.split_info(args.split)
    if args.json:
        print(json.dumps({**result.metrics(), **dict(task=spec.task, split=args.split, split_hash=info.content_hash,
                                                     model=spec.model, config=config.to_dict())}))
        return EXIT_OK
    lo, hi = result.ci
    Console().print(f"{spec.task} {args.split} (n={result.n}): accuracy {result.accuracy:.1%} "
                    f"[95% CI {lo:.1%}–{hi:.1%}] · {result.tokens_per_s:.1f} tokens/s · NFE {result.metrics()['nfe']:.1f}"
                    f"/item · {config.mode}")
    return EXIT_OK
