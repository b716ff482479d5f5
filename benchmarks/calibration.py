"""Calibration of the tuner's verdicts: do exported profiles keep their promise on data no study saw?

    OMP_NUM_THREADS=1 python -m benchmarks.calibration measure --grid GRID [--shard 0/2] [--items 0:3000]  # hours
    OMP_NUM_THREADS=1 python -m benchmarks.calibration time --grid GRID                    # robust speeds (minutes)
    OMP_NUM_THREADS=1 python -m benchmarks.calibration summary --grid GRID                 # the grid's own table
    OMP_NUM_THREADS=1 python -m benchmarks.calibration replay --grid GRID --studies 100    # every policy (minutes)
    OMP_NUM_THREADS=1 python -m benchmarks.calibration synth --grid GRID --pool 1500      # a synthetic grid (tests)

How, and why this way:
* **A measured grid.** Every configuration of a dense grid over the arith search space (window × tau0 × alpha,
  early exit on) plus vanilla and Fast-dLLM is decoded on the same pool of 6,000 arith validation-partition
  problems (a seed of its own), per-item outcomes kept (`measure`, resumable, one JSON-lines file per config,
  shardable over processes). Speeds come from a separate timing pass (`time`): each configuration on a fixed probe
  batch, interleaved with a yardstick configuration, so load on the machine can't reorder them. Nothing is
  simulated: a replayed study reads measured outcomes and measured speeds.
* **Replayed studies.** Each of K studies draws its own split of the pool with its own seed: a validation pool,
  a test split and the rest as fresh problems (≥ 3,000) that neither the study nor its export sees. The study
  runs the real tuner — `tuner.study.lifecycle.create_study` (references, GP sampler), `tuner.study.objective.Objective` (racing,
  paired bounds, the baseline ledger), then `tuner.verdict.selection` (the pick by bound, the declared confirmation rule)
  — with a replay evaluator in place of the decoder. The search space is the grid's (categorical knobs).
* **Today's policy, side by side.** The tuner as it was before racing, re-implemented here in a few lines: a
  fixed validation prefix (200 items, the old spec's size), chunked evaluation stopped by a one-sided Wilson
  bound, feasibility and the pick by point estimates, confirmation when the point estimate of the test drop is
  within the margin. Same margin, same test items, same sampler, same seeds.
* **Confirmation in stages, a third row.** The new policy's pick, confirmed again on the same test items by the
  group-sequential design (`tuner.verdict.sequential`: `--looks`, `--spending`, non-binding futility unless
  `--no-futility`), which stops at the first look that decides; the table reports the test items it decoded per
  export. `--finish` races the front's fast undecided points to a verdict before the pick
  (`tuner.verdict.finishing`, within `--finish-budget` validation items), in both rows of the new policy.
* **Truth.** An exported profile's true drop is its paired drop against vanilla on the study's fresh problems;
  it violates the margin when that exceeds it. The oracle is the fastest grid configuration whose true drop on
  the same fresh problems is within the margin; the exported speed-up is the pick's tokens/s over the oracle's
  (both over vanilla's, so the ratio of speeds).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import hashlib
import itertools
import json
import multiprocessing
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import optuna

from benchmarks.common import Report, command_line, machine_line, md_table, threads_warning
from decoder import Counters, DecodeConfig, load_model, read_profile
from tuner.storage.record import TrialRecord, TrialWriter, answer_digest, reference_of
from tuner.storage.shared_ledger import study_ledger
from tuner.study.evaluate import EvalResult, Evaluator
from tuner.study.lifecycle import create_study
from tuner.study.objective import Objective
from tuner.study.points import trial_points
from tuner.study.space import config_key
from tuner.study.spec import StudySpec, load_spec
from tuner.tasks import Item
from tuner.tasks.arith import ArithTask
from tuner.tasks.base import NO_ANSWER
from tuner.verdict.constraint import Evidence
from tuner.verdict.finishing import finish
from tuner.verdict.pareto import TrialPoint, pareto_front, pick_fastest, pick_knee
from tuner.verdict.racing import rungs
from tuner.verdict.selection import PickError, confirm, pick
from tuner.verdict.sequential import DEFAULT_LOOKS, Design, confirm_in_stages
from tuner.verdict.stats import wilson_interval, z_one_sided

GEN, BLOCK = 128, 32
WINDOWS = (16, 32, 64, None)
THRESHOLDS = (0.75, 0.85, 0.9, 0.95, 0.97, 0.99)
ALPHAS = (0.0, 0.35, 0.7)
POOL_SEED, POOL_SIZE = 9001, 6000


def grid() -> list[DecodeConfig]:
    """Vanilla, Fast-dLLM, then every streaming point of the grid (early exit on)."""
    out = [DecodeConfig(mode="vanilla", gen_length=GEN, block_size=BLOCK, steps=GEN),
           DecodeConfig(mode="streaming", gen_length=GEN, block_size=BLOCK, window=None, threshold=0.9, alpha=0.0,
                        early_exit=False)]
    for w, t, a in itertools.product(WINDOWS, THRESHOLDS, ALPHAS):
        out.append(DecodeConfig(mode="streaming", gen_length=GEN, block_size=BLOCK, window=w, threshold=t, alpha=a,
                                early_exit=True))
    return out


def file_key(cfg: DecodeConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------ measure
def measure(args: argparse.Namespace) -> None:
    shard, shards = map(int, args.shard.split("/"))
    out = Path(args.grid)
    out.mkdir(parents=True, exist_ok=True)
    task = ArithTask(seed=POOL_SEED, validation_size=args.pool, test_size=1)
    items = task.load("validation")
    model, tok = load_model("dtune/tiny-arith", device="cpu")
    evaluator = Evaluator(model, tok, task, batch_size=args.batch_size)
    only = {int(i) for i in args.only.split(",")} if args.only else None
    first, stop = map(int, args.items.split(":")) if args.items else (0, args.pool)
    for idx, cfg in enumerate(grid()):
        if idx % shards != shard or (only is not None and idx not in only):
            continue
        # A range that doesn't start at 0 goes to a part file of its own, so two processes can share one config
        # (vanilla costs ~50x a streaming config); `load_grid` joins the parts by their chunks' starts.
        f = out / (f"{idx:03d}-{file_key(cfg)}" + (f"@{first}" if first else "") + ".jsonl")
        done = sum(json.loads(line)["n"] for line in f.read_text().splitlines()[1:]) if f.exists() else 0
        if done == 0:
            f.write_text(json.dumps({"config": cfg.to_dict(), "seed": POOL_SEED, "n": 0}) + "\n")
        for start in range(first + done, stop, args.chunk):
            r = evaluator.evaluate(items[start : min(stop, start + args.chunk)], cfg, warmup=start == first + done)
            with f.open("a") as fh:
                fh.write(json.dumps({"n": r.n, "start": start, "outcomes": "".join("1" if o else "0" for o in r.outcomes),
                                     "counted_tokens": r.counted_tokens, "counters": r.counters.to_dict(),
                                     "answer_digests": r.answers}) + "\n")
            print(f"{idx} {file_key(cfg)} {start + r.n}/{stop} acc={r.accuracy:.3f}", flush=True)


# The full-size run's grid (BENCHMARKS.md section 7, 6,000 problems): (window, tau0, alpha) -> drop vs vanilla
# (points), discordant share (%), tokens/s; Fast-dLLM (window full, tau0 0.9, alpha 0, no early exit) last.
MEASURED = {(16, 0.75, 0.35): (6.88, 9.5, 2099), (16, 0.75, 0.0): (6.60, 8.9, 2062), (16, 0.97, 0.35): (3.13, 5.3, 1782),
            (16, 0.9, 0.35): (4.40, 6.6, 1779), (32, 0.75, 0.35): (6.82, 9.0, 1682), (32, 0.75, 0.0): (6.60, 8.6, 1668),
            (16, 0.99, 0.35): (3.80, 6.0, 1621), (16, 0.9, 0.0): (4.47, 6.6, 1543), (32, 0.9, 0.35): (4.73, 6.6, 1468),
            (32, 0.9, 0.0): (4.90, 6.8, 1351), (32, 0.97, 0.35): (3.23, 5.2, 1306), (16, 0.97, 0.0): (4.03, 6.1, 1247),
            (32, 0.99, 0.35): (3.97, 5.8, 1229), (16, 0.99, 0.0): (3.50, 5.5, 1123), (32, 0.97, 0.0): (4.20, 6.1, 967),
            (32, 0.99, 0.0): (3.68, 5.5, 915), "fast": (4.22, 5.9, 576)}
VANILLA_ACCURACY, VANILLA_SPEED = 0.965, 32.0


def synth(args: argparse.Namespace) -> None:
    """A synthetic grid in `measure`'s format, for testing the replay without hours of decoding: vanilla right on
    a 96.5% of the pool, each measured configuration of `MEASURED` losing and winning items at random so that its
    expected drop and discordant share against vanilla are the full-size run's, its speed the timing pass's.
    Configurations are independent given vanilla (the measured ones are not); nothing here is a measurement."""
    out = Path(args.grid)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    vanilla = [rng.random() < VANILLA_ACCURACY for _ in range(args.pool)]
    acc = sum(vanilla) / args.pool
    speeds = {}
    for idx, cfg in enumerate(grid()):
        where = "fast" if idx == 1 else (cfg.window, cfg.threshold, cfg.alpha)
        if idx == 0:
            outcomes, tps = vanilla, VANILLA_SPEED
        elif where in MEASURED:
            drop, disc, tps = MEASURED[where]
            lose, win = (disc + drop) / 200 / acc, (disc - drop) / 200 / (1 - acc)
            outcomes = [(v and rng.random() >= lose) or (not v and rng.random() < win) for v in vanilla]
        else:
            continue
        tokens = 40 * args.pool
        counters = Counters(nfe=args.pool, row_forwards=args.pool, wall_time_s=tokens / tps).to_dict()
        # Answers: the right one, or a wrong one (vanilla's own where both are wrong, half the time).
        answers = [f"r{i}" if o else (f"w{i}" if not vanilla[i] and (idx == 0 or rng.random() < 0.5)
                                      else f"w{i}-{idx}") for i, o in enumerate(outcomes)]
        (out / f"{idx:03d}-{file_key(cfg)}.jsonl").write_text(
            json.dumps({"config": cfg.to_dict(), "seed": args.seed, "n": 0, "synthetic": True}) + "\n"
            + json.dumps({"n": args.pool, "start": 0, "outcomes": "".join("1" if o else "0" for o in outcomes),
                          "counted_tokens": tokens, "counters": counters, "answers": answers}) + "\n")
        speeds[config_key(cfg)] = tps
    (out / "speeds.json").write_text(json.dumps(speeds, indent=1))
    print(f"wrote a synthetic grid of {len(speeds)} configurations x {args.pool} problems to {out}")


@dataclass
class Grid:
    configs: dict[str, DecodeConfig]  # config_key -> config
    outcomes: dict[str, str]  # config_key -> "0101..." over the pool
    speed: dict[str, float]  # config_key -> tokens/s
    counted: dict[str, float]  # config_key -> answer tokens per item
    vanilla: str
    fast: str
    pool: int  # problems every kept configuration has outcomes for (indices 0 .. pool-1)
    answers: dict[str, list[str]] = field(default_factory=dict)  # config_key -> answer digests (grids measured with them)
    metric: str = "accuracy"  # what the replayed constraint, the truth and the oracle read (`replay --metric`)

    def evidence(self, key: str, ids: Sequence[int]) -> Evidence:
        """What configuration `key` said on pool problems `ids`: outcomes, and answer digests where measured."""
        answers = self.answers.get(key)
        return Evidence(tuple(self.outcomes[key][i] == "1" for i in ids),
                        tuple(answers[i] for i in ids) if answers else ())


def load_grid(folder: str, pool: int | None = None) -> Grid:
    """The measured grid, cut to the first ``pool`` problems (default: as many as vanilla has); configurations
    measured on fewer are left out."""
    configs, chunks = {}, {}
    for f in sorted(Path(folder).glob("*.jsonl")):  # a config's main file and any part files (`measure --items`)
        lines = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        cfg = DecodeConfig.from_dict(lines[0]["config"])
        key = config_key(cfg)
        configs[key] = cfg
        chunks.setdefault(key, []).extend(lines[1:])
    outcomes, speed, counted, answers = {}, {}, {}, {}
    for key, cs in chunks.items():
        cs.sort(key=lambda c: c["start"])
        joined, said = "", []
        for c in cs:  # the contiguous prefix from problem 0: a gap (a part not yet measured) ends it
            if c["start"] != len(joined):
                break
            joined += c["outcomes"]
            said += c.get("answer_digests") or [answer_digest(NO_ANSWER if a is None else str(a))
                                                for a in c.get("answers") or []]
        outcomes[key] = joined
        if len(said) == len(joined):  # a grid measured with the extracted answers (agreement replays)
            answers[key] = said
        tokens = sum(c["counted_tokens"] for c in cs)
        wall = sum(c["counters"]["wall_time_s"] for c in cs)
        speed[key], counted[key] = tokens / wall, tokens / max(1, sum(c["n"] for c in cs))
    timed = Path(folder) / "speeds.json"
    if timed.exists():  # the robust timing pass replaces the measurement run's wall clock
        speed.update(json.loads(timed.read_text()))
    keys = {config_key(c): c for c in grid()[:2]}
    vanilla, fast = list(keys)
    if vanilla not in outcomes or fast not in outcomes:
        raise SystemExit("the grid lacks vanilla or Fast-dLLM; run `measure`")
    pool = min(pool or POOL_SIZE, len(outcomes[vanilla]))
    full = [k for k, o in outcomes.items() if len(o) >= pool]
    if fast not in full:
        raise SystemExit(f"Fast-dLLM is measured on fewer than the pool's {pool} problems; run `measure`")
    return Grid({k: configs[k] for k in full}, {k: outcomes[k][:pool] for k in full}, {k: speed[k] for k in full},
                {k: counted[k] for k in full}, vanilla, fast, pool,
                {k: answers[k][:pool] for k in full if k in answers})


# ------------------------------------------------------------------------------------------------- time
def time_grid(args: argparse.Namespace) -> None:
    """Speed of every grid configuration on one probe batch, each pass timed right after a pass of the yardstick
    (Fast-dLLM) so that both see the same load; speed = tokens / (median time ratio × the yardstick's fastest
    pass). Vanilla gets fewer rounds (its pass is ~25x longer). Passes are timed by this thread's CPU time, as
    `tuner.study.timing` does with one decoding thread: other processes taking turns on the cores don't add to it.
    `--profile` and `--config` add configurations to the pass (a real study's pick against the grid's oracle).
    """
    task = ArithTask(seed=POOL_SEED, validation_size=args.probe, test_size=1)
    probe = task.load("validation")
    model, tok = load_model("dtune/tiny-arith", device="cpu")
    evaluator = Evaluator(model, tok, task, batch_size=args.probe)
    configs = grid()
    yardstick = configs[1]
    if args.only:  # the yardstick is timed with every pass anyway; keep vanilla and the yardstick in the table
        only = {0, 1} | {int(i) for i in args.only.split(",")}
        configs = [c for i, c in enumerate(configs) if i in only]
    configs += [read_profile(path).decode for path in args.profile or []]
    configs += [DecodeConfig.from_dict(json.loads(knobs)) for knobs in args.config or []]
    ratios: dict[str, list[float]] = {config_key(c): [] for c in configs}
    tokens: dict[str, int] = {}
    yard_times: list[float] = []
    for r in range(args.rounds):
        order = configs[:] if r < max(1, args.rounds // 3) else configs[1:]
        random.Random(r).shuffle(order)
        for cfg in order:
            t0 = time.thread_time()
            evaluator.evaluate(probe, yardstick, warmup=False)
            t1 = time.thread_time()
            c = evaluator.evaluate(probe, cfg, warmup=False)
            t2 = time.thread_time()
            yard_times.append(t1 - t0)
            ratios[config_key(cfg)].append((t2 - t1) / (t1 - t0))
            tokens[config_key(cfg)] = c.counted_tokens
        print(f"round {r + 1}/{args.rounds}", flush=True)
    quiet = min(yard_times)
    speeds = {k: tokens[k] / (statistics.median(v) * quiet) for k, v in ratios.items() if v}
    (Path(args.grid) / "speeds.json").write_text(json.dumps(speeds, indent=1))
    print(f"wrote {len(speeds)} speeds; yardstick fastest pass {quiet:.3f}s, median {statistics.median(yard_times):.3f}s")


# ----------------------------------------------------------------------------------------------- replay
class ReplayEvaluator:
    """Stands in for `tuner.study.evaluate.Evaluator`: measured outcomes of the grid for the items asked (item ids are
    pool indices), and decode time from the measured speed."""

    def __init__(self, g: Grid) -> None:
        self.g = g
        self.decoded: dict[str, int] = {}

    def evaluate(self, items, config, *, chunk_size=None, warmup=True, on_progress=None) -> EvalResult:
        key = config_key(config)
        idx = [int(it.id) for it in items]
        said = self.g.evidence(key, idx)
        outcomes = list(said.outcomes)
        self.decoded[key] = self.decoded.get(key, 0) + len(idx)
        tokens = int(round(self.g.counted[key] * len(idx)))
        counters = Counters(nfe=len(idx), row_forwards=len(idx), wall_time_s=tokens / self.g.speed[key])
        return EvalResult(n=len(idx), correct=sum(outcomes), total_items=len(idx), counted_tokens=tokens,
                          counters=counters, scoring_time_s=0.0, outcomes=outcomes, item_ids=[it.id for it in items],
                          answers=list(said.answers))


def replay_spec(args: argparse.Namespace) -> StudySpec:
    """The arith spec over the grid's space (categorical knobs, early exit on), its paper reference moved onto
    the grid; Fast-dLLM (early exit off, outside that space) is not a reference here."""
    windows = [None if w == "null" else int(w) for w in args.windows.split(",")] if args.windows else list(WINDOWS)
    thresholds = [float(t) for t in args.thresholds.split(",")] if args.thresholds else list(THRESHOLDS)
    alphas = [float(a) for a in args.alphas.split(",")] if args.alphas else list(ALPHAS)
    spec = load_spec("arith", [
        f"search_space.window.choices={windows}".replace("None", "null"),
        f"search_space.threshold.choices={thresholds}", f"search_space.alpha.choices={alphas}",
        "search_space.early_exit.choices=[true]", f"trials={args.trials}",
        "references=[{name: vanilla, mode: vanilla, steps: 128}, {name: paper, mode: streaming, window: 32, "
        "threshold: 0.9, alpha: 0.35, early_exit: true}]",
        *(f"{k}={v}" for k, v in (("constraint.max_drop", args.max_drop), ("race.min_items", args.min_items))
          if v is not None), f"constraint.metric={args.metric}"])
    return spec


def space_keys(spec: StudySpec) -> set[str]:
    """The configurations a replayed study can reach: every point of its (categorical) space, and vanilla."""
    dims = [[(k.name, v) for v in k.choices] for k in spec.search_space]
    keys = {config_key(spec.config_for(dict(combo))) for combo in itertools.product(*dims)}
    return keys | {config_key(spec.reference_config(spec.reference("vanilla")))}


@dataclass
class Split:
    validation: list[Item]
    test: list[Item]
    fresh: list[int]


def draw(seed: int, n_val: int, n_test: int, pool: int) -> Split:
    order = list(range(pool))
    random.Random(seed).shuffle(order)
    val, test, fresh = order[:n_val], order[n_val : n_val + n_test], order[n_val + n_test :]
    return Split([Item(str(i), {}) for i in val], [Item(str(i), {}) for i in test], fresh)


def true_drop(g: Grid, key: str, items: list[int]) -> float:
    """The constrained quantity on `items` (fresh problems): the accuracy drop against vanilla, or with the
    agreement metric the disagreement rate with vanilla's answers."""
    if g.metric == "agreement":
        base, cand = g.answers[g.vanilla], g.answers[key]
        return sum(base[i] != cand[i] for i in items) / len(items)
    return accuracy_drop(g, key, items)


