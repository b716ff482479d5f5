"""Study + tracking overhead: the share of a trial's wall time spent in Optuna storage calls and MLflow logging,
with SQLite and with PostgreSQL, measured inside a real `tuner.workers.worker.Worker.run()` on the built-in task.

    OMP_NUM_THREADS=1 python -m benchmarks.overhead --quick        # 8 trials per backend (CPU: ~3 min)
    OMP_NUM_THREADS=1 python -m benchmarks.overhead                # 30 trials per backend
    OMP_NUM_THREADS=1 python -m benchmarks.overhead --pg-url postgresql+psycopg://user@host/db

Why: tuning should spend its time decoding. Each category's *exclusive* wall time is attributed by wrapping, on
the main thread only (heartbeats run on their own thread and block nothing):
* evaluation  — `Evaluator.evaluate` (decoding + scoring);
* storage     — every public method of Optuna's RDBStorage and its caching wrapper (including the study lock's
                and the sampler's reads, which go through them);
* MLflow      — `Tracker.log_trial` (one nested run per trial) and `Tracker.refresh_study_artifacts` (Pareto
                plots, CSV/JSON re-rendered every `--refresh-every` trials and at the end), reported apart;
* sampler     — the sampler's own methods minus the storage reads inside them (GP fitting);
* background  — MLflow calls run on the tracking thread (`tuner.tracking.Backlog`) overlap the next trial and
                don't count in the trial's wall time; their time is reported beside it (on a CPU-only machine
                that thread still takes CPU from decoding, on a GPU machine it runs on an otherwise idle core).
* other       — the rest of the trial loop (progress bars, Python).
The loop is `tuner.workers.worker.Worker.work` (model loading and study creation excluded). PostgreSQL: a throw-away server from
`tools/pg_server.py` (or `--pg-url`) holds both the Optuna storage and the MLflow backend store; SQLite uses two
files in a temporary directory. Artifacts go to a local folder in both cases.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from benchmarks.common import Report, command_line, machine_line, md_table, threads_warning
from tuner.app.context import Context, Options
from tuner.study.evaluate import Evaluator
from tuner.study.spec import load_spec
from tuner.tracking import Tracker
from tuner.workers.worker import Worker, WorkerOptions


class Attribution:
    """Exclusive wall time per category: entering a wrapped call pauses the category of the call around it."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[list[Any]] = []  # [category, time the category last (re)started]
        # Inclusive time and count per outermost call of a category (which storage methods cost the most).
        self.calls: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, name: str, category: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*args: Any, **kw: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():
                if threading.current_thread().name != "dtune-tracking":
                    return fn(*args, **kw)
                start = time.perf_counter()  # the tracking thread (tuner.tracking.Backlog): inclusive time
                try:
                    return fn(*args, **kw)
                finally:
                    if category.startswith("mlflow"):
                        self.totals[f"background {category}"] += time.perf_counter() - start
            now = time.perf_counter()
            outermost = not self._stack or self._stack[-1][0] != category
            if self._stack:
                self.totals[self._stack[-1][0]] += now - self._stack[-1][1]
            self._stack.append([category, now])
            try:
                return fn(*args, **kw)
            finally:
                end = time.perf_counter()
                cat, start = self._stack.pop()
                self.totals[cat] += end - start
                if self._stack:
                    self._stack[-1][1] = end
                if outermost:
                    call = self.calls[f"{category}: {name}"]
                    call[0] += end - now
                    call[1] += 1

        original = owner.__dict__[name] if isinstance(owner, type) else fn
        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def wrap_public(self, cls: type, category: str) -> None:
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and callable(member) and not isinstance(member, (staticmethod, classmethod)):
                self.wrap(cls, name, category)

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


def instrument(att: Attribution) -> None:
    att.wrap(Worker, "work", "other")
    att.wrap(Evaluator, "evaluate", "evaluation")
    att.wrap_public(optuna.storages.RDBStorage, "storage")
    att.wrap_public(optuna.storages._cached_storage._CachedStorage, "storage")
    att.wrap(Tracker, "log_trial", "mlflow log_trial")
    att.wrap(Tracker, "refresh_study_artifacts", "mlflow artifacts")
    for sampler in (optuna.samplers.GPSampler, optuna.samplers.RandomSampler):
        for name in ("infer_relative_search_space", "sample_relative", "sample_independent", "before_trial",
                     "after_trial"):
            if name in vars(sampler):
                att.wrap(sampler, name, "sampler")


