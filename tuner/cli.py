"""`python -m tuner run | eval | show | export | tasks`.

Exit codes scripts can rely on: 0 success; 2 bad input or unreachable service (one-line message on stderr);
3 export refused by its held-out confirmation; 130 interrupted (finished trials are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

EXIT_OK, EXIT_ERROR, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 2, 3, 130


def _common(p: argparse.ArgumentParser, *, study: bool = True) -> None:
    p.add_argument("--task", required=True, help="task name (a spec studies/<task>.yaml) or a spec file path")
    p.add_argument("--spec", help="a study spec YAML to use instead of studies/<task>.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any spec field (YAML value, dotted keys), e.g. --set constraint.max_drop=2")
    p.add_argument("--model", help="override the spec's model (checkpoint dir, dtune/tiny-arith, or hub id)")
    p.add_argument("--data-dir", default=os.environ.get("DTUNE_DATA_DIR"),
                   help="local benchmark files laid out like shared/data (default: $DTUNE_DATA_DIR, else the hub)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: CUDA if present)")
    if study:
        p.add_argument("--storage", default=os.environ.get("OPTUNA_STORAGE", "sqlite:///dtune.db"),
                       help="Optuna storage URL: sqlite:///file.db (default) or postgresql+psycopg://…")
        p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                       help="MLflow tracking URI (default: sqlite:///mlflow.db in the current directory)")
        p.add_argument("--study-name", help="default: <task>-<model>-<spec hash>, so re-running resumes")


def build_parser() -> argparse.ArgumentParser:
    from decoder.cli import add_knob_arguments

    parser = argparse.ArgumentParser(prog="python -m tuner", description="Tune diffusion-LM decoding per task.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run or resume a study (Optuna) on the validation split")
    _common(run)
    run.add_argument("--trials", type=int, help="trial budget of the study (finished = complete + pruned)")
    run.add_argument("--validation-size", type=int, help="use the first N validation items")
    run.add_argument("--batch-size", type=int)
    run.add_argument("--sampler", choices=["gp", "tpe", "nsga2", "random"])
    run.add_argument("--seed", type=int)
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--n-workers", default="1", metavar="N|auto",
                     help="start N worker processes on this machine (auto: one per CUDA GPU); each takes --device "
                          "cuda:i round-robin when CUDA is present. Workers on other machines just run the same "
                          "command against the same --storage")
    run.add_argument("--worker-index", type=int, metavar="I",
                     help="sampler seed offset of this worker (default: the next free index the study hands out)")
    run.add_argument("--heartbeat-interval", type=int, default=10, metavar="S",
                     help="seconds between a running trial's heartbeats; a trial silent for 3 intervals is failed "
                          "and retried by another worker (default: 10)")
    run.add_argument("--refresh-every", type=int, default=5, metavar="N",
                     help="refresh the study's MLflow artifacts (Pareto plots, trials table) every N finished trials "
                          "and at the end (default: 5; 1 = after every trial, which costs ~5%% of a short trial)")
    run.add_argument("--worker-child", action="store_true", help=argparse.SUPPRESS)  # started by --n-workers

    ev = sub.add_parser("eval", help="evaluate one configuration (a profile or knobs) on a split")
    _common(ev, study=False)
    ev.add_argument("--profile", help="a profile JSON (knobs given as options override it)")
    ev.add_argument("--split", choices=["validation", "test"], default="validation")
    ev.add_argument("--limit", type=int, help="first N items of the split")
    ev.add_argument("--batch-size", type=int)
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    add_knob_arguments(ev)

    show = sub.add_parser("show", help="print a study's trials and Pareto front")
    _common(show)
    show.add_argument("--json", action="store_true")

    exp = sub.add_parser("export", help="confirm a Pareto point on the test split and write a profile")
    _common(exp)
    exp.add_argument("--pick", choices=["knee", "fastest"], default="knee")
    exp.add_argument("--max-drop", type=float, help="accuracy points below the baseline allowed (default: spec)")
    exp.add_argument("--out", help="profile path (default: profiles/<study>-<time>.json)")
    exp.add_argument("--force", action="store_true", help="write the profile even if confirmation fails")

    sub.add_parser("tasks", help="list the tasks and their study specs")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # `run --n-workers` hands the same command to its workers
    console = Console(stderr=True)
    from decoder import DecoderError

    from .export import ExportError, ExportRefused
    from .run import WorkerError
    from .spec import SpecError
    from .storage import StorageError
    from .tasks import TaskError
    from .tracking import TrackingError

    try:
        return COMMANDS[args.command](args, console)
    except ExportRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (SpecError, TaskError, DecoderError, StorageError, TrackingError, ExportError, WorkerError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept in the study; run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def _spec(args: argparse.Namespace, extra: list[str] | None = None):
    from .spec import load_spec

    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model={json.dumps(args.model)}")
    return load_spec(args.spec or args.task, overrides + (extra or []))


def _opts(args: argparse.Namespace, **kw: Any):
    from .run import RunOptions

    return RunOptions(storage=getattr(args, "storage", "sqlite:///dtune.db"),
                      tracking_uri=getattr(args, "tracking_uri", None), study_name=getattr(args, "study_name", None),
                      device=args.device, data_dir=args.data_dir, **kw)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from .run import _interrupted, request_interrupt, run
    from .study import front
    from .workers import parse_n_workers, run_workers, stop_with_parent

    extra = [f"{field}={value}" for field, value in (("trials", args.trials), ("validation_size", args.validation_size),
                                                     ("batch_size", args.batch_size), ("sampler", args.sampler),
                                                     ("seed", args.seed)) if value is not None]
    spec = _spec(args, extra)
    if args.heartbeat_interval < 1:
        raise _usage_error("--heartbeat-interval must be at least 1 second")
    n_workers = parse_n_workers(args.n_workers)
    if n_workers is None:
        raise _usage_error(f"--n-workers must be a positive integer or 'auto', not {args.n_workers!r}")
    if args.refresh_every < 1:
        raise _usage_error(f"--refresh-every must be at least 1, not {args.refresh_every}")
    opts = _opts(args, show_progress=not (args.no_progress or args.worker_child), worker=args.worker_index,
                 heartbeat_interval=args.heartbeat_interval, log_trials=args.worker_child,
                 refresh_every=args.refresh_every)
    # SIGTERM (a scheduler preempting, `kill`, the --n-workers parent forwarding) ends a run like Ctrl-C: the
    # running trial is re-queued rather than left running until its heartbeat goes stale.
    _interrupted.clear()
    previous = {sig: signal.signal(sig, request_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    if args.worker_child:
        stop_with_parent()
    try:
        if n_workers > 1:
            code, study = run_workers(spec, opts, args.argv, n_workers, console)
        else:
            code, study = EXIT_OK, run(spec, opts, console)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if study is not None and not args.worker_child:
        print_front(Console(), study.study_name, front(study), study.user_attrs.get("baseline"))
    return code


def _usage_error(message: str) -> Exception:
    from .spec import SpecError

    return SpecError(message)


def cmd_eval(args: argparse.Namespace, console: Console) -> int:
    from decoder import load_model
    from decoder.cli import build_config, knobs_from_args

    from .evaluate import Evaluator
    from .run import load_task

    spec = _spec(args, [f"batch_size={args.batch_size}"] if args.batch_size else None)
    knobs = {**spec.fixed_knobs(), **knobs_from_args(args)} if not args.profile else knobs_from_args(args)
    config = build_config(args.profile, knobs)
    task = load_task(spec, args.data_dir)
    items = task.load(args.split)[: args.limit] if args.limit else task.load(args.split)
    model, tokenizer = load_model(spec.model, device=args.device)
    evaluator = Evaluator(model, tokenizer, task, chat_template=spec.chat_template, batch_size=spec.batch_size)
    from rich.progress import Progress

    with Progress(console=console, disable=args.json, transient=True) as progress:
        bar = progress.add_task(f"{task.name} {args.split}", total=len(items))
        result = evaluator.evaluate(items, config, on_progress=lambda seen, total, c: progress.update(bar, completed=seen))
    info = task.split_info(args.split)
    out = {**result.metrics(), "task": spec.task, "split": args.split, "split_hash": info.content_hash,
           "model": spec.model, "config": config.to_dict()}
    if args.json:
        print(json.dumps(out))
        return EXIT_OK
    lo, hi = result.ci
    Console().print(f"{spec.task} {args.split} (n={result.n}): accuracy {result.accuracy:.1%} "
                    f"[95% CI {lo:.1%}–{hi:.1%}] · {result.tokens_per_s:.1f} tokens/s · NFE {out['nfe']:.1f}/item · "
                    f"{config.mode}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    from .export import load_existing_study
    from .pareto import front_table
    from .study import front, trial_points

    spec = _spec(args)
    study = load_existing_study(spec, _opts(args))
    points, best = trial_points(study), front(study)
    if args.json:
        print(json.dumps({"study": study.study_name, "baseline": study.user_attrs.get("baseline"),
                          "trials": [p.__dict__ for p in points], "front": front_table(best)}, default=str))
        return EXIT_OK
    out = Console()
    table = Table(title=f"{study.study_name}: {len(points)} finished trials")
    for col in ("trial", "state", "ref", "accuracy", "tokens/s", "NFE", "feasible", "params"):
        table.add_column(col)
    for p in sorted(points, key=lambda p: p.number):
        table.add_row(str(p.number), p.state, p.label or "", f"{p.accuracy:.1%}", f"{p.tokens_per_s:.1f}",
                      "" if p.nfe is None else f"{p.nfe:.1f}", "yes" if p.feasible else "no", _params(p.params))
    out.print(table)
    print_front(out, study.study_name, best, study.user_attrs.get("baseline"))
    return EXIT_OK


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from .export import export

    spec = _spec(args)
    report = export(spec, _opts(args), rule=args.pick, max_drop=args.max_drop, out=args.out, force=args.force)
    t = report.test
    Console().print(
        f"exported trial {report.pick.number} ({args.pick}) → [bold]{report.path}[/]\n"
        f"test: {t['pick']['accuracy']:.1%} vs baseline {t['baseline']['accuracy']:.1%} "
        f"(drop {t['accuracy_drop_points']:.1f} pts, allowed {t['max_drop_points']}; McNemar p="
        f"{t['paired_test']['p_value']:.3g}) · {t['pick']['tokens_per_s']:.1f} vs {t['baseline']['tokens_per_s']:.1f}"
        f" tokens/s{'' if report.confirmed else ' · NOT CONFIRMED (forced)'}")
    return EXIT_OK


def cmd_tasks(args: argparse.Namespace, console: Console) -> int:
    from .spec import STUDIES_DIR
    from .tasks import list_tasks

    table = Table(title="tasks")
    table.add_column("task")
    table.add_column("study spec")
    for name in list_tasks():
        spec = STUDIES_DIR / f"{name}.yaml"
        table.add_row(name, str(spec.relative_to(STUDIES_DIR.parent)) if spec.exists() else "-")
    Console().print(table)
    return EXIT_OK


def print_front(out: Console, name: str, front, baseline: dict | None) -> None:
    table = Table(title=f"Pareto front of {name} (accuracy vs tokens/s)")
    for col in ("trial", "ref", "accuracy", "95% CI", "tokens/s", "NFE", "params"):
        table.add_column(col)
    for p in front:
        ci = "" if p.ci_low is None else f"{p.ci_low:.1%}–{p.ci_high:.1%}"
        table.add_row(str(p.number), p.label or "", f"{p.accuracy:.1%}", ci, f"{p.tokens_per_s:.1f}",
                      "" if p.nfe is None else f"{p.nfe:.1f}", _params(p.params))
    out.print(table)
    if baseline:
        out.print(f"baseline ({baseline.get('reference')}, trial {baseline.get('trial')}): "
                  f"accuracy {baseline['accuracy']:.1%}")


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


COMMANDS = {"run": cmd_run, "eval": cmd_eval, "show": cmd_show, "export": cmd_export, "tasks": cmd_tasks}
