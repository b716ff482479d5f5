"""Speed under load (issue 16): the same small arith study run twice — once as the machine is, once with a
bounded background load on top (benchmarks.burner) — and how well each speed figure survives it.

    OMP_NUM_THREADS=1 python -m benchmarks.noisy_speed      # 12 trials x 150 items, 4 burners at 90%: ~10 min on 2 cores

How, and why this way:
* Same trials in both runs: random sampler, same seed, one racing rung (race.min_items = the validation size), so
  the configurations and the items do not depend on the speeds measured. 150 items by default: the arith spec's
  own first rung, so the overhead is what a study's trials pay (the probe is a fixed cost per trial). Vanilla
  runs 64 steps here (half the spec's 128: still 64 forwards per problem against streaming's 5-10, and it keeps
  the benchmark short).
* Two figures per trial, from the same run: the robust one the study optimises (tuner.study.timing: probe passes against
  the timing reference) and the old single wall-clock figure of the trial's accuracy evaluation
  (`tokens_per_s_wall`).
* A third figure, for what the clock contributes: the same probe-ratio estimator on the passes' wall times
  (tuner.study.timing times passes by the decoding thread's CPU time when one CPU thread decodes, as here), anchored at
  the quiet run's fastest reference pass.
* Rank agreement: Spearman's rho of the trials' speeds, quiet run vs loaded run (distinct configurations only).
* Clearly ordered pairs: one configuration did at most half the forwards per problem (row forwards) of the other
  and attended no more query-key pairs per problem; an inversion is a pair where the cheaper one is reported no
  faster. Counted in each run; the counters are exact, so the pairs are the same in both runs.
* Overhead: the decode time of the timing passes over the rest of the trial's wall time (decoding, scoring,
  baseline ledger), per trial: mean and max, and over the whole study.
* A fresh per-machine record of reference passes (`$DTUNE_SPEED_CACHE`, in a temporary folder): the quiet run
  starts it and the loaded run, a later study on the same machine, takes its anchor from it.
* The "quiet" run is the machine as it is (shared with other jobs, maybe: the load average is printed before each
  run). The burner adds its load on top: by default 4 processes at 90% of every 50 ms, ~3.6 cores of demand on
  top of the study's one thread, which on 2 cores slows the wall clock ~2.5x.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from scipy.stats import spearmanr

from benchmarks import burner
from benchmarks.common import Report, command_line, machine_line, md_table, threads_warning
from decoder import load_model
from tuner.app.context import load_task
from tuner.storage.record import TrialRecord
from tuner.study.evaluate import Evaluator
from tuner.study.lifecycle import create_study
from tuner.study.objective import Objective
from tuner.study.spec import StudySpec, load_spec
from tuner.study.timing import estimate


@dataclass
class Row:
    number: int
    key: str
    label: str
    robust: float
    wall: float
    nfe: float
    pairs: float
    spread: float
    noisy: bool
    load: float
    overhead_s: float
    trial_s: float
    timing: dict
    wall_ratio: float = 0.0  # the probe-ratio estimator on the passes' wall times (filled in main)


def make_spec(args: argparse.Namespace) -> StudySpec:
    return load_spec("arith", [
        f"validation_size={args.items}", f"race.min_items={args.items}", f"chunk_size={args.items}",
        f"batch_size={args.batch_size}", "sampler=random", f"seed={args.seed}", f"trials={args.trials}",
        "references=[{name: vanilla, mode: vanilla, steps: 64}, "
        "{name: fast-dllm, mode: streaming, window: null, threshold: 0.9, alpha: 0.0, early_exit: false}, "
        "{name: paper, mode: streaming, window: 32, threshold: 0.9, alpha: 0.3, early_exit: true}]"])


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_study(spec: StudySpec, evaluator: Evaluator, items: list, folder: Path, name: str) -> list[Row]:
    """One study, trial by trial (each timed from the outside), into rows of the distinct configurations."""
    study, _ = create_study(spec, optuna.storages.RDBStorage(f"sqlite:///{folder}/{name}.db"), name, spec.seed)
    objective = Objective(spec, evaluator, items)
    rows: list[Row] = []
    done: list[optuna.trial.FrozenTrial] = []
    for _ in range(spec.trials):
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=1, catch=(RuntimeError,), callbacks=[lambda _s, t: done.append(t)])
        elapsed = time.perf_counter() - t0
        t = TrialRecord.read(done[-1])
        m = t.metrics
        if t.duplicate_of is not None or not m:
            continue
        rows.append(Row(t.number, t.config_key, t.reference or "", m.tokens_per_s, m.tokens_per_s_wall, m.nfe,
                        m.attended_pairs or 0.0, m.speed_spread or 0.0, bool(m.speed_noisy), m.timing_load or 0.0,
                        m.timing_overhead_s or 0.0, elapsed, dict(t.timing or {})))
        print(f"  {name} trial {t.number} {rows[-1].label or ''}: {m.tokens_per_s:.0f} tok/s robust "
              f"(±{50 * rows[-1].spread:.0f}%{' noisy' if rows[-1].noisy else ''}, load {rows[-1].load:.2f}), "
              f"{m['tokens_per_s_wall']:.0f} wall, NFE {m['nfe']:.1f}, {elapsed:.1f}s", flush=True)
    return rows


def clearly_ordered(rows: list[Row]) -> list[tuple[Row, Row]]:
    """(cheaper, dearer): at most half the forwards per problem and no more attended pairs."""
    out = []
    for a, b in itertools.permutations(rows, 2):
        if a.nfe <= b.nfe / 2 and a.pairs <= b.pairs:
            out.append((a, b))
    return out


def inversions(rows: list[Row], figure: str) -> int:
    return sum(getattr(a, figure) <= getattr(b, figure) for a, b in clearly_ordered(rows))


def overheads(rows: list[Row]) -> tuple[float, float, float]:
    """Per trial (mean, max) and over the study: timing passes / the rest of the trial's time."""
    per = [r.overhead_s / max(r.trial_s - r.overhead_s, 1e-9) for r in rows]
    total = sum(r.overhead_s for r in rows) / max(sum(r.trial_s - r.overhead_s for r in rows), 1e-9)
    return statistics.mean(per), max(per), total