def accuracy_drop(g: Grid, key: str, items: list[int]) -> float:
    base, cand = g.outcomes[g.vanilla], g.outcomes[key]
    return sum((base[i] == "1") - (cand[i] == "1") for i in items) / len(items)


def oracle(g: Grid, fresh: list[int], margin: float, space: set[str] | None = None) -> str:
    ok = [k for k in g.outcomes if (space is None or k in space) and true_drop(g, k, fresh) <= margin]
    return max(ok, key=lambda k: g.speed[k])


@dataclass
class Outcome:
    policy: str
    seed: int
    picked: str | None  # config key, None if nothing to pick
    confirmed: bool
    violates: bool
    speed_fraction: float  # pick's tokens/s / oracle's, 0 if not confirmed
    true_drop: float | None
    vanilla_items: int  # validation items vanilla decoded
    items: int  # validation item-decodes of all trials
    test_items: int = 0  # test items the pick (and the baseline with it) was decoded on; 0 without a pick
    finished: int = 0  # validation items spent racing the front's open points before the pick (--finish)


def run_new(spec: StudySpec, g: Grid, split: Split, seed: int, rule: str, workdir: str, space: set[str],
            min_confirmation: float, design: Design | None = None, finish_budget: int = 0) -> list[Outcome]:
    """The new policy on one draw: the real study, the pick by bound, the fixed test; with `design` the same pick
    also confirmed in stages ("staged"); with `finish_budget` the front's open fast points are raced to a verdict
    before the pick (`tuner.verdict.finishing`, both rows)."""
    spec = replace(spec, seed=seed)
    evaluator = ReplayEvaluator(g)
    storage = optuna.storages.RDBStorage(f"sqlite:///{workdir}/new-{seed}.db")
    study, _ = create_study(spec, storage, f"new-{seed}", seed)
    study.optimize(Objective(spec, evaluator, split.validation), n_trials=spec.trials, catch=(RuntimeError,),
                   gc_after_trial=False)
    items = sum(n for k, n in evaluator.decoded.items() if k != g.vanilla)
    vanilla_items = study_ledger(study).n
    points = trial_points(study, spec.constraint)
    keys = {t.number: TrialRecord.read(t).config_key for t in study.trials}
    finished = 0
    if finish_budget:
        extend = functools.partial(extend_point, g, keys, split, spec.constraint)
        done = finish(points, spec.constraint, rule=rule, rungs=rungs(len(split.validation), spec.race),
                      extend=extend, budget=finish_budget, test_items=len(split.test),
                      min_confirmation=min_confirmation)
        points, finished = done.points, done.items
        vanilla_items = max([vanilla_items, *(p.n or 0 for p in points)])
    policies = ["new"] + (["staged"] if design is not None else [])
    try:
        chosen = pick(points, rule, spec.constraint, test_items=len(split.test), min_confirmation=min_confirmation)
    except PickError:
        return [Outcome(p, seed, None, False, False, 0.0, None, vanilla_items, items + finished, 0, finished)
                for p in policies]
    key = keys[chosen.number]
    test_ids = [int(it.id) for it in split.test]
    cand, base = g.evidence(key, test_ids), g.evidence(g.vanilla, test_ids)
    verdict = confirm(cand, base, spec.constraint)
    out = [judge("new", seed, g, key, verdict.confirmed, split, spec.constraint.margin, vanilla_items,
                 items + finished, space, len(test_ids), finished)]
    if design is not None:
        staged = confirm_in_stages(design, len(test_ids), spec.constraint,
                                   pick=lambda a, b: Evidence(cand.outcomes[a:b], cand.answers[a:b]),
                                   baseline=lambda n: base.head(n))
        out.append(judge("staged", seed, g, key, staged.confirmed, split, spec.constraint.margin, vanilla_items,
                         items + finished, space, staged.items, finished))
    return out


