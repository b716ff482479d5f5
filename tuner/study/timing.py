"""A trial's speed, measured so that other work on the machine can't reorder trials (issue 16).

One wall-clock figure per trial is at the mercy of whatever else runs: on a shared machine the same settings were
timed 10x apart and vanilla (128 forwards per problem) came out faster than streaming settings doing 6-9. The
benchmarking rule (pyperf, `timeit`, benchmarks/calibration.py's `time`) is: compare configurations as ratios
measured close together in time, repeat, and take a robust statistic with its spread. So each trial, right after
its first rung has been decoded (the configuration is warm):

* decodes a fixed **probe** — the first `probe_items` items of the validation pool (at least one full batch of
  the study's `batch_size`), the same prompts for every
  trial, in the study's batch size — in short passes, alternating with passes of a fixed **timing reference**
  (the cheapest-looking streaming reference, `timing_reference`: the paper's setting in the built-in specs):
  R T R T R ...;
* a pass's time is its decode wall time, or, when one CPU thread decodes, that thread's CPU time: there the main
  noise of the wall clock is other processes taking turns on the cores, which CPU time does not count (what it
  still counts, a busy sibling hyperthread or a shared cache, slows trial and reference passes alike);
* per pass, ratio = trial pass time / the geometric mean of its two adjacent reference passes (load that drifts
  across the three passes cancels), or the faster of the two when they differ by more than 25% (a stall in one
  reference pass is then ignored); load that lasts longer than a pass slows both and cancels out;
* ratio = the median of the per-pass ratios (a stall in a minority of trial passes is ignored), with its
  dispersion: spread = IQR / median of the ratios, or, after a single trial pass, how far apart its ratios to
  the two reference passes around it are (the same configuration timed twice, just before and just after: the
  clock's own repeatability at that moment). Passes are added, from `min_passes` up to `max_passes`, only while
  the spread is above `settle_spread`, so a quiet machine pays for the minimum and a noisy one for more. The
  minimum is one trial pass on the CPU clock (R T R: its passes agreed within 1% in all 24 trials of BENCHMARKS.md
  section 6, and a descheduled thread's CPU time doesn't stall) and two on the wall clock (R T R T R: a stall
  inside a lone trial pass would go unseen between two agreeing reference passes);
* tokens/s = the trial's answer tokens on the probe / (ratio x the reference's quiet probe time). The quiet time
  (the **anchor**) is fixed when the study's first trial is timed and stored with the study, so every trial of a
  study is on one scale (tokens/s, answer tokens per decode second, as before) and a trial timed under load loses
  nothing. It is the fastest reference pass this machine has ever shown for the same model, reference, probe and
  batch size (a per-machine record, `$DTUNE_SPEED_CACHE`, default ~/.cache/dtune/speed-anchors.json; empty = off),
  or the first trial's own fastest pass: so a study started while the machine is busy still reports the figures a
  quiet machine gave, and studies on the same hardware stay comparable;
* the figure is flagged `speed_noisy` when the spread is still above `noisy_spread` after `max_passes`: the machine
  was too busy for the figure to be trusted to better than that. The rule, with its numbers, is stored with the
  trial (`TrialRecord.timing["rule"]`).

`load` = the trial's fastest reference pass / the anchor: how much slower the machine ran than when the anchor was
taken (1 = as quiet). The accuracy evaluation's own wall-clock figure stays in the metrics as
`tokens_per_s_wall`, for contrast (BENCHMARKS.md "Speed under load").

Evaluators that replay recorded results (tests, benchmarks) have no model to time; `timer_for` gives them the
wall-clock figure of the results they replay.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..storage.record import SpeedAnchor, StudyRecord

if TYPE_CHECKING:  # pragma: no cover - typing only
    import optuna

    from decoder.config import DecodeConfig

    from .evaluate import Evaluator
    from .spec import StudySpec

# Two reference passes around a trial pass further apart than this are one stalled pass, not drifting load.
STALL_RATIO = 1.25
_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------- the per-machine record
def cache_path() -> Path | None:
    """Where this machine's fastest reference passes and plan probes are kept (`$DTUNE_SPEED_CACHE`; set empty to
    keep none)."""
    env = os.environ.get("DTUNE_SPEED_CACHE")
    if env is not None:
        return Path(env) if env.strip() else None
    return Path.home() / ".cache" / "dtune" / "speed-anchors.json"


def machine_record(key: str) -> dict[str, Any]:
    """This machine's record under `key` ({} when there is none or the file can't be read)."""
    path = cache_path()
    try:
        entry = json.loads(path.read_text()).get(key) if path else None
        return entry if isinstance(entry, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def record_machine(key: str, figures: dict[str, float], what: dict[str, Any], faster: str) -> None:
    """Keep `figures` under `key` unless the stored record's `faster` figure is already at most this one's (the
    quiet machine's figure wins; written atomically; a failure costs the record, not the caller; two writers at
    once may lose one update, never the file)."""
    path = cache_path()
    if path is None or not figures[faster] > 0:
        return
    try:
        try:
            doc = json.loads(path.read_text())
            doc = doc if isinstance(doc, dict) else {}
        except (OSError, ValueError):
            doc = {}
        old = doc.get(key, {}).get(faster) if isinstance(doc.get(key), dict) else None
        if old is not None and float(old) <= figures[faster]:
            return
        doc[key] = {**what, **figures, "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as exc:
        _log.debug("speed record %s not written: %s", path, exc)


def machine_anchor(key: str) -> float | None:
    """The fastest reference pass this machine has shown for the anchor `key` (ProbeTimer.machine_key)."""
    try:
        value = machine_record(key).get("time_s")
        return float(value) if value else None
    except (TypeError, ValueError):
        return None


def record_machine_anchor(key: str, time_s: float, what: dict[str, Any]) -> None:
    """Keep the faster of the stored and this reference pass."""
    record_machine(key, {"time_s": time_s}, what, faster="time_s")


@dataclass(frozen=True)
class TimingRule:
    """How a trial is timed. BENCHMARKS.md section 6 measured these defaults (the tiny arith model on 2 shared
    cores, load average 7-19): on the CPU clock two passes agreed within 1% in all 24 trials; on the wall clock 5
    of 24 trials still spread over 15% after their passes, and those included the figure that moved most."""

    probe_items: int = 2
    min_passes: int = 2  # on the wall clock
    min_passes_cpu: int = 1  # on the CPU clock (see the module docstring)
    max_passes: int = 5
    settle_spread: float = 0.05  # stop adding passes once the spread (`timing_spread`) is at most this
    noisy_spread: float = 0.15  # after the last pass, a spread above this flags the figure speed_noisy
    budget: float = 0.10  # passes beyond min_passes only while the probe has cost less than this share of the
    #                       trial's first-rung decode time

    def for_clock(self, clock: str) -> TimingRule:
        """The rule as applied on `clock`: its minimum of passes is the CPU clock's there."""
        return replace(self, min_passes=self.min_passes_cpu) if clock == "cpu" else self

    def describe(self, reference: str, anchor_s: float, clock: str = "wall") -> str:
        what = "the decoding thread's CPU time" if clock == "cpu" else "decode wall time"
        return (f"pass times = {what}; tokens/s = answer tokens on the probe ({self.probe_items} fixed validation "
                f"prompts) / (median over passes of [trial pass time / the {reference} passes around it (geometric "
                f"mean, or the faster when >{STALL_RATIO:g}x apart)] x {reference}'s quiet probe time "
                f"{anchor_s:.4f}s); passes {self.min_passes}-{self.max_passes}, added while the spread (IQR/median "
                f"of the ratios; for one pass, the range of its ratios to the two reference passes around it / "
                f"their geometric mean) > {self.settle_spread:g} and the probe has cost < {self.budget:.0%} of the "
                f"first rung's decode time; speed_noisy when the spread > {self.noisy_spread:g} after the last pass")


