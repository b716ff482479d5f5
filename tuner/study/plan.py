"""What a study will cost, said before its first trial (`run` prints it; `run --plan` prints it and exits), and the
ETA its progress lines carry.

Three parts, each in decoded items and in seconds on this device:

* **the baseline on validation**: the items of the pool its ledger does not hold yet (`tuner.study.baseline`). An
  upper bound: the ledger grows as far as the furthest trial races, which is the whole pool in most studies (every
  one of the calibration's replayed arith studies, BENCHMARKS.md section 7);
* **the trials**: trials still to run × the items a trial is expected to race over. Before three streaming trials
  have finished (then their own mean), a prior from the constraint: the sampler looks for the fastest points that
  keep the margin, so trials gather about it; a trial's true drop is taken uniform over [m/2, 3m/2], and it is
  decided at the first rung (`tuner.verdict.racing.rungs`) whose bound's half-width (normal approximation, the
  spec's discordant share) is under its distance from the margin, else at the whole pool: 973 items for arith's
  rungs 150/300/600/1200, where the README's study raced ~1,150 (a halving prior said 375, and the calibration's
  16-point grid, with many points far from the margin, measured 408-411);
* **the test confirmation** (export): the pick and the baseline on the test split, the baseline's items less those
  stored. With a staged design (`tuner.verdict.sequential`) the expected items for a pick that loses half the
  margin (the power check's assumption) with the spec's discordant share; without one, the whole split.

Beside the items it races over, a study decodes overheads, counted from the code that decodes them (`Overheads`):
a warm-up batch before each evaluation (`tuner.study.evaluate`: each trial, each growth of the baseline, each test
decode) and each trial's speed passes over the timing probe (`tuner.study.timing`: R T R on the CPU clock, R T R T R
on the wall clock; more passes only while the spread is high, within a tenth of the trial's first-rung time).

Seconds per item come from a short timed probe (`probe`): a few validation items decoded with the baseline, with
the timing reference (`tuner.study.timing.timing_reference`, the cheapest-looking streaming reference, whose passes
time every trial and which prices the pick's test decode) and with a few points spread over the search space
(`typical_configs`, the sampled trials' price: they run anywhere in the space, most slower than the reference),
each after an untimed warm-up pass, on the clock trials are timed on (`tuner.study.timing.decode_clock`): one CPU
thread's CPU seconds, which other processes' load does not move (a sandbox's scoring, in other processes, is not
counted there), or wall seconds. A smaller batch than the study's can only overstate the per-item time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..verdict import racing
from ..verdict.constraint import Constraint
from .spec import StudySpec

__all__ = ["CostPlan", "Eta", "Overheads", "Probe", "expected_items_per_trial", "format_duration", "format_plan",
           "make_plan", "probe", "typical_configs"]

MEASURED_AFTER = 3  # finished streaming trials after which their own mean replaces the prior
TYPICAL_POINTS = 4  # search-space points the probe times to price a sampled trial


@dataclass(frozen=True)
class Probe:
    """Seconds per item on this device, warm-up excluded: the baseline's, the timing reference's and (the trials'
    price) the mean of a few points spread over the search space."""

    baseline: str
    baseline_s: float
    trial: str  # the timing reference
    trial_s: float
    items: int
    clock: str = "wall"  # "cpu": the decoding thread's CPU seconds (tuner.study.timing.decode_clock)
    recorded: str = ""  # when the figures come from this machine's record: when they were timed
    typical_s: float | None = None  # mean over `typical_configs`; None: trials priced at the timing reference
    typical_points: int = 0

    @property
    def sampled_s(self) -> float:
        """What an item of a sampled trial costs."""
        return self.trial_s if self.typical_s is None else self.typical_s

    def describe(self) -> str:
        unit = "CPU-s" if self.clock == "cpu" else "s"
        when = f"this machine's record of {self.recorded}" if self.recorded else "here"
        space = (f", the search space {self.typical_s:.3g} {unit}/item (mean of {self.typical_points} points)"
                 if self.typical_s is not None else "")
        return (f"timed on {self.items} validation items {when}: {self.baseline} {self.baseline_s:.3g} {unit}/item, "
                f"{self.trial} {self.trial_s:.3g} {unit}/item{space}")


def typical_configs(spec: StudySpec, k: int = TYPICAL_POINTS) -> list[Any]:
    """`k` points spread over the search space, the same for a given spec: a Latin hypercube seeded by the spec's
    seed (each range cut into `k` strata, each stratum's midpoint taken once; each list of choices cycled), so
    their mean cost is the price of a trial the sampler may propose anywhere in the space."""
    import random

    rng = random.Random(spec.seed)
    columns: dict[str, list[Any]] = {}
    for dim in spec.search_space:
        if dim.is_categorical:
            column = [dim.choices[i % len(dim.choices)] for i in range(k)]
        else:
            lo, hi = (math.log(dim.low), math.log(dim.high)) if dim.log else (dim.low, dim.high)
            column = [lo + (hi - lo) * (i + 0.5) / k for i in range(k)]
            column = [math.exp(v) if dim.log else v for v in column]
            if dim.step:
                column = [min(dim.high, dim.low + round((v - dim.low) / dim.step) * dim.step) for v in column]
        rng.shuffle(column)
        columns[dim.name] = column
    return [spec.config_for({name: column[i] for name, column in columns.items()}) for i in range(k)]


def probe(spec: StudySpec, evaluator: Any, items: Sequence[Any], n: int = 8) -> Probe:
    """Decode the first `n` items (one batch at most) with the baseline reference, the timing reference and the
    `typical_configs` of the space, each timed after an untimed warm-up pass, on the clock the study's trials are
    timed on. Timed once per machine: the figures are kept in its speed record (`tuner.study.timing.cache_path`,
    the faster kept), keyed by the hardware, torch, the model's weights, the configurations, the prompts, the batch
    and the clock, so every worker of a study and every later `run --plan` on this machine reads them instead of decoding again."""
    from ..base.file_lock import held_lock
    from .timing import (
        cache_path,
        decode_clock,
        machine_label,
        machine_record,
        record_machine,
        timing_reference,
    )

    batch = list(items[: max(1, min(n, len(items), getattr(evaluator, "batch_size", n) or n))])
    names = (spec.constraint.baseline, timing_reference(spec))
    configs = [spec.reference_config(spec.reference(name)) for name in names] + typical_configs(spec)
    model = getattr(evaluator, "model", None)
    clock = decode_clock(model) if model is not None else "wall"
    what = {"probe": "plan", "machine": machine_label(spec, model) if model is not None else "",
            "weights": (getattr(model, "source", None) or {}).get("fingerprint", ""),
            "configs": [json.dumps(c.to_dict(), sort_keys=True, default=str) for c in configs],
            "batch_size": getattr(evaluator, "batch_size", None), "clock": clock,
            "fused": bool(getattr(model, "is_fused", False))}
    prompts = [evaluator.prompt_ids(item) for item in batch] if hasattr(evaluator, "prompt_ids") else []
    key = "plan-" + hashlib.sha256(json.dumps({**what, "prompts": prompts}, sort_keys=True).encode()).hexdigest()[:16]
    record = cache_path()
    # Workers started together on this machine time it once: the others wait for the first one's record.
    with held_lock(record.with_name(record.name + ".lock") if record and model is not None else None, 600):
        known = machine_record(key)
        if model is not None and known.get("baseline_s") and known.get("trial_s") and known.get("typical_s"):
            return Probe(names[0], float(known["baseline_s"]), names[1], float(known["trial_s"]), len(batch), clock,
                         recorded=str(known.get("updated", "")), typical_s=float(known["typical_s"]),
                         typical_points=len(configs) - 2)
        per_item = _timed(evaluator, batch, configs, clock)
        typical_s = sum(per_item[2:]) / len(per_item[2:])
        if model is not None:
            record_machine(key, {"baseline_s": per_item[0], "trial_s": per_item[1], "typical_s": typical_s}, what,
                           faster="baseline_s")
    return Probe(names[0], per_item[0], names[1], per_item[1], len(batch), clock, typical_s=typical_s,
                 typical_points=len(configs) - 2)


def _timed(evaluator: Any, batch: list[Any], configs: Sequence[Any], clock: str) -> list[float]:
    """Seconds per item of each configuration on `batch`, each after an untimed warm-up pass."""
    per_item = []
    for config in configs:
        evaluator.evaluate(batch, config, warmup=False)  # warm-up: allocator growth and the batch's kernels
        cpu0 = time.thread_time()
        result = evaluator.evaluate(batch, config, warmup=False)
        cpu = time.thread_time() - cpu0
        seconds = cpu if clock == "cpu" else result.counters.wall_time_s + result.scoring_time_s
        per_item.append(seconds / max(1, result.n))
    return per_item


@dataclass(frozen=True)
class Overheads:
    """Items a study decodes beside those it races over: a warm-up batch before each evaluation and each trial's
    speed passes over the timing probe (passes at their minimum: the rule adds more only while the spread is high,
    within a tenth of the first rung's time)."""

    warmup: int  # items per warm-up (the study's batch)
    probe: int  # items per speed pass
    trial_passes: int
    reference_passes: int  # the timing reference's passes around them

    @classmethod
    def for_study(cls, spec: StudySpec, clock: str = "wall") -> Overheads:
        from .timing import TimingRule

        rule = TimingRule().for_clock(clock)
        return cls(warmup=spec.batch_size, probe=max(rule.probe_items, spec.batch_size),
                   trial_passes=rule.min_passes, reference_passes=rule.min_passes + 1)

    @property
    def per_trial(self) -> int:
        """Items a streaming trial decodes beside its raced ones."""
        return self.own + self.probe * self.reference_passes

    @property
    def own(self) -> int:
        """Of those, the items decoded with the trial's own configuration (its warm-up and speed passes)."""
        return self.warmup + self.probe * self.trial_passes


def expected_items_per_trial(rungs: Sequence[int], constraint: Constraint, finished: Sequence[int] = ()) -> float:
    """Items a streaming trial is expected to race over: the mean of `finished` trials' once there are
    MEASURED_AFTER of them, else the prior of trials gathered about the margin (module docstring)."""
    if len(finished) >= MEASURED_AFTER:
        return sum(finished) / len(finished)
    from ..verdict.stats import z_one_sided

    m = constraint.margin  # a fraction
    spread = math.sqrt(m * (1 - m)) if constraint.metric == "agreement" else math.sqrt(constraint.discordance)
    z, points = z_one_sided(constraint.confidence), 100
    decided = []
    for i in range(points):
        gap = abs(m * (0.5 + (i + 0.5) / points) - m)
        decided.append(next((n for n in rungs if z * spread / math.sqrt(n) < gap), rungs[-1]))
    return sum(decided) / points


@dataclass(frozen=True)
class PlanSeconds:
    """Seconds of each part of a plan on the probe's device."""

    baseline: float
    trials: float
    test: float

    @property
    def study(self) -> float:
        """`run`'s part: the baseline and the trials (the test is export's)."""
        return self.baseline + self.trials

    @property
    def total(self) -> float:
        return self.study + self.test


@dataclass(frozen=True)
class CostPlan:
    """What a study has left to decode, and what that costs on this device (seconds None without a probe)."""

    trials_left: int
    pool: int
    rungs: tuple[int, ...]
    baseline_stored: int
    items_per_trial: float
    items_per_trial_measured: bool
    test_total: int
    test_pick_items: float
    test_baseline_items: float
    test_staged: str | None  # the design in words, None for the fixed test
    probe: Probe | None
    overheads: Overheads | None = None  # None: racing items only
    baseline_trial_left: bool = False  # the baseline reference's trial (timed, no racing items) is still to run

    @property
    def baseline_items(self) -> int:
        return max(0, self.pool - self.baseline_stored)

    @property
    def trial_items(self) -> float:
        return self.trials_left * self.items_per_trial

    @property
    def trial_overhead(self) -> int:
        """Items a streaming trial decodes beside its raced ones (0 when overheads are not counted)."""
        return self.overheads.per_trial if self.overheads else 0

    @property
    def baseline_growths(self) -> int:
        """Evaluations growing the baseline's ledger (one per racing rung above what it holds), each warmed up."""
        return sum(1 for n in self.rungs if n > self.baseline_stored)

    def trial_seconds(self, raced_items: float) -> float:
        """Seconds of one streaming trial that races over `raced_items`, its warm-up and speed passes included:
        its own configuration at the space's typical cost, the timing reference's passes at the reference's."""
        p, o = self.probe, self.overheads or Overheads(warmup=0, probe=0, trial_passes=0, reference_passes=0)
        if p is None:
            return 0.0
        return (raced_items + o.own) * p.sampled_s + o.probe * o.reference_passes * p.trial_s

    def seconds(self) -> PlanSeconds | None:
        """Seconds of each part on the probe's device, overheads included; None without a probe."""
        if self.probe is None:
            return None
        p, o = self.probe, self.overheads or Overheads(warmup=0, probe=0, trial_passes=0, reference_passes=0)
        baseline = (self.baseline_items + self.baseline_growths * o.warmup) * p.baseline_s
        if self.baseline_trial_left:  # its speed passes: the baseline on the probe, between reference passes
            baseline += o.probe * (o.trial_passes * p.baseline_s + o.reference_passes * p.trial_s)
        trials = self.trials_left * self.trial_seconds(self.items_per_trial)
        test = ((self.test_pick_items + o.warmup) * p.trial_s
                + (self.test_baseline_items + (o.warmup if self.test_baseline_items else 0)) * p.baseline_s)
        return PlanSeconds(baseline=baseline, trials=trials, test=test)

    def to_dict(self) -> dict[str, Any]:
        return {"trials_left": self.trials_left, "baseline_items": self.baseline_items,
                "baseline_stored": self.baseline_stored, "items_per_trial": self.items_per_trial,
                "items_per_trial_measured": self.items_per_trial_measured, "trial_items": self.trial_items,
                "test_pick_items": self.test_pick_items, "test_baseline_items": self.test_baseline_items,
                "test_total": self.test_total, "test_staged": self.test_staged,
                "seconds": None if self.probe is None else dataclasses.asdict(self.seconds()),
                "probe": None if self.probe is None else dataclasses.asdict(self.probe),
                "overheads": None if self.overheads is None else dataclasses.asdict(self.overheads)}


def make_plan(spec: StudySpec, *, pool: int, test_items: int, baseline_stored: int = 0, trials_done: int = 0,
              finished_items: Sequence[int] = (), test_baseline_stored: int = 0, design: Any = None,
              probe: Probe | None = None, overheads: Overheads | None = None) -> CostPlan:
    """The plan of a study over a `pool`-item validation pool and a `test_items`-item test split.

    `baseline_stored`: items the baseline ledger holds (`StudyRecord(study).ledger.n`); `trials_done`: finished
    trials of the budget (the baseline's own included); `finished_items`: items each finished streaming trial
    raced over (copies of an earlier trial left out); `test_baseline_stored`: the baseline's stored test items
    (a full split when export stored it); `design`: a `tuner.verdict.sequential.Design`, or None for the fixed
    test; `overheads`: warm-ups and speed passes (`Overheads.for_study`), None to count racing items only."""
    rungs = tuple(racing.rungs(pool, spec.race))
    baseline_trial_left = 1 if trials_done == 0 else 0  # the baseline reference's trial decodes no extra items
    trials_left = max(0, spec.trials - trials_done - baseline_trial_left)
    per_trial = expected_items_per_trial(rungs, spec.constraint, finished_items)
    if design is None or test_items == 0:
        pick_items, staged = float(test_items), None
    else:
        c = spec.constraint
        pick_items = design.expected_items(test_items, c.margin / 2, max(c.discordance, c.margin), c.margin)
        looks = "/".join(str(n) for n in design.stages(test_items))
        staged = f"in stages at {looks} items ({design.spending} spending), stopping at the first that decides"
    base_test = max(0.0, pick_items - test_baseline_stored) if test_baseline_stored < test_items else 0.0
    return CostPlan(trials_left=trials_left, pool=pool, rungs=rungs, baseline_stored=min(baseline_stored, pool),
                    items_per_trial=per_trial, items_per_trial_measured=len(finished_items) >= MEASURED_AFTER,
                    test_total=test_items, test_pick_items=pick_items, test_baseline_items=base_test,
                    test_staged=staged, probe=probe, overheads=overheads,
                    baseline_trial_left=bool(baseline_trial_left))


def format_duration(seconds: float | None) -> str:
    """A duration as a person reads it: 45s, 12m, 1h 05m, 2d 3h."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s" if s < 600 else f"{round(s / 60)}m"
    if s < 86400:
        return f"{s // 3600}h {(s % 3600) // 60:02d}m"
    return f"{s // 86400}d {(s % 86400) // 3600}h"


def format_plan(plan: CostPlan, spec: StudySpec) -> list[str]:
    """The plan as `run` prints it: one line per part, items and seconds, then the total."""
    sec = plan.seconds()
    when = lambda part: f" ≈ {format_duration(getattr(sec, part))}" if sec else ""  # noqa: E731
    rungs = "/".join(str(n) for n in plan.rungs)
    how = ("the mean of the finished trials" if plan.items_per_trial_measured
           else f"racing rungs {rungs}, trials about the margin")
    extra = plan.trial_overhead
    per_trial = f"(~{plan.items_per_trial:.0f} raced + {extra} warm-up and timing)" if extra else \
        f"~{plan.items_per_trial:.0f}"
    lines = [
        f"plan: {spec.trials} trials on {plan.pool} validation items, test split {plan.test_total}"
        + (f"; {plan.probe.describe()}" if plan.probe else " (no timed probe: items only)"),
        f"  baseline ({spec.constraint.baseline}) on validation: up to {plan.baseline_items:,} items to decode"
        f" ({plan.baseline_stored:,} stored){when('baseline')}",
        f"  trials: {plan.trials_left} to run × {per_trial} items ({how}) = "
        f"~{plan.trials_left * (plan.items_per_trial + extra):,.0f} items{when('trials')}",
        f"  test confirmation (export): the pick on ~{plan.test_pick_items:,.0f} of {plan.test_total:,} items + the "
        f"baseline on ~{plan.test_baseline_items:,.0f}"
        + (f", {plan.test_staged}" if plan.test_staged else "") + when("test"),
    ]
    if sec:
        lines.append(f"  total ≈ {format_duration(sec.total)} (the study ≈ {format_duration(sec.study)}, "
                     f"export ≈ {format_duration(sec.test)})")
    return lines


class Eta:
    """The time `run` has left, for its progress lines: the plan's remaining work in probe-seconds, scaled by the
    pace observed so far (elapsed / the probe-seconds of the work done; kept within 1/4..4 of the probe's, and the
    probe's own until a minute of work is done). Trials still to run are priced at the items the finished ones
    raced over once MEASURED_AFTER have finished (races run longer than the prior when few trials are decided
    early), else at the plan's."""

    def __init__(self, plan: CostPlan, started: float | None = None) -> None:
        self.plan, self.started = plan, time.monotonic() if started is None else started

    def remaining_s(self, *, baseline_items: int, trials_finished: int, trial_items: int,
                    now: float | None = None) -> float | None:
        """Seconds left after `baseline_items` baseline items, `trials_finished` trials and `trial_items` trial
        items decoded since the plan was made; None without a probe."""
        p = self.plan.probe
        if p is None:
            return None
        done = (baseline_items * p.baseline_s + trials_finished * self.plan.trial_seconds(0)
                + trial_items * p.sampled_s)
        per_trial = (trial_items / trials_finished if trials_finished >= MEASURED_AFTER
                     else self.plan.items_per_trial)
        trials_left = max(0, self.plan.trials_left - trials_finished)
        planned_left = (max(0.0, self.plan.seconds().baseline - baseline_items * p.baseline_s)
                        + trials_left * self.plan.trial_seconds(per_trial))
        elapsed = (time.monotonic() if now is None else now) - self.started
        pace = min(4.0, max(0.25, elapsed / done)) if done >= 60 and elapsed > 0 else 1.0
        return planned_left * pace

    def line(self, **done: Any) -> str:
        """' · ETA 12m' for a progress line ('' without a probe)."""
        left = self.remaining_s(**done)
        return "" if left is None else f" · ETA {format_duration(left)}"