def extend_point(g: Grid, keys: dict[int, str | None], split: Split, constraint, point: TrialPoint,
                 n: int) -> TrialPoint:
    """`finish`'s callback in the replay: the trial's measured outcomes on the first `n` validation items, paired
    with vanilla's (as the objective judges a rung)."""
    ids = [int(it.id) for it in split.validation[:n]]
    key = keys[point.number]
    paired = constraint.compare(g.evidence(key, ids), g.evidence(g.vanilla, ids))
    base_acc = sum(g.outcomes[g.vanilla][i] == "1" for i in ids) / n
    return replace(point, n=n, drop=paired.estimate, drop_lower=paired.lower, drop_upper=paired.upper,
                   discordance=paired.discordance, accuracy=base_acc - accuracy_drop(g, key, ids))


class PointEstimateObjective:
    """Today's policy (before racing), re-implemented: a fixed validation prefix in chunks, a trial stopped once a
    one-sided Wilson bound says it can't reach the bar, feasibility = accuracy >= baseline − margin."""

    def __init__(self, spec: StudySpec, evaluator: ReplayEvaluator, items: list[Item], chunk: int = 50) -> None:
        self.spec, self.evaluator, self.items, self.chunk = spec, evaluator, items, chunk
        from tuner.study.space import distributions, suggest

        self.dists, self.suggest = distributions(spec), suggest
        self.baseline_acc: float | None = None

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        params = {n: self.suggest(trial, n, d) for n, d in self.dists.items()}
        ref = reference_of(trial)
        cfg = self.spec.reference_config(self.spec.reference(ref)) if ref else self.spec.config_for(params)
        TrialWriter(trial).configuration(cfg.to_dict(), config_key(cfg))
        bar = None if self.baseline_acc is None or ref == "vanilla" else self.baseline_acc - self.spec.constraint.margin
        parts = []
        for start in range(0, len(self.items), self.chunk):
            parts.append(self.evaluator.evaluate(self.items[start : start + self.chunk], cfg))
            r = EvalResult.concat(parts)
            if bar is not None and r.n < len(self.items):
                _, upper = wilson_interval(r.correct, r.n, z=z_one_sided(0.95))
                if (r.correct + upper * (len(self.items) - r.n)) / len(self.items) < bar:
                    trial.set_constraint("accuracy", bar - r.accuracy)
                    raise optuna.TrialPruned()
        r = EvalResult.concat(parts)
        if ref == "vanilla":
            self.baseline_acc = r.accuracy
            bar = r.accuracy - self.spec.constraint.margin
        trial.set_constraint("accuracy", 0.0 if bar is None else bar - r.accuracy)
        return r.accuracy, r.tokens_per_s