@dataclass(frozen=True)
class SpeedEstimate:
    """A trial's speed: the figure the study optimises, with its dispersion and the raw passes behind it."""

    tokens_per_s: float
    method: str  # "probe-ratio" | "wall"
    ratio: float | None = None  # median trial/reference time ratio on the probe
    spread: float | None = None  # IQR / median of the per-pass ratios (`timing_spread`)
    noisy: bool = False
    low: float | None = None  # tokens/s at the upper quartile of the ratios (`ratio_bounds`)
    high: float | None = None  # tokens/s at the lower quartile
    load: float | None = None  # fastest reference pass / the anchor
    overhead_s: float = 0.0  # decode time the probe passes cost
    detail: dict[str, Any] = field(default_factory=dict)
    compile: bool = False  # timed on the decoder's fused path (`--compile`), another cost than the eager one

    def metrics(self, wall_tokens_per_s: float | None = None) -> dict[str, Any]:
        """Flat numbers for the trial's metrics (MLflow, trials.csv): the figure, the old one and the spread."""
        out: dict[str, Any] = {"tokens_per_s": self.tokens_per_s, "speed_method": self.method,
                               "speed_noisy": self.noisy}
        if wall_tokens_per_s is not None:
            out["tokens_per_s_wall"] = wall_tokens_per_s
        for key, value in (("speed_ratio", self.ratio), ("speed_spread", self.spread), ("tokens_per_s_low", self.low),
                           ("tokens_per_s_high", self.high), ("timing_load", self.load)):
            if value is not None:
                out[key] = value
        if self.compile:
            out["compile"] = True
        if self.method != "wall":
            out["timing_overhead_s"] = self.overhead_s
            out["timing_passes"] = len(self.detail.get("trial_times", []))
        return out


