"""Tuner efficiency: hypervolume of the Pareto front (accuracy vs tokens/s) reached by our sampler (GP) and by
random search after 10 / 20 / 40 trials, against a dense grid over the same space; and the evaluation time that
racing saves.

    OMP_NUM_THREADS=1 python -m benchmarks.tuner_efficiency --quick    # 4x3x4x2 grid + vanilla, 64 items (CPU: ~10 min)
    OMP_NUM_THREADS=1 python -m benchmarks.tuner_efficiency            # 9x8x4x2 grid, 100 items (CPU: ~1-2 h)

How, and why this way:
* One finite space for everyone. threshold (tau0) and alpha get a `step`, so the GP, random search and the grid
  all draw from the same set of configurations; window and early_exit are the arith spec's own choices, and the
  references (vanilla among them) are evaluated as in a real study.
* Every configuration is evaluated once. The whole grid is decoded first (validation subset, in the study's
  chunks, with per-chunk times); the samplers then run the real tuner objective (`tuner.study.objective.Objective`:
  enqueued references, dedupe, accuracy constraint, racing over chunks) against a replay of those results.
  A trial therefore costs what it would cost live, and all three methods see identical numbers (tokens/s is a
  measurement; re-measuring it per method would add noise that has nothing to do with the sampler).
* Hypervolume: `tuner.verdict.pareto.hypervolume_2d` of the feasible front (complete trials within `max_drop` of the
  vanilla baseline, as the tuner defines its front), reference point = the worst corner of the grid (lowest
  accuracy, lowest tokens/s). The grid's hypervolume is 100%. The unconstrained front is reported beside it.
* Each sampler budget is its own study (the GP's random start-up length depends on the budget), seeds 0, 1, 2.
* Racing: a trial replays the chunks of its rungs until its verdict; saved = the chunks it did not decode, timed
  when the grid was measured (decode + scoring time, warm-up excluded).
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import torch

from benchmarks.common import Report, command_line, machine_line, md_table, threads_warning
from decoder import DecodeConfig, load_model
from tuner.app.context import load_task
from tuner.storage.database import open_storage
from tuner.storage.record import TrialRecord
from tuner.study.evaluate import EvalResult, Evaluator
from tuner.study.lifecycle import create_study
from tuner.study.objective import Objective
from tuner.study.points import trial_points
from tuner.study.space import config_key
from tuner.study.spec import StudySpec, load_spec
from tuner.verdict.pareto import TrialPoint, hypervolume_2d, pareto_front

BUDGETS = (10, 20, 40)
SEEDS = (0, 1, 2)


def stepped(low: float, high: float, step: float) -> list[float]:
    return [round(low + i * step, 6) for i in range(round((high - low) / step) + 1)]


def make_spec(args: argparse.Namespace) -> StudySpec:
    """The arith spec with a finite space: stepped threshold and alpha, the spec's window/early_exit choices."""
    t_lo, t_hi, t_step = args.threshold
    a_lo, a_hi, a_step = args.alpha
    return load_spec("arith", [
        f"model={args.model}", f"validation_size={args.items}", f"chunk_size={args.chunk}",
        f"race.min_items={args.chunk}", "race.growth=2",
        f"batch_size={args.batch_size}", f"constraint.max_drop={args.max_drop}",
        f"search_space.threshold={{low: {t_lo}, high: {t_hi}, step: {t_step}}}",
        f"search_space.alpha={{low: {a_lo}, high: {a_hi}, step: {a_step}}}",
    ])


def grid_configs(spec: StudySpec) -> list[DecodeConfig]:
    """Every distinct configuration of the space (the grid = the 100% mark), the baseline reference first.

    The references are evaluated as in a real study (vanilla among them, outside the searched space), then every
    streaming combination of the space.
    """
    axes = []
    for k in spec.search_space:
        axes.append([(k.name, v) for v in (k.choices if k.is_categorical else stepped(k.low, k.high, k.step))])
    out = {}
    for cfg in [spec.reference_config(r) for r in spec.references]:
        out[config_key(cfg)] = cfg
    for combo in itertools.product(*axes):
        cfg = spec.config_for(dict(combo))
        out.setdefault(config_key(cfg), cfg)
    baseline = spec.reference_config(spec.reference(spec.constraint.baseline))
    return [baseline, *(c for k, c in out.items() if k != config_key(baseline))]


