"""Wall time of a fixed trial budget with 1, 2 and 4 workers (`python -m tuner run --n-workers N`).

Each worker count gets a fresh study in a fresh storage — a throw-away PostgreSQL cluster (tools/pg_server.py)
when Debian's server binaries are installed, else a SQLite file — and a SQLite MLflow store, and runs the same
spec (the tiny model at gen length 64) to the same budget. Every worker runs one OpenMP thread (set
OMP_NUM_THREADS to change that), so on a CPU machine N workers want N free cores.

    python -m benchmarks.scaling --quick                       # 8 trials x 16 items, 1/2/4 workers
    python -m benchmarks.scaling --trials 16 --validation-size 32 --workers 1 2 4 8 --json out.json

Reported per worker count: wall time from launch to exit (model loading included: it is what a user waits for),
speed-up over the first count, mean trial time (from the study: how much each trial slowed down as workers
competed), CPU seconds of all worker processes, and the load average at start (other jobs on the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Report, command_line, machine_line, md_table

REPO = Path(__file__).resolve().parents[1]

REFERENCES = ("references=[{name: vanilla, mode: vanilla, steps: 32}, "
              "{name: fast-dllm, mode: streaming, window: null, threshold: 0.9, alpha: 0.0, early_exit: false}, "
              "{name: paper, mode: streaming, window: 32, threshold: 0.9, alpha: 0.3, early_exit: true}]")


def run_once(n: int, storage: str, tmp: Path, args: argparse.Namespace) -> dict:
    import optuna

    name = f"scaling-{n}w-{int(time.time())}"
    sets = ["decode.gen_length=64", "batch_size=16", "chunk_size=8", f"validation_size={args.validation_size}",
            REFERENCES, "search_space.window.choices=[16, 32, null]", "constraint.max_drop=100",
            f"trials={args.trials}", f"sampler={args.sampler}"]
    cmd = [sys.executable, "-m", "tuner", "run", "--task", "arith", "--model", args.model, "--storage", storage,
           "--tracking-uri", f"sqlite:///{tmp}/mlflow-{n}.db", "--study-name", name, "--no-progress",
           "--n-workers", str(n), "--seed", "0"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{n} workers failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    study = optuna.load_study(study_name=name, storage=storage)
    done = [t for t in study.get_trials() if t.datetime_complete and t.state.is_finished()
            and t.state.name in ("COMPLETE", "PRUNED")]
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    return {"workers": n, "trials": len(done), "wall_s": wall, "trial_phase_s": (last - first).total_seconds(),
            "mean_trial_s": sum(durations) / len(durations),
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), "load_at_start": load}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="8 trials on 16 items (the default is 16 on 96)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--trials", type=int)
    p.add_argument("--validation-size", type=int)
    p.add_argument("--model", default=os.environ.get("DTUNE_TEST_MODEL", "dtune/tiny-arith"))
    p.add_argument("--sampler", default="gp", help="the spec's GP by default (fitted under the study lock)")
    p.add_argument("--sqlite", action="store_true", help="use a SQLite file even when PostgreSQL is available")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--out", help="also write the markdown report to this file")
    args = p.parse_args()
    args.trials = args.trials or (8 if args.quick else 16)
    args.validation_size = args.validation_size or (16 if args.quick else 96)

    server = None
    if not args.sqlite:
        from tools.pg_server import PostgresServer, PostgresUnavailable

        try:
            server = PostgresServer.start()
        except PostgresUnavailable as exc:
            print(f"PostgreSQL unavailable ({exc}); using SQLite", file=sys.stderr)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="dtune-scaling-") as tmp:
            for n in args.workers:
                storage = server.create_database(f"scaling_{n}") if server else f"sqlite:///{tmp}/study-{n}.db"
                row = run_once(n, storage, Path(tmp), args)
                rows.append(row)
                print(f"{n} worker(s): {row['wall_s']:.1f} s", file=sys.stderr)
    finally:
        if server:
            server.stop()

    base = rows[0]["wall_s"]
    report = Report(args.out)
    report(f"### Scaling — {args.trials} trials x {args.validation_size} items, {args.model}, gen length 64\n")
    report(machine_line())
    report(f"command: `{command_line()}`\n")
    report(f"{args.sampler} sampler, {'PostgreSQL' if server else 'SQLite'} storage, {os.cpu_count()} CPUs, "
           f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')} per worker\n")
    report(md_table(["workers", "wall time (s)", "speed-up", "trial phase (s)", "mean trial (s)", "worker CPU (s)",
                     "load at start"],
                    [[r["workers"], f"{r['wall_s']:.1f}", f"{base / r['wall_s']:.2f}×", f"{r['trial_phase_s']:.1f}",
                      f"{r['mean_trial_s']:.1f}", f"{r['cpu_s']:.0f}", f"{r['load_at_start']:.1f}"] for r in rows]))
    report.save()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