def measure(backend: str, storage: str, tracking: str, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    spec = load_spec("arith", [f"model={args.model}", f"trials={args.trials}", f"validation_size={args.items}",
                               f"batch_size={args.batch_size}", f"chunk_size={args.items}"])
    ctx = Context(spec, Options(storage=storage, tracking_uri=tracking, study_name=f"overhead-{backend}"))
    opts = WorkerOptions(show_progress=False, worker_index=0, refresh_every=args.refresh_every)
    att = Attribution()
    instrument(att)
    cwd = os.getcwd()
    os.chdir(workdir)  # MLflow's default artifact root is relative: keep it in the temp dir
    try:
        Worker(ctx, opts).run()
    finally:
        os.chdir(cwd)
        att.restore()
    return {**att.totals, "calls": dict(att.calls)}


def postgres(args: argparse.Namespace):
    """(url for Optuna, url for MLflow, server to stop) or (None, reason, None)."""
    if args.pg_url:
        return args.pg_url, args.pg_url, None
    from tools.pg_server import PostgresServer

    try:
        server = PostgresServer.start()
    except Exception as exc:  # PostgresUnavailable, or a start failure
        return None, str(exc).splitlines()[0][:200], None
    return server.create_database("optuna"), server.create_database("mlflow"), server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dtune/tiny-arith")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--items", type=int, default=100, help="validation items per trial (one chunk)")
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--pg-url", default=None, help="SQLAlchemy URL of a PostgreSQL database to use for both stores")
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--refresh-every", type=int, default=WorkerOptions.refresh_every,
                    help="refresh the Pareto artifacts every N trials, as `tuner run --refresh-every` (default: 5)")
    ap.add_argument("--quick", action="store_true", help="8 trials of 32 items")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.trials, args.items, args.batch_size = 8, 32, 16

    report = Report(args.out)
    results: dict[str, dict[str, Any]] = {}
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results["SQLite"] = measure("sqlite", f"sqlite:///{work}/optuna.db", f"sqlite:///{work}/mlflow.db", args,
                                    work)
        if args.no_pg:
            notes.append("PostgreSQL: not measured (--no-pg)")
        else:
            pg_optuna, pg_mlflow, server = postgres(args)
            if pg_optuna is None:
                notes.append(f"PostgreSQL: not measured ({pg_mlflow})")
            else:
                try:
                    results["PostgreSQL"] = measure("pg", pg_optuna, pg_mlflow, args, work)
                finally:
                    if server is not None:
                        server.stop()

    report(f"### Study + tracking overhead — {args.model}, arith, {args.trials} trials of {args.items} items\n")
    report(machine_line())
    report(f"command: `{command_line()}`")
    if (warn := threads_warning()) is not None:
        report(warn)
    report(f"\nexclusive wall time per trial, main thread; the trial loop is `tuner.workers.worker.Worker.work`; artifacts refreshed "
           f"every {args.refresh_every} trials and at the end\n")
    cats = ["evaluation", "storage", "mlflow log_trial", "mlflow artifacts", "sampler", "other"]
    rows = []
    for backend, t in results.items():
        total = sum(t.get(c, 0.0) for c in cats)
        per = {c: t.get(c, 0.0) / args.trials for c in cats}
        overhead = t.get("storage", 0.0) + t.get("mlflow log_trial", 0.0) + t.get("mlflow artifacts", 0.0)
        rows.append([backend, f"{total / args.trials:.2f}",
                     *(f"{per[c] * 1e3:.0f} ({t.get(c, 0.0) / total:.1%})" for c in cats),
                     f"{overhead / total:.1%}",
                     f"{(t.get('storage', 0.0) + t.get('mlflow log_trial', 0.0)) / total:.1%}"])
    report(md_table(["backend", "trial s", *(f"{c} ms (%)" for c in cats), "storage + MLflow",
                     "storage + MLflow without artifact refresh"], rows))
    report("\nMLflow time on the tracking thread, overlapping the next trial (ms per trial)\n")
    report(md_table(["backend", "log_trial", "artifacts"],
                    [[b, f"{t.get('background mlflow log_trial', 0.0) / args.trials * 1e3:.0f}",
                      f"{t.get('background mlflow artifacts', 0.0) / args.trials * 1e3:.0f}"] for b, t in results.items()]))
    report("\nThe storage calls that cost the most (inclusive ms per trial, calls per trial; outermost calls only)\n")
    rows = []
    for backend, t in results.items():
        calls = sorted(((k, v) for k, v in t["calls"].items() if k.startswith("storage: ")), key=lambda kv: -kv[1][0])
        for name, (secs, count) in calls[:6]:
            rows.append([backend, name.removeprefix("storage: "), f"{secs / args.trials * 1e3:.0f}",
                         f"{count / args.trials:.1f}"])
    report(md_table(["backend", "storage method", "ms / trial", "calls / trial"], rows))
    for note in notes:
        report(f"\n{note}")
    report.save()


if __name__ == "__main__":
    main()