def merge(chunks: list[EvalResult], total: int = 0) -> EvalResult:
    return EvalResult.concat(chunks)


def chunk_cost(c: EvalResult) -> float:
    return c.counters.wall_time_s + c.scoring_time_s


class ReplayEvaluator:
    """Stands in for `Evaluator` inside the tuner's Objective: replays the grid's per-chunk results for exactly
    the items asked (racing asks rung by rung), and books the time spent vs a full evaluation of the subset."""

    def __init__(self, table: dict[str, list[EvalResult]]):
        self.table = table
        self.spent = self.full = 0.0

    def evaluate(self, items, config: DecodeConfig, *, chunk_size=None, warmup=True, on_progress=None) -> EvalResult:
        chunks = self.table[config_key(config)]
        wanted = {it.id for it in items}
        used = [c for c in chunks if set(c.item_ids) & wanted]
        self.spent += sum(chunk_cost(c) for c in used)
        self.full += sum(chunk_cost(c) for c in chunks) if items and items[0].id == chunks[0].item_ids[0] else 0.0
        return merge(used)


def measure_grid(spec: StudySpec, evaluator: Evaluator, items: list, configs: list[DecodeConfig]):
    table: dict[str, list[EvalResult]] = {}
    t0 = time.perf_counter()
    for i, cfg in enumerate(configs):
        parts = [items[s : s + spec.chunk_size] for s in range(0, len(items), spec.chunk_size)]
        table[config_key(cfg)] = [evaluator.evaluate(p, cfg, warmup=(j == 0)) for j, p in enumerate(parts)]
        if i % 10 == 0:
            print(f"  grid {i + 1}/{len(configs)} ({time.perf_counter() - t0:.0f}s)", flush=True)
    return table


def points_of(table: dict[str, list[EvalResult]], configs: list[DecodeConfig], bar: float) -> list[TrialPoint]:
    out = []
    for i, cfg in enumerate(configs):
        r = merge(table[config_key(cfg)])
        out.append(TrialPoint(i, r.accuracy, r.tokens_per_s, feasible=r.accuracy >= bar - 1e-12))
    return out


def hv(points: list[TrialPoint], ref: tuple[float, float], constrained: bool) -> float:
    if not constrained:
        points = [replace(p, feasible=True) for p in points]
    return hypervolume_2d(pareto_front(points), ref)


@dataclass
class Run:
    sampler: str
    budget: int
    seed: int
    hv: float
    hv_all: float
    evaluations: int
    pruned: int
    spent_s: float
    full_s: float
    sampler_s: float
    evaluated: frozenset[str]  # keys of the configurations the study decoded (not the copied repeats)


def run_sampler(spec: StudySpec, sampler: str, budget: int, seed: int, table, items, ref, workdir: str) -> Run:
    """One study of `budget` trials through the tuner's own create_study/Objective (SQLite in a temp dir)."""
    spec = replace(spec, sampler=sampler, trials=budget, seed=seed)
    storage = open_storage(f"sqlite:///{workdir}/{sampler}-{budget}-{seed}.db")
    created = create_study(spec, storage, f"{sampler}-{budget}-{seed}", seed)
    study = created[0] if isinstance(created, tuple) else created  # (study, worker) in the multi-worker API
    replay = ReplayEvaluator(table)
    t0 = time.perf_counter()
    study.optimize(Objective(spec, replay, items), n_trials=budget, catch=(RuntimeError,), gc_after_trial=False)
    elapsed = time.perf_counter() - t0
    points = trial_points(study, spec.constraint)
    records = [TrialRecord.read(t) for t in study.trials]
    evaluated = [t for t in records if t.duplicate_of is None and t.config_key is not None]
    keys = frozenset(t.config_key for t in evaluated)
    return Run(sampler, budget, seed, hv(points, ref, True), hv(points, ref, False), len(evaluated),
               sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
               replay.spent, replay.full, elapsed, keys)