def run_old(spec: StudySpec, g: Grid, split: Split, seed: int, rule: str, workdir: str, n_val: int,
            space: set[str]) -> Outcome:
    spec = replace(spec, seed=seed)
    evaluator = ReplayEvaluator(g)
    storage = optuna.storages.RDBStorage(f"sqlite:///{workdir}/old-{seed}.db")
    study, _ = create_study(spec, storage, f"old-{seed}", seed)
    items = split.validation[:n_val]
    study.optimize(PointEstimateObjective(spec, evaluator, items), n_trials=spec.trials, catch=(RuntimeError,),
                   gc_after_trial=False)
    base = study.trials[0].values[0]
    points = [TrialPoint(t.number, t.values[0], t.values[1], feasible=t.values[0] >= base - spec.constraint.margin)
              for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    front = pareto_front(points)
    decoded = sum(n for k, n in evaluator.decoded.items() if k != g.vanilla)
    if not front:
        return Outcome("today", seed, None, False, False, 0.0, None, n_val, decoded)
    chosen = (pick_knee(front, accuracy_scale=spec.constraint.margin) if rule == "knee"
              else pick_fastest(front, base - spec.constraint.margin))
    key = TrialRecord.read(study.trials[chosen.number]).config_key
    test_ids = [int(it.id) for it in split.test]
    drop = true_drop(g, key, test_ids)  # the point estimate of the test drop
    return judge("today", seed, g, key, drop <= spec.constraint.margin + 1e-12, split, spec.constraint.margin, n_val,
                 decoded, space, len(test_ids))


def judge(policy: str, seed: int, g: Grid, key: str, confirmed: bool, split: Split, margin: float,
          vanilla_items: int, items: int, space: set[str], test_items: int, finished: int = 0) -> Outcome:
    truth = true_drop(g, key, split.fresh)
    best = oracle(g, split.fresh, margin, space)
    return Outcome(policy, seed, key, confirmed, confirmed and truth > margin,
                   g.speed[key] / g.speed[best] if confirmed else 0.0, truth, vanilla_items, items, test_items,
                   finished)


def replay_study(spec: StudySpec, g: Grid, args: argparse.Namespace, space: set[str], workdir: str,
                 s: int) -> list[Outcome]:
    """Study `s` under every policy, on the same draw of validation, test and fresh problems (run in a forked
    process: it inherits `replay`'s quiet Optuna logging and the loaded grid)."""
    split = draw(1000 + s, args.validation, args.test, g.pool)
    new = run_new(spec, g, split, s, args.rule, workdir, space, args.min_confirmation, design_of(args, spec),
                  args.finish_budget if args.finish else 0)
    if g.metric == "agreement":  # today's policy had no agreement constraint
        return new
    return [*new, run_old(spec, g, split, s, args.rule, workdir, args.old_validation, space)]


def design_of(args: argparse.Namespace, spec: StudySpec) -> Design | None:
    """The staged confirmation's design (`--looks`, `--spending`), None with `--looks 1`."""
    looks = tuple(float(x) for x in args.looks.split(","))
    if looks == (1.0,):
        return None
    return Design.for_constraint(spec.constraint, looks, args.spending, futility=not args.no_futility)


POLICIES = ("today", "new", "staged")


def policy_rows(outcomes: list[Outcome], trials: int, test: int, labels: dict[str, str],
                vanilla: str) -> list[list[str]]:
    """The table's rows, one per policy replayed: the issue's four figures first (confirmed, violating, the
    baseline exported, test items per export), then speed and validation cost."""
    rows = []
    for policy in POLICIES:
        mine = [o for o in outcomes if o.policy == policy]
        if not mine:
            continue
        confirmed = [o for o in mine if o.confirmed]
        fractions = [o.speed_fraction for o in confirmed]
        picked = [o for o in mine if o.picked is not None]
        base = sum(o.confirmed and o.picked == vanilla for o in mine)
        rows.append([
            labels[policy],
            f"{len(confirmed) / len(mine):.0%} ({len(confirmed)}/{len(mine)})",
            f"{sum(o.violates for o in confirmed) / max(1, len(confirmed)):.1%} ({sum(o.violates for o in confirmed)})",
            f"{base / len(mine):.0%} ({base})",
            f"{statistics.mean(o.test_items for o in picked) / test:.0%}" if picked else "n/a",
            f"{statistics.mean(fractions):.0%}" if fractions else "n/a",
            f"{statistics.median(fractions):.0%}" if fractions else "n/a",
            f"{sum(o.picked is None for o in mine)} / {sum(o.picked is not None and not o.confirmed for o in mine)}",
            f"{statistics.mean(o.vanilla_items for o in mine):.0f}",
            f"{statistics.mean(o.items for o in mine) / trials:.0f}",
        ])
    return rows


ROW_HEADERS = ["policy", "confirmed exports", "confirmed that violate the margin", "baseline exported",
               "test items per export (share of the split)", "speed-up vs oracle (mean)", "(median)",
               "unconfirmed: no pick / refused by the test", "vanilla validation items", "items per trial"]


def replay(args: argparse.Namespace) -> None:
    report = Report(args.out)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    g = replace(load_grid(args.grid, args.pool), metric=args.metric)
    if args.metric == "agreement" and g.vanilla not in g.answers:
        raise SystemExit("the grid was measured without the extracted answers; an agreement replay needs them")
    if g.pool - args.validation - args.test < 1:
        raise SystemExit(f"a pool of {g.pool} problems leaves no fresh ones after {args.validation} + {args.test}")
    spec = replay_spec(args)
    n_val = args.validation
    margin = spec.constraint.margin
    space = space_keys(spec)
    if missing := space - set(g.outcomes):
        raise SystemExit(f"{len(missing)} configurations of the space are not (fully) measured; run `measure`")
    report(f"### Calibration — dtune/tiny-arith, arith, {len(space)} measured configurations × "
           f"{g.pool} problems, {args.studies} replayed studies per policy")
    report("")
    report(machine_line())
    report(f"command: `{command_line()}`")
    speeds = "measured by the timing pass (interleaved with a yardstick)" if (Path(args.grid) / "speeds.json").exists() \
        else "the measurement run's wall clock (no timing pass yet)"
    bounds = "binomial bounds of the disagreement" if args.metric == "agreement" else "Tango bounds"
    report(f"spec: arith, margin {spec.constraint.max_drop:g} points, {spec.trials} trials, GP sampler; new policy: "
           f"validation pool {n_val}, rungs from {spec.race.min_items} ×{spec.race.growth:g}, one-sided "
           f"{spec.constraint.confidence:.0%} {bounds}; today's policy: first {args.old_validation} validation "
           f"items; both: {args.test} test items, {g.pool - n_val - args.test} fresh problems per study; "
           f"pick `{args.rule}`; speeds {speeds}")
    report("")
    outcomes: list[Outcome] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dtune-calib-") as workdir:
        job = functools.partial(replay_study, spec, g, args, space, workdir)
        # Studies are independent (own seed, own draw, own SQLite file): several processes replay them at once
        # (forked, so each starts with the loaded grid). Results come back in study order. One job runs in this
        # process: a fork of a process with other threads (a test runner's, torch's) can deadlock on their locks.
        with contextlib.ExitStack() as stack:
            if args.jobs > 1:
                ex = stack.enter_context(concurrent.futures.ProcessPoolExecutor(
                    args.jobs, mp_context=multiprocessing.get_context("fork")))
                results = ex.map(job, range(args.studies))
            else:
                results = map(job, range(args.studies))
            for s, mine in enumerate(results):
                outcomes.extend(mine)
                if (s + 1) % 5 == 0:
                    print(f"  {s + 1}/{args.studies} studies ({time.perf_counter() - t0:.0f}s)", flush=True)
    if args.out:  # every study's outcome, for analyses the table doesn't make
        Path(args.out).with_suffix(".studies.json").write_text(json.dumps([o.__dict__ for o in outcomes], indent=0))
    design = design_of(args, spec)
    labels = {"today": "today (point estimates)",
              "new": "new (paired bounds + racing" + (" + finishing" if args.finish else "") + ")",
              "staged": f"new + staged confirmation ({describe_design(design, args.test)})" if design else ""}
    report(md_table(ROW_HEADERS, policy_rows(outcomes, spec.trials, args.test, labels, g.vanilla)))
    report("")
    if args.finish:
        spent = [o.finished for o in outcomes if o.policy == "new"]
        report(f"finishing: {statistics.mean(spent):.0f} validation items per study on average (budget "
               f"{args.finish_budget}), counted in items per trial")
    oracles = [oracle(g, draw(1000 + s, n_val, args.test, g.pool).fresh, margin, space) for s in range(args.studies)]
    common = max(set(oracles), key=oracles.count)
    report(f"oracle (fastest grid configuration within the margin on each study's fresh problems): "
           f"{describe(g.configs[common])} in {oracles.count(common)}/{len(oracles)} studies, "
           f"{g.speed[common]:.0f} tokens/s (vanilla {g.speed[g.vanilla]:.0f}); replay time "
           f"{time.perf_counter() - t0:.0f} s")
    report.save()


def summary(args: argparse.Namespace) -> None:
    """The measured grid on its whole pool: accuracy, the paired drop and discordant share against vanilla, and
    the timing pass's tokens/s, fastest first (the table above section 7's calibration tables)."""
    report = Report(args.out)
    g = load_grid(args.grid, args.pool)
    every = list(range(g.pool))
    base = g.outcomes[g.vanilla]
    rows = []
    for key in sorted(g.outcomes, key=lambda k: -g.speed[k]):
        out = g.outcomes[key]
        discordant = sum(a != b for a, b in zip(out, base, strict=True)) / g.pool
        rows.append([describe(g.configs[key]) + ("" if g.configs[key].early_exit or key == g.vanilla
                                                 else " (no early exit)"),
                     f"{out.count('1') / g.pool:.1%}", f"{100 * true_drop(g, key, every):.2f}", f"{discordant:.1%}",
                     f"{g.speed[key]:.0f}"])
    report(f"The grid on its whole pool ({g.pool} problems; the drop is paired against vanilla):")
    report("")
    report(md_table(["configuration", "accuracy", "drop vs vanilla (points)", "discordant", "tokens/s (timing pass)"],
                    rows))
    report("")
    report(f"command: `{command_line()}`")
    report.save()


def describe_design(design: Design, test: int) -> str:
    looks = "/".join(str(n) for n in design.stages(test))
    return (f"looks at {looks} items, {design.spending} spending"
            + ("" if design.futility else ", no futility stop"))


def describe(cfg: DecodeConfig) -> str:
    if cfg.mode != "streaming":
        return cfg.mode
    return f"w {cfg.window if cfg.window is not None else 'full'}, tau0 {cfg.threshold:g}, alpha {cfg.alpha:g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--grid", required=True)
    m.add_argument("--pool", type=int, default=POOL_SIZE)
    m.add_argument("--chunk", type=int, default=500)
    m.add_argument("--batch-size", type=int, default=32)
    m.add_argument("--shard", default="0/1")
    m.add_argument("--only", help="comma list of grid indices to measure (e.g. 0 for vanilla)")
    m.add_argument("--items", help="START:STOP, a range of the pool (two processes can share vanilla)")
    t = sub.add_parser("time")
    t.add_argument("--grid", required=True)
    t.add_argument("--probe", type=int, default=16)
    t.add_argument("--rounds", type=int, default=5)
    t.add_argument("--only", help="comma list of grid indices to time (vanilla and Fast-dLLM always are)")
    t.add_argument("--profile", action="append", help="an exported profile whose configuration is timed too")
    t.add_argument("--config", action="append", help="a DecodeConfig as JSON (e.g. a trial's) timed too")
    sy = sub.add_parser("synth")
    sy.add_argument("--grid", required=True)
    sy.add_argument("--pool", type=int, default=POOL_SIZE)
    sy.add_argument("--seed", type=int, default=0)
    su = sub.add_parser("summary")
    su.add_argument("--grid", required=True)
    su.add_argument("--pool", type=int, default=None)
    su.add_argument("--out")
    r = sub.add_parser("replay")
    r.add_argument("--grid", required=True)
    r.add_argument("--studies", type=int, default=100)
    r.add_argument("--trials", type=int, default=30)
    r.add_argument("--validation", type=int, default=1200, help="validation pool of the new policy")
    r.add_argument("--old-validation", type=int, default=200, help="validation items of today's policy")
    r.add_argument("--test", type=int, default=1500)
    r.add_argument("--max-drop", type=float, default=None, help="default: the arith spec's")
    r.add_argument("--min-items", type=int, default=None, help="default: the arith spec's race.min_items")
    r.add_argument("--rule", choices=["knee", "fastest"], default="knee")
    r.add_argument("--min-confirmation", type=float, default=0.0,
                   help="pick only candidates this likely to pass the test (tuner.verdict.selection.pick's "
                        "min_confirmation; export itself picks without it)")
    r.add_argument("--windows", help="comma list restricting the window choices (e.g. 16,32,null)")
    r.add_argument("--thresholds", help="comma list restricting the tau0 choices (e.g. 0.9,0.97)")
    r.add_argument("--alphas", help="comma list restricting the alpha choices (e.g. 0,0.35)")
    r.add_argument("--pool", type=int, default=None, help="problems of the grid to use (default: all vanilla has)")
    r.add_argument("--jobs", type=int, default=1, help="studies replayed at once, one process each")
    r.add_argument("--looks", default=",".join(f"{t:g}" for t in DEFAULT_LOOKS),
                   help="the staged confirmation's looks, fractions of the test split ending at 1 ('1': no staged row)")
    r.add_argument("--spending", default="obrien-fleming",
                   help="alpha spending of the staged confirmation: obrien-fleming, pocock or hsd:GAMMA")
    r.add_argument("--no-futility", action="store_true", help="the staged confirmation never stops for futility")
    r.add_argument("--finish", action="store_true",
                   help="race the front's fast undecided points to a verdict before the pick (new policy)")
    r.add_argument("--finish-budget", type=int, default=1200, help="validation items finishing may decode")
    r.add_argument("--metric", choices=["accuracy", "agreement"], default="accuracy",
                   help="the constraint replayed: the paired drop, or the disagreement rate with vanilla's answers "
                        "(labels hidden from the study; the truth is the disagreement on fresh problems)")
    r.add_argument("--out")
    args = ap.parse_args()
    if (warning := threads_warning()) is not None:
        print(warning)
    {"measure": measure, "time": time_grid, "summary": summary, "replay": replay,
     "synth": synth}[args.command](args)


if __name__ == "__main__":
    main()
