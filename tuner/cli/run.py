"""`tuner run`: run or resume a study on the validation split (one worker, or `--n-workers` local ones), then print
the Pareto front."""

from __future__ import annotations

import argparse
import contextlib

from rich.console import Console

from ..app.context import Context
from ..app.preflight import RUN, preflight
from ..base.errors import EXIT_OK
from .common import Columns, context_from_args, print_front, spec_from_args, stdout_console, usage_error

SHORTCUTS = ("trials", "validation_size", "batch_size", "sampler", "seed")  # flags that set a spec field


def print_plan(ctx: Context) -> int:
    """`run --plan`: what the study will cost (from what the storage holds; nothing is created), then exit."""
    from ..app.context import NoStudyError
    from ..storage.errors import StorageError
    from ..storage.optuna_internals import backend
    from ..study.plan import format_plan
    from ..workers.planning import study_plan

    storage = study = None
    try:
        study = ctx.load_study()
        storage = backend(study)
    except (NoStudyError, StorageError):
        with contextlib.suppress(StorageError):
            storage = ctx.open_storage(create=False, write=False)
    for line in format_plan(study_plan(ctx, storage, study), ctx.spec):
        print(line)
    return EXIT_OK


def main(args: argparse.Namespace) -> int:
    """Run or resume the study the options name (one worker, or `--n-workers` local ones), then print its front;
    returns the exit code."""
    extra = [f"{field}={getattr(args, field)}" for field in SHORTCUTS if getattr(args, field) is not None]
    spec = spec_from_args(args, extra)
    if args.heartbeat_interval < 1:
        raise usage_error("--heartbeat-interval must be at least 1 second")
    if args.refresh_every < 1:
        raise usage_error(f"--refresh-every must be at least 1, not {args.refresh_every}")
    ctx = context_from_args(args, spec)
    preflight(ctx, RUN, accept_low_power=args.accept_low_power)  # before torch, MLflow or a model loads
    console = Console(stderr=True)
    if not args.worker_child:
        for notice in ctx.task.notices():  # e.g. a validation split dtune made, an unlabelled file
            console.print(f"note: {notice}", highlight=False, markup=False, soft_wrap=True)
    if args.plan:
        return print_plan(ctx)
    from ..storage.shared_ledger import baseline_summary, study_ledger
    from ..study.points import front
    from ..workers.launcher import parse_n_workers, run_workers, stop_with_parent
    from ..workers.worker import Worker, WorkerOptions, interrupts

    n_workers = parse_n_workers(args.n_workers)
    if n_workers is None:
        raise usage_error(f"--n-workers must be a positive integer or 'auto', not {args.n_workers!r}")
    # On a log file (nohup, CI, a scheduler) a progress bar renders only when it ends: print a line per trial.
    logged = args.worker_child or not console.is_terminal
    options = WorkerOptions(heartbeat_interval=args.heartbeat_interval, refresh_every=args.refresh_every,
                            worker_index=args.worker_index, show_progress=not (args.no_progress or logged),
                            log_trials=logged)
    with interrupts.handling_signals():
        if args.worker_child:
            stop_with_parent()
        if n_workers > 1:
            code, study = run_workers(ctx, options, args.argv, n_workers, console)
        else:
            code, study = EXIT_OK, Worker(ctx, options, console).run()
    if study is not None and not args.worker_child:
        print_front(stdout_console(), study.study_name, front(study, spec.constraint), baseline_summary(study),
                    Columns.of(spec.constraint, study_ledger(study).labelled))
    return code