def describe(cfg: DecodeConfig) -> str:
    if cfg.mode != "streaming":
        return f"{cfg.mode} (steps {cfg.steps})" if cfg.mode == "vanilla" else f"{cfg.mode} (tau {cfg.threshold:g})"
    return (f"w {cfg.window if cfg.window is not None else 'full'}, tau0 {cfg.threshold:g}, alpha {cfg.alpha:g}, "
            f"exit {'on' if cfg.early_exit else 'off'}")


def mean_sd(values: list[float], fmt: str = "{:.1%}") -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(sd)} (min {fmt.format(min(values))})"


def share(hvs: list[float], grid: float) -> str:
    """Hypervolumes as shares of the grid's; a grid front of one point has no area to share."""
    return "n/a (grid HV 0)" if grid <= 0 else mean_sd([h / grid for h in hvs])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dtune/tiny-arith")
    ap.add_argument("--items", type=int, default=100, help="validation items per evaluation")
    ap.add_argument("--chunk", type=int, default=25, help="evaluation chunk and first racing rung (the spec's chunk_size, race.min_items)")
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--threshold", type=float, nargs=3, default=[0.59, 0.99, 0.05], metavar=("LOW", "HIGH", "STEP"))
    ap.add_argument("--alpha", type=float, nargs=3, default=[0.0, 0.7, 0.1], metavar=("LOW", "HIGH", "STEP"))
    ap.add_argument("--max-drop", type=float, default=1.0,
                    help="accuracy points a feasible configuration may lose (the spec's constraint.max_drop)")
    ap.add_argument("--samplers", nargs="+", default=["gp", "random"])
    ap.add_argument("--quick", action="store_true", help="threshold 0.69..0.99 step 0.1, alpha 0/0.35/0.7, 64 items in chunks of 16")
    ap.add_argument("--grid-cache", default=None,
                    help="pickle of the grid's measurements: reused when model, items and space match")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.items, args.chunk, args.batch_size = 64, 16, 16  # 4 chunks: room for early stopping
        # Up to the spec's 0.99: on a model as accurate as vanilla only near-1 thresholds keep its accuracy.
        args.threshold, args.alpha = [0.69, 0.99, 0.1], [0.0, 0.7, 0.35]

    report = Report(args.out)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.manual_seed(0)
    spec = make_spec(args)
    task = load_task(spec, None)
    items = task.load("validation")[: spec.validation_size]
    model, tokenizer = load_model(spec.model, device="cpu")
    evaluator = Evaluator(model, tokenizer, task, batch_size=spec.batch_size)
    configs = grid_configs(spec)

    t0 = time.perf_counter()
    cache_id = (spec.model, len(items), spec.chunk_size, spec.batch_size, [config_key(c) for c in configs])
    saved = pickle.loads(Path(args.grid_cache).read_bytes()) if args.grid_cache and Path(args.grid_cache).exists() else None
    if saved is not None and saved[0] == cache_id:
        table, grid_s = saved[1], saved[2]
        print(f"grid results reused from {args.grid_cache}")
    else:
        table = measure_grid(spec, evaluator, items, configs)
        grid_s = time.perf_counter() - t0
        if args.grid_cache:
            Path(args.grid_cache).write_bytes(pickle.dumps((cache_id, table, grid_s)))
    base = merge(table[config_key(configs[0])]).accuracy
    bar = base - spec.constraint.max_drop / 100
    grid_points = points_of(table, configs, bar)
    ref = (min(p.accuracy for p in grid_points), min(p.tokens_per_s for p in grid_points))
    grid_hv, grid_hv_all = hv(grid_points, ref, True), hv(grid_points, ref, False)
    grid_full = sum(chunk_cost(c) for cs in table.values() for c in cs)

    with tempfile.TemporaryDirectory() as workdir:
        runs = [run_sampler(spec, s, b, seed, table, items, ref, workdir)
                for s in args.samplers for b in BUDGETS for seed in SEEDS]

    report(f"### Tuner efficiency — {spec.model}, arith validation, {len(items)} items, chunk {spec.chunk_size}, "
           f"max_drop {spec.constraint.max_drop:g} points\n")
    report(machine_line())
    report(f"command: `{command_line()}`")
    if (warn := threads_warning()) is not None:
        report(warn)
    space = ", ".join(f"{k.name} {list(k.choices)}" if k.is_categorical else
                      f"{k.name} {k.low:g}..{k.high:g} step {k.step:g}" for k in spec.search_space)
    report(f"\nspace: {space} + vanilla = {len(configs)} configurations (grid measured in {grid_s:.0f}s); "
           f"vanilla accuracy {base:.1%}, feasible = accuracy >= {bar:.1%}; "
           f"{sum(p.feasible for p in grid_points)} feasible grid points; HV reference point (worst corner) = "
           f"accuracy {ref[0]:.1%}, {ref[1]:.1f} tokens/s; grid HV = {grid_hv:.3f} (feasible front), "
           f"{grid_hv_all:.3f} (all points). Seeds {list(SEEDS)}; mean ± sd (min) over seeds.\n")
    rows = [["grid (all)", len(configs), len(configs), "100.0%", "100.0%", "0", "-"]]
    for s in args.samplers:
        for b in BUDGETS:
            rs = [r for r in runs if r.sampler == s and r.budget == b]
            rows.append([s, b, f"{statistics.mean(r.evaluations for r in rs):.1f}",
                         share([r.hv for r in rs], grid_hv), share([r.hv_all for r in rs], grid_hv_all),
                         f"{statistics.mean(r.pruned for r in rs):.1f}",
                         f"{statistics.mean(r.sampler_s for r in rs):.1f}"])
    report(md_table(["method", "trials", "evaluations", "HV % of grid (feasible front)", "HV % of grid (all points)",
                     "pruned trials", "sampler wall s"], rows))

    report("\nEarly stopping: evaluation time of the trials run, with the stop rule vs every trial evaluated in "
           "full (decode + scoring, warm-up excluded)\n")
    es_rows = []
    for s in args.samplers:
        for b in BUDGETS:
            rs = [r for r in runs if r.sampler == s and r.budget == b]
            es_rows.append([s, b, f"{statistics.mean(r.spent_s for r in rs):.1f}",
                            f"{statistics.mean(r.full_s for r in rs):.1f}",
                            mean_sd([1 - r.spent_s / r.full_s for r in rs])])
    es_rows.append(["grid (all, no stopping)", len(configs), f"{grid_full:.1f}", f"{grid_full:.1f}", "0"])
    report(md_table(["method", "trials", "eval s (early stop)", "eval s (full)", "time saved"], es_rows))

    report(f"\nThe grid's feasible front, and in how many of the {len(SEEDS)} studies of each budget a method "
           "evaluated that configuration\n")
    front_rows = []
    for p in sorted(pareto_front(grid_points), key=lambda p: p.tokens_per_s):
        cfg = configs[p.number]
        found = [sum(config_key(cfg) in r.evaluated for r in runs if r.sampler == s and r.budget == b)
                 for s in args.samplers for b in BUDGETS]
        front_rows.append([f"{p.accuracy:.1%}", f"{p.tokens_per_s:.0f}", describe(cfg), *found])
    report(md_table(["accuracy", "tokens/s", "configuration", *(f"{s} {b}" for s in args.samplers for b in BUDGETS)],
                    front_rows, align="rrl" + "r" * len(args.samplers) * len(BUDGETS)))
    report.save()


if __name__ == "__main__":
    main()
