"""The command line of `python -m tuner`: every subcommand's options, built without importing anything heavy."""

from __future__ import annotations

import argparse
import os

from ..base.urls import DEFAULT_STORAGE


def _common(p: argparse.ArgumentParser, *, study: bool = True) -> None:
    p.add_argument("--task", required=True, help="task name (its built-in spec, tuner/studies/<task>.yaml) or a spec file path")
    p.add_argument("--spec", help="a study spec YAML to use instead of the built-in one")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any spec field (YAML value, dotted keys), e.g. --set constraint.max_drop=2")
    p.add_argument("--model", help="override the spec's model (checkpoint dir, dtune/tiny-arith, or hub id)")
    p.add_argument("--data-dir", default=os.environ.get("DTUNE_DATA_DIR"),
                   help="local benchmark files laid out like shared/data (default: $DTUNE_DATA_DIR, else the hub)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: CUDA if present)")
    p.add_argument("--compile", action="store_true",
                   help="decode on the fused path (fewer, larger kernels; torch.compile on CUDA); recorded with every "
                        "timing (docs/decoder.md)")
    if study:
        p.add_argument("--storage", default=os.environ.get("OPTUNA_STORAGE", DEFAULT_STORAGE),
                       help="Optuna storage URL: sqlite:///file.db (default) or postgresql+psycopg://…")
        p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                       help="MLflow tracking URI (default: sqlite:///mlflow.db in the current directory)")
        p.add_argument("--study-name", help="default: <task>-<model>-<spec hash>, so re-running resumes")


def accuracy_points(text: str) -> float:
    """An argparse type: a margin in accuracy points (`tuner.verdict.constraint.check_max_drop`)."""
    from ..verdict.constraint import ConstraintError, check_max_drop

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    try:
        return check_max_drop(value, "")
    except ConstraintError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    # The knob table and the argument types only: no torch. Every parse error is one line and exit 2.
    """The parser of every subcommand; imports nothing heavy, so `--help` answers at once."""
    from decoder.cli import OneLineParser, add_knob_arguments, non_negative_int, positive_int

    parser = OneLineParser(prog="python -m tuner", description="Tune diffusion-LM decoding per task.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run or resume a study (Optuna) on the validation split")
    _common(run)
    run.add_argument("--trials", type=positive_int, help="trial budget of the study (finished = complete + pruned)")
    run.add_argument("--validation-size", type=positive_int, help="use the first N validation items")
    run.add_argument("--batch-size", type=positive_int)
    run.add_argument("--sampler", choices=["gp", "tpe", "nsga2", "random"])
    run.add_argument("--seed", type=non_negative_int)
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--n-workers", default="1", metavar="N|auto",
                     help="start N worker processes on this machine (auto: one per CUDA GPU); each takes --device "
                          "cuda:i round-robin when CUDA is present. Workers on other machines just run the same "
                          "command against the same --storage")
    run.add_argument("--worker-index", type=non_negative_int, metavar="I",
                     help="sampler seed offset of this worker (default: the next free index the study hands out)")
    run.add_argument("--heartbeat-interval", type=int, default=10, metavar="S",
                     help="seconds between a running trial's heartbeats; a trial silent for 3 intervals is failed "
                          "and retried by another worker (default: 10)")
    run.add_argument("--refresh-every", type=int, default=5, metavar="N",
                     help="refresh the study's MLflow artifacts (Pareto plots, trials table) every N finished trials "
                          "and at the end (default: 5; 1 = after every trial, which costs ~5%% of a short trial)")
    run.add_argument("--accept-low-power", action="store_true",
                     help="run even when the validation pool or the test split is too small to resolve the spec's "
                          "margin (the check at start says how many items it needs)")
    run.add_argument("--plan", action="store_true",
                     help="print what the study will cost (baseline items still to decode, trials x expected items, "
                          "the test confirmation; seconds from a short probe on this device) and exit")
    run.add_argument("--worker-child", action="store_true", help=argparse.SUPPRESS)  # started by --n-workers

    ev = sub.add_parser("eval", help="evaluate one configuration (a profile or knobs) on a split")
    _common(ev, study=False)
    ev.add_argument("--profile", help="a profile JSON (knobs given as options override it)")
    ev.add_argument("--allow-model-mismatch", action="store_true",
                    help="use --profile even though it was tuned for another model (id or fingerprint)")
    ev.add_argument("--split", choices=["validation", "test"], default="validation")
    ev.add_argument("--limit", type=positive_int, help="first N items of the split")
    ev.add_argument("--batch-size", type=positive_int)
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    add_knob_arguments(ev)

    show = sub.add_parser("show", help="print a study's trials and Pareto front")
    _common(show)
    show.add_argument("--json", action="store_true")

    exp = sub.add_parser("export", help="confirm a Pareto point on the test split and write a profile")
    _common(exp)
    exp.add_argument("--pick", choices=["knee", "fastest"], default="knee")
    exp.add_argument("--max-drop", type=accuracy_points,
                     help="accuracy points below the baseline allowed (default: spec)")
    exp.add_argument("--out", help="profile path (default: profiles/<study>-<time>.json); an existing file is "
                     "never replaced unless it is a dtune profile and --overwrite is given")
    exp.add_argument("--overwrite", action="store_true", help="replace the dtune profile at --out")
    exp.add_argument("--force", action="store_true", help="write the profile even if confirmation fails")
    exp.add_argument("--register", metavar="NAME",
                     help="also add the profile as a new version of MLflow registered model NAME, alias 'candidate' "
                          "(`tuner promote NAME` then moves 'production' to it)")

    pro = sub.add_parser("promote", help="point a registered profile's 'production' alias at a version")
    pro.add_argument("name", help="the registered model (as given to export --register)")
    pro.add_argument("--version", help="the version to promote (default: the one alias --from names)")
    pro.add_argument("--from", dest="from_alias", default="candidate", metavar="ALIAS",
                     help="without --version, promote the version this alias names (default: candidate)")
    pro.add_argument("--alias", default="production", help="the alias to move (default: production)")
    pro.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                     help="MLflow tracking URI (default: sqlite:///mlflow.db in the current directory)")
    pro.add_argument("--force", action="store_true",
                     help="promote a version whose profile failed its confirmation (exported with --force)")

    sub.add_parser("tasks", help="list the tasks and their study specs")
    return parser