def main() -> None:
    ap = argparse.ArgumentParser(description="speed figures of one study, quiet vs under a bounded load")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--items", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--procs", type=int, default=4, help="burner processes")
    ap.add_argument("--duty", type=float, default=0.9, help="burner duty cycle")
    ap.add_argument("--period", type=float, default=0.05, help="burner period, seconds")
    ap.add_argument("--out", help="also write the markdown here")
    args = ap.parse_args()
    report = Report(args.out)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = make_spec(args)
    model, tok = load_model(spec.model)
    task = load_task(spec, None)
    items = task.load("validation")[: args.items]
    evaluator = Evaluator(model, tok, task, batch_size=spec.batch_size)
    runs: dict[str, list[Row]] = {}
    loads: dict[str, str] = {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dtune-noisy-") as tmp:
        # A machine record of its own: the quiet run starts it, the loaded run (a later study) reads it.
        os.environ["DTUNE_SPEED_CACHE"] = str(Path(tmp) / "speed-anchors.json")
        loads["quiet"] = load_average()
        print(f"quiet run (load average {loads['quiet']})", flush=True)
        runs["quiet"] = run_study(spec, evaluator, items, Path(tmp), "quiet")
        loads["loaded"] = load_average()
        print(f"loaded run: burner {args.procs} x {args.duty:.0%} of {args.period * 1000:.0f} ms "
              f"(load average before {loads['loaded']})", flush=True)
        burners = burner.start(args.procs, args.duty, args.period, seconds=900)
        try:
            runs["loaded"] = run_study(spec, evaluator, items, Path(tmp), "loaded")
        finally:
            burner.stop(burners)
        loads["after"] = load_average()
    elapsed = time.perf_counter() - t_start

    # The same estimator on the wall times of the same passes, anchored at the quiet run's fastest reference pass
    # (what the machine record would give): how much of the stability is the interleaving, how much the clock.
    wall_anchor = min(min(r.timing["ref_walls"]) for r in runs["quiet"])
    for r in runs["quiet"] + runs["loaded"]:
        r.wall_ratio = estimate(r.timing["trial_walls"], r.timing["ref_walls"], r.timing["trial_tokens"],
                                wall_anchor).tokens_per_s
    clock = runs["quiet"][0].timing.get("clock", "wall")
    quiet = {r.key: r for r in runs["quiet"]}
    loaded = {r.key: r for r in runs["loaded"]}
    common = [k for k in quiet if k in loaded]
    report("## Speed under load (issue 16)")
    report()
    report(f"command: `{command_line()}`  ")
    report(machine_line() + "  ")
    report(f"study: arith, {args.trials} trials (random sampler, seed {args.seed}), {args.items} validation items, "
           f"batch {args.batch_size}, one rung; {len(common)} distinct configurations in both runs; "
           f"total {elapsed / 60:.1f} min  ")
    report(f"load: 'quiet' = the machine as shared with other jobs (load average {loads['quiet']} at its start); "
           f"'loaded' = the same plus {args.procs} burner processes at {args.duty:.0%} duty of {args.period * 1000:.0f} ms "
           f"(load average {loads['loaded']} before, {loads['after']} after)")
    warn = threads_warning()
    if warn:
        report(warn)
    report()
    rows = []
    for figure, name in (("robust", f"robust (tuner.study.timing: probe ratios, {clock} clock)"),
                         ("wall_ratio", "probe ratios on the wall clock"), ("wall", "single wall clock (before)")):
        rho = spearmanr([quiet[k].__dict__[figure] for k in common], [loaded[k].__dict__[figure] for k in common])
        inv_q, inv_l = inversions(runs["quiet"], figure), inversions(runs["loaded"], figure)
        drift = statistics.median(abs(loaded[k].__dict__[figure] / quiet[k].__dict__[figure] - 1) for k in common)
        rows.append([name, f"{rho.statistic:.3f}", f"{inv_q} / {len(clearly_ordered(runs['quiet']))}",
                     f"{inv_l} / {len(clearly_ordered(runs['loaded']))}", f"{100 * drift:.0f}%"])
    report(md_table(["speed figure", "Spearman quiet vs loaded", "inversions quiet", "inversions loaded",
                     "median change of a trial's figure"], rows))
    report()
    orows = []
    for run in ("quiet", "loaded"):
        mean, worst, total = overheads(runs[run])
        noisy = sum(r.noisy for r in runs[run])
        orows.append([run, f"{100 * mean:.1f}%", f"{100 * worst:.1f}%", f"{100 * total:.1f}%",
                      f"{statistics.median(r.spread for r in runs[run]) * 50:.1f}%", f"{noisy} / {len(runs[run])}",
                      f"{statistics.median(r.load for r in runs[run]):.2f}"])
    report(md_table(["run", "timing overhead per trial (mean)", "(max)", "over the study",
                     "median ± of the passes", "speed_noisy", "median load vs anchor"], orows))
    report()
    trows = []
    for k in common:
        q, lo = quiet[k], loaded[k]
        trows.append([q.number, q.label, f"{q.nfe:.1f}", f"{q.pairs:.0f}", f"{q.robust:.0f}", f"{lo.robust:.0f}",
                      f"{q.wall_ratio:.0f}", f"{lo.wall_ratio:.0f}", f"{q.wall:.0f}", f"{lo.wall:.0f}"])
    report(md_table(["trial", "ref", "NFE", "attended pairs", "robust quiet", "robust loaded", "wall ratio quiet",
                     "wall ratio loaded", "wall quiet", "wall loaded"], trows))
    anchors = {run: runs[run][0].timing.get("anchor_s") for run in runs}
    report()
    report(f"anchors (the reference's quiet probe time, {clock} clock): quiet run {anchors['quiet']:.4f}s, loaded run "
           f"{anchors['loaded']:.4f}s")
    report.save()


if __name__ == "__main__":
    main()