# ------------------------------------------------------------------------------------------- the estimator
def around(before: float, after: float) -> float:
    """The reference time a trial pass between two reference passes is compared with: their geometric mean (load
    drifting steadily across the pair cancels), or the faster one when they differ by more than STALL_RATIO (one
    of them stalled; the stall must not make the trial pass look fast)."""
    lo, hi = sorted((before, after))
    return lo if hi > STALL_RATIO * lo else math.sqrt(lo * hi)


def pass_ratios(trial_times: Sequence[float], ref_times: Sequence[float]) -> list[float]:
    """Per trial pass, its time over the reference passes around it (R T R T ... R; `around`)."""
    if len(ref_times) != len(trial_times) + 1:
        raise ValueError(f"need one more reference pass than trial passes, got {len(ref_times)} and "
                         f"{len(trial_times)}")
    return [t / around(ref_times[i], ref_times[i + 1]) for i, t in enumerate(trial_times)]


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(Q1, median, Q3), inclusive method (a single value is its own quartiles)."""
    vals = sorted(values)
    if len(vals) == 1:
        return vals[0], vals[0], vals[0]
    q1, q2, q3 = statistics.quantiles(vals, n=4, method="inclusive")
    return q1, q2, q3


def relative_width(low: float, med: float, high: float) -> float:
    """(high - low) / median: the one dispersion formula `spread` and `timing_spread` share."""
    return (high - low) / med if med > 0 else math.inf


def spread(ratios: Sequence[float]) -> float:
    """IQR / median: a relative dispersion that one outlying pass in five does not move much."""
    return relative_width(*quartiles(ratios))


def ratio_bounds(trial_times: Sequence[float], ref_times: Sequence[float]) -> tuple[float, float, float]:
    """(low, median, high) of the trial/reference time ratio: the quartiles of the per-pass ratios, or, for a
    single trial pass, its ratios to the faster and the slower reference pass around it (with the geometric-mean
    ratio between them), so that one pass still carries a dispersion."""
    if len(trial_times) == 1 and len(ref_times) == 2:
        t, (fast, slow) = trial_times[0], sorted(ref_times)
        return t / slow, pass_ratios(trial_times, ref_times)[0], t / fast
    return quartiles(pass_ratios(trial_times, ref_times))


def timing_spread(trial_times: Sequence[float], ref_times: Sequence[float]) -> float:
    """The relative dispersion of a trial's ratio (`ratio_bounds`: (high - low) / median); for two or more trial
    passes this is `spread` of their ratios."""
    return relative_width(*ratio_bounds(trial_times, ref_times))


def estimate(trial_times: Sequence[float], ref_times: Sequence[float], trial_tokens: int, anchor_s: float,
             rule: TimingRule = TimingRule()) -> SpeedEstimate:
    """The speed from interleaved passes (see the module docstring); pure, so tests feed it synthetic timings."""
    ratios = pass_ratios(trial_times, ref_times)
    q1, med, q3 = ratio_bounds(trial_times, ref_times)
    rel = relative_width(q1, med, q3)
    per_token = anchor_s / trial_tokens if trial_tokens > 0 else math.inf

    def tps(ratio: float) -> float:
        return 1.0 / (ratio * per_token) if ratio > 0 and math.isfinite(per_token) else 0.0

    return SpeedEstimate(
        tokens_per_s=tps(med), method="probe-ratio", ratio=med, spread=rel, noisy=rel > rule.noisy_spread,
        low=tps(q3), high=tps(q1), load=min(ref_times) / anchor_s if anchor_s > 0 else None,
        overhead_s=sum(trial_times) + sum(ref_times),
        detail={"trial_times": list(trial_times), "ref_times": list(ref_times), "ratios": ratios,
                "trial_tokens": trial_tokens, "anchor_s": anchor_s})


def interleave(trial_pass: Callable[[], tuple[float, int]], ref_pass: Callable[[], float], rule: TimingRule,
               budget_s: float = math.inf, elapsed: Callable[[], float] | None = None,
               ) -> tuple[list[float], list[float], int]:
    """R T R T ... R until `settled`: (trial pass times, reference pass times, the trial's answer tokens).

    A pass is a callable so the sequence rule can be tested on synthetic clocks; ProbeTimer's decode the probe.
    `elapsed` says what the passes have cost so far against `budget_s` (default: the sum of their times)."""
    ref_times, trial_times, tokens = [ref_pass()], [], 0
    while True:
        seconds, tokens = trial_pass()
        trial_times.append(seconds)
        ref_times.append(ref_pass())
        spent = elapsed() if elapsed is not None else sum(trial_times) + sum(ref_times)
        if settled(len(trial_times), timing_spread(trial_times, ref_times), rule, spent, budget_s):
            return trial_times, ref_times, tokens


def settled(passes: int, dispersion: float, rule: TimingRule, spent_s: float = 0.0,
            budget_s: float = math.inf) -> bool:
    """Enough trial passes: the maximum is reached, or the minimum is and the spread (`timing_spread`) is small or
    the budget spent."""
    if passes >= rule.max_passes:
        return True
    return passes >= rule.min_passes and (dispersion <= rule.settle_spread or spent_s >= budget_s)


# ------------------------------------------------------------------------------------------------ timers
class Timer(Protocol):
    def measure(self, config: DecodeConfig, study: optuna.Study, wall_tokens_per_s: float,
                number: int | None = None, eval_time_s: float = math.inf) -> SpeedEstimate:
        """The speed of `config` in `study` (trial `number`); `wall_tokens_per_s` and `eval_time_s` are its
        accuracy evaluation's (the figure it replaces, and the time the timing budget is a share of)."""
        ...


class WallTimer:
    """The evaluation's own wall-clock figure: for evaluators that replay recorded speeds (no model to time)."""

    def measure(self, config: DecodeConfig, study: optuna.Study, wall_tokens_per_s: float,
                number: int | None = None, eval_time_s: float = math.inf) -> SpeedEstimate:
        return SpeedEstimate(tokens_per_s=wall_tokens_per_s, method="wall")


class ProbeTimer:
    """Times a configuration on the probe, interleaved with the timing reference (see the module docstring)."""

    def __init__(self, evaluator: Evaluator, probe: Sequence[Any], reference: DecodeConfig, reference_name: str,
                 rule: TimingRule = TimingRule(), machine: str = "", clock: str = "wall") -> None:
        self.evaluator, self.reference, self.reference_name, self.rule = evaluator, reference, reference_name, rule
        self.clock = clock
        self.prompts = [evaluator.prompt_ids(item) for item in probe]
        self.probe_ids = [item.id for item in probe]
        # What makes two reference passes comparable: the machine and model, the reference, the probe's tokens and
        # the batch size they were decoded in.
        self.what = {"machine": machine, "reference": json.dumps(reference.to_dict(), sort_keys=True, default=str),
                     "batch_size": evaluator.batch_size, "clock": clock}
        # The fused path (`--compile`) is another cost: its passes get their own anchor (the eager keys unchanged).
        self.compile = bool(getattr(evaluator.model, "is_fused", False))
        if self.compile:
            self.what["compile"] = True
        ident = json.dumps({**self.what, "prompts": self.prompts}, sort_keys=True)
        self.machine_key = hashlib.sha256(ident.encode()).hexdigest()[:16]

    def decode(self, config: DecodeConfig) -> tuple[float, float, int]:
        """One pass over the probe in the study's batch size: (decode wall seconds, the decoding thread's CPU
        seconds, answer tokens as the study counts)."""
        from decoder import generate

        wall, cpu, tokens, size = 0.0, 0.0, 0, self.evaluator.batch_size
        for b in range(0, len(self.prompts), size):
            c0 = time.thread_time()
            out = generate(self.evaluator.model, self.prompts[b : b + size], config, tokenizer=self.evaluator.tokenizer)
            cpu += time.thread_time() - c0
            wall += out.counters.wall_time_s
            tokens += sum(self.evaluator.count_tokens(text) for text in out.texts or [])
        return wall, cpu, tokens

    def anchor(self, study: optuna.Study, ref_times: Sequence[float], number: int | None) -> float:
        """The study's anchor (the reference's quiet probe time), set from these passes when there is none yet.

        Workers share it through the study; two first trials timed at once may both write it, and the stored one
        is used from then on (re-read after writing, so the window for a mismatch is one storage round trip)."""
        fastest = min(ref_times)
        record = StudyRecord(study)
        stored = record.speed_anchor
        record_machine_anchor(self.machine_key, fastest, self.what)
        if stored and stored.probe == self.probe_ids and stored.reference == self.reference_name:
            return float(stored.time_s)
        known = machine_anchor(self.machine_key)
        anchor = min(fastest, known) if known else fastest
        record.set_speed_anchor(SpeedAnchor(
            reference=self.reference_name, probe=self.probe_ids, time_s=anchor, trial=number,
            source="this machine's record" if anchor < fastest else "the first trial timed",
            machine_key=self.machine_key,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")))
        stored = StudyRecord(study).speed_anchor  # re-read: another worker may have written it at the same time
        return float(stored.time_s if stored else anchor)

    def measure(self, config: DecodeConfig, study: optuna.Study, wall_tokens_per_s: float = 0.0,
                number: int | None = None, eval_time_s: float = math.inf) -> SpeedEstimate:
        t0 = time.perf_counter()
        walls: dict[str, list[float]] = {"trial": [], "ref": []}
        use = 1 if self.clock == "cpu" else 0

        def run(config: DecodeConfig, kind: str) -> tuple[float, int]:
            wall, cpu, tokens = self.decode(config)
            walls[kind].append(wall)
            return (wall, cpu)[use], tokens

        trial_times, ref_times, tokens = interleave(lambda: run(config, "trial"), lambda: run(self.reference, "ref")[0],
                                                    self.rule, self.rule.budget * eval_time_s,
                                                    elapsed=lambda: time.perf_counter() - t0)
        anchor = self.anchor(study, ref_times, number)
        est = estimate(trial_times, ref_times, tokens, anchor, self.rule)
        detail = {**est.detail, "clock": self.clock, "trial_walls": walls["trial"], "ref_walls": walls["ref"],
                  "reference": self.reference_name, "probe_items": len(self.prompts),
                  "batch_size": self.evaluator.batch_size, **({"compile": True} if self.compile else {}),
                  "rule": self.rule.describe(self.reference_name, anchor, self.clock),
                  "elapsed_s": time.perf_counter() - t0}
        return SpeedEstimate(**{**est.__dict__, "overhead_s": sum(walls["trial"]) + sum(walls["ref"]),
                                "detail": detail, "compile": self.compile})


def timing_reference(spec: StudySpec) -> str:
    """The reference every trial is timed against: the cheapest-looking streaming reference (early exit on, then the
    smallest window: the paper's setting in the built-in specs), as its passes are the fixed cost of every trial's
    timing and it runs the same code path as the trials; the baseline when no reference streams."""
    streaming = [(ref, spec.reference_config(ref)) for ref in spec.references]
    streaming = [(ref, cfg) for ref, cfg in streaming if cfg.mode == "streaming"]
    if not streaming:
        return spec.constraint.baseline
    window = {ref.name: cfg.window if cfg.window is not None else math.inf for ref, cfg in streaming}
    best = min(streaming, key=lambda rc: (not rc[1].early_exit, window[rc[0].name]))
    return best[0].name


def decode_clock(model: Any) -> str:
    """The clock a decode is timed on: "cpu", the decoding thread's CPU time, when one CPU thread decodes (other
    processes taking turns on the cores, the wall clock's main noise there, don't add to it); "wall" on a GPU or
    with several threads (whose spin-waits count as CPU time)."""
    import torch

    device = next(iter(model.parameters())).device if hasattr(model, "parameters") else None
    return "cpu" if (device is None or device.type == "cpu") and torch.get_num_threads() == 1 else "wall"


def machine_label(spec: StudySpec, model: Any) -> str:
    """What a per-machine record is kept for: the hardware, torch and the model."""
    from ..base import hardware

    device = next(iter(model.parameters())).device if hasattr(model, "parameters") else None
    hw = hardware.describe(device)
    return f"{hardware.summary(hw)} · torch {hw['torch']} · {spec.model}"


def timer_for(spec: StudySpec, evaluator: Any, items: Sequence[Any], rule: TimingRule = TimingRule()) -> Timer:
    """A ProbeTimer for an evaluator that decodes (it holds a model); a WallTimer for one that replays results."""
    if getattr(evaluator, "model", None) is None or not items:
        return WallTimer()
    name = timing_reference(spec)
    # At least one full batch of the study's batch size: a probe of 2 prompts at --batch-size 32 would time batch 2,
    # another cost regime on a GPU than the one the study serves at.
    probe = list(items[: max(1, rule.probe_items, getattr(evaluator, "batch_size", 1))])
    clock = decode_clock(evaluator.model)
    return ProbeTimer(evaluator, probe, spec.reference_config(spec.reference(name)), name,
                      replace(rule, probe_items=len(probe)).for_clock(clock), machine_label(spec, evaluator.model),
                      clock)
