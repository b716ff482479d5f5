"""tuner.study.timing: the speed estimator on synthetic timings with injected load and stalls (fast, deterministic), then
the probe timer on the bundled tiny model and the robust figure in the report files and `show`'s cells."""

from __future__ import annotations

import csv
import itertools
import math
import random

import optuna
import pytest
import torch
from helpers import MODEL
from scipy.stats import spearmanr

from tuner.cli.common import format_speed
from tuner.report.files import study_metrics, write_study_files
from tuner.storage.record import StudyRecord
from tuner.study.spec import load_spec
from tuner.study.timing import (
    SpeedEstimate,
    TimingRule,
    WallTimer,
    estimate,
    interleave,
    machine_anchor,
    pass_ratios,
    record_machine_anchor,
    settled,
    spread,
    timer_for,
    timing_reference,
)
from tuner.verdict.pareto import TrialPoint

TOKENS = 80  # answer tokens a configuration produces on the probe
REF_S = 0.10  # the reference's quiet pass time


def truth(quiet_s: float) -> float:
    return TOKENS / quiet_s * 1.0


def test_a_steady_load_cancels_in_the_ratio():
    """Three times slower machine, both configurations alike: the figure is the quiet one, exactly."""
    est = estimate([0.3 * 3] * 3, [REF_S * 3] * 4, TOKENS, anchor_s=REF_S)
    assert est.tokens_per_s == pytest.approx(truth(0.3))
    assert est.ratio == pytest.approx(3.0) and est.spread == pytest.approx(0.0)
    assert est.load == pytest.approx(3.0) and not est.noisy
    assert est.low == pytest.approx(est.tokens_per_s) == pytest.approx(est.high)


def test_a_stall_in_one_trial_pass_is_ignored_and_a_single_figure_is_not():
    trial = [0.2, 0.2, 0.8, 0.2, 0.2]  # the third pass stalled for 0.6 s
    est = estimate(trial, [REF_S] * 6, TOKENS, anchor_s=REF_S)
    assert est.tokens_per_s == pytest.approx(truth(0.2))
    assert est.spread == pytest.approx(0.0)  # IQR of [1, 1, 1, 1, 4] x ratio: one outlier in five moves nothing
    mean_figure = TOKENS / (sum(trial) / len(trial))
    assert mean_figure < 0.65 * truth(0.2)


def test_a_stall_in_one_reference_pass_is_ignored():
    """Neighbours 5x apart: the faster one is taken, so one slow reference pass costs nothing (with their mean it
    would make two trial passes look 3x faster)."""
    est = estimate([0.2] * 4, [REF_S, REF_S, REF_S * 5, REF_S, REF_S], TOKENS, anchor_s=REF_S)
    assert pass_ratios([0.2] * 4, [REF_S, REF_S, REF_S * 5, REF_S, REF_S]) == pytest.approx([2.0] * 4)
    assert est.tokens_per_s == pytest.approx(truth(0.2))


def test_load_drifting_from_pass_to_pass_costs_a_few_percent():
    """Load that grows 10% per pass (a job starting beside the study): the geometric mean of the neighbours
    cancels it, where the faster neighbour alone would be 10% off."""
    loads = [1.1 ** i for i in range(11)]
    ref = [REF_S * loads[2 * i] for i in range(6)]
    trial = [0.3 * loads[2 * i + 1] for i in range(5)]
    est = estimate(trial, ref, TOKENS, anchor_s=REF_S)
    assert est.tokens_per_s == pytest.approx(truth(0.3))
    single = TOKENS / trial[-1]  # the wall-clock figure of a pass taken when the load had grown
    assert single < 0.7 * truth(0.3)


def test_spread_and_the_noisy_flag():
    rule = TimingRule(noisy_spread=0.15)
    quiet = estimate([0.2, 0.201, 0.199], [REF_S] * 4, TOKENS, REF_S, rule)
    noisy = estimate([0.2, 0.35, 0.12, 0.28, 0.2], [REF_S] * 6, TOKENS, REF_S, rule)
    assert quiet.spread < 0.01 and not quiet.noisy
    assert noisy.spread > 0.15 and noisy.noisy
    assert noisy.low < noisy.tokens_per_s <= noisy.high
    assert spread([1.0]) == 0.0
    with pytest.raises(ValueError, match="one more reference pass"):
        pass_ratios([0.1, 0.1], [0.1, 0.1])


class Clock:
    """A synthetic machine: each pass takes its quiet time x the load of the moment, plus a stall on the passes
    listed in `stalls` (by pass index, counting every pass in order)."""

    def __init__(self, trial_s: float, load: float = 1.0, stalls: dict[int, float] | None = None,
                 jitter: float = 0.0, seed: int = 0):
        self.trial_s, self.load, self.stalls, self.jitter = trial_s, load, stalls or {}, jitter
        self.rng, self.n = random.Random(seed), 0

    def _take(self, quiet: float) -> float:
        t = quiet * self.load * (1 + self.jitter * self.rng.random()) + self.stalls.get(self.n, 0.0)
        self.n += 1
        return t

    def trial(self) -> tuple[float, int]:
        return self._take(self.trial_s), TOKENS

    def ref(self) -> float:
        return self._take(REF_S)


def test_interleave_pays_two_passes_when_quiet_and_more_when_a_pass_stalls():
    rule = TimingRule(min_passes=2, max_passes=5, settle_spread=0.05)
    quiet = Clock(0.2, load=2.0)
    trial, ref, tokens = interleave(quiet.trial, quiet.ref, rule)
    assert (len(trial), len(ref), tokens) == (2, 3, TOKENS)
    stalled = Clock(0.2, load=2.0, stalls={3: 0.5})  # passes: R0 T0 R1 T1 ...: the second trial pass stalls
    trial, ref, _ = interleave(stalled.trial, stalled.ref, rule)
    assert len(trial) >= 3
    assert estimate(trial, ref, TOKENS, REF_S, rule).tokens_per_s == pytest.approx(truth(0.2))


def test_interleave_stops_at_the_maximum_or_when_the_budget_is_spent():
    rule = TimingRule(min_passes=2, max_passes=4, settle_spread=0.01)
    noisy = Clock(0.2, jitter=1.0, seed=3)
    trial, ref, _ = interleave(noisy.trial, noisy.ref, rule)
    assert len(trial) == 4 and len(ref) == 5
    noisy = Clock(0.2, jitter=1.0, seed=3)
    trial, _, _ = interleave(noisy.trial, noisy.ref, rule, budget_s=0.1)  # spent after the minimum
    assert len(trial) == 2
    assert settled(2, 0.5, rule, spent_s=1.0, budget_s=0.5)
    assert not settled(1, 0.0, rule)
    assert not settled(2, 0.5, rule, spent_s=0.1, budget_s=0.5) and settled(4, 0.5, rule)


def test_on_the_cpu_clock_one_trial_pass_suffices_when_the_reference_passes_around_it_agree():
    """R T R: the two reference passes are the same configuration timed just before and just after the trial pass,
    so their disagreement is the clock's noise at that moment; a pass more is taken only when they disagree."""
    rule = TimingRule(max_passes=5, settle_spread=0.05).for_clock("cpu")
    assert rule.min_passes == 1 and TimingRule().for_clock("wall").min_passes == 2
    quiet = Clock(0.2, load=1.3)
    trial, ref, _ = interleave(quiet.trial, quiet.ref, rule)
    assert (len(trial), len(ref)) == (1, 2)
    est = estimate(trial, ref, TOKENS, REF_S, rule)
    assert est.tokens_per_s == pytest.approx(truth(0.2)) and est.spread == pytest.approx(0.0, abs=1e-12)
    # The second reference pass runs 10% slow (a shared cache, a busy sibling): the single pass can't be trusted.
    disturbed = Clock(0.2, load=1.3, stalls={2: 0.1 * REF_S * 1.3})
    trial, ref, _ = interleave(disturbed.trial, disturbed.ref, rule)
    assert len(trial) >= 2
    one = estimate(trial[:1], ref[:2], TOKENS, REF_S, rule)
    assert one.spread == pytest.approx(0.1 / math.sqrt(1.1), rel=1e-9)  # (t/R0 - t/R1) / (t / sqrt(R0 R1))
    # Against the undisturbed reference pass the figure is the truth, against the slow one 1.1x too fast; the
    # figure itself is the geometric mean between them.
    assert (one.low, one.tokens_per_s, one.high) == pytest.approx(
        (truth(0.2), truth(0.2) * math.sqrt(1.1), truth(0.2) * 1.1), rel=1e-9)


def test_trials_timed_under_changing_load_and_stalls_keep_their_order():
    """The property the study needs (issue 16): 16 configurations 1.2x-40x apart, each timed at its own random
    background load (1x-4x) with random stalls; the robust figure ranks them as their quiet speeds do and never
    inverts a pair 2x apart, where one wall-clock pass per trial does both."""
    rng = random.Random(16)
    quiet = [0.05 * 1.27 ** i for i in range(16)]
    rule = TimingRule()
    robust, single = [], []
    for i, q in enumerate(quiet):
        load = rng.uniform(1.0, 4.0)
        stalls = {n: rng.uniform(0.2, 1.0) * q for n in range(20) if rng.random() < 0.15}
        clock = Clock(q, load=load, stalls=stalls, jitter=0.05, seed=i)
        trial, ref, tokens = interleave(clock.trial, clock.ref, rule)
        robust.append(estimate(trial, ref, tokens, REF_S, rule).tokens_per_s)
        single.append(TOKENS / (q * rng.uniform(1.0, 4.0) + (rng.random() < 0.15) * q))
    speeds = [TOKENS / q for q in quiet]

    def inversions(measured: list[float]) -> int:
        return sum(1 for a, b in itertools.combinations(range(16), 2)
                   if speeds[a] >= 2 * speeds[b] and measured[a] <= measured[b])

    assert spearmanr(speeds, robust).statistic > 0.98 and inversions(robust) == 0
    assert spearmanr(speeds, single).statistic < spearmanr(speeds, robust).statistic and inversions(single) > 0
    errors = sorted(abs(r / s - 1) for r, s in zip(robust, speeds, strict=True))
    assert errors[len(errors) // 2] < 0.05 and errors[-1] < 0.2  # in the quiet machine's tokens/s


def test_the_timing_reference_is_the_cheapest_streaming_reference():
    spec = load_spec("arith")
    assert timing_reference(spec) == "paper"  # early exit and the smallest window
    only_vanilla = load_spec("arith", ["references=[{name: vanilla, mode: vanilla, steps: 128}]"])
    assert timing_reference(only_vanilla) == "vanilla"


def test_an_evaluator_without_a_model_keeps_the_figure_it_replays():
    est = WallTimer().measure(None, None, 123.0)  # type: ignore[arg-type]
    assert est.method == "wall" and est.tokens_per_s == 123.0
    assert est.metrics(123.0) == {"tokens_per_s": 123.0, "tokens_per_s_wall": 123.0, "speed_method": "wall",
                                  "speed_noisy": False}
    assert isinstance(timer_for(load_spec("arith"), object(), [1, 2]), WallTimer)


# ------------------------------------------------------------------------------------ on the tiny model
@pytest.fixture(scope="module")
def tiny():
    from decoder import load_model
    from tuner.app.context import load_task
    from tuner.study.evaluate import Evaluator

    spec = load_spec("arith", ["decode.gen_length=64", "validation_size=8",
                               "references=[{name: vanilla, mode: vanilla, steps: 32}, "
                               "{name: paper, mode: streaming, window: 32, threshold: 0.9, alpha: 0.3, "
                               "early_exit: true}]", f"model={MODEL}"])
    model, tok = load_model(spec.model)
    task = load_task(spec, None)
    return spec, Evaluator(model, tok, task, batch_size=4), task.load("validation")[:8]


@pytest.fixture
def restore_torch_threads():
    """Tests that pin torch's thread count leave it as they found it for the rest of the session."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_probe_timer_on_the_tiny_model_ranks_vanilla_below_streaming_and_keeps_its_rule(tiny, tmp_path, monkeypatch,
                                                                                       restore_torch_threads):
    monkeypatch.setenv("DTUNE_SPEED_CACHE", str(tmp_path / "anchors.json"))
    spec, evaluator, items = tiny
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/t.db", directions=["maximize", "maximize"])
    # The clock is chosen when the timer is made: CPU time only for a single decoding thread (CI's pytest does not
    # set OMP_NUM_THREADS, so the fixture pins one thread rather than rely on the environment).
    torch.set_num_threads(2)
    assert timer_for(spec, evaluator, items).clock == "wall"
    torch.set_num_threads(1)
    timer = timer_for(spec, evaluator, items)
    vanilla = timer.measure(spec.reference_config(spec.reference("vanilla")), study, 0.0, 0)
    anchor = StudyRecord(study).speed_anchor
    # The probe is one full batch of the study's batch size (4 here), so a trial is timed at the batch it runs at.
    assert anchor.reference == "paper" and anchor.probe == [it.id for it in items[:4]] and anchor.trial == 0
    fast = timer.measure(spec.config_for({"window": 16, "threshold": 0.7, "alpha": 0.3, "early_exit": True}),
                         study, 0.0, 1)
    assert StudyRecord(study).speed_anchor == anchor  # set once, by the first trial timed
    assert vanilla.method == fast.method == "probe-ratio"
    assert fast.tokens_per_s > 2 * vanilla.tokens_per_s
    assert vanilla.ratio > 2  # vanilla's 32 forwards per block of 32 against the reference's few
    assert "median over passes" in fast.detail["rule"] and fast.detail["probe_items"] == 4
    assert fast.detail["batch_size"] == 4
    # One decoding thread when the timer was made: passes are timed by its CPU time, the wall times kept beside.
    assert fast.detail["clock"] == "cpu" and "CPU time" in fast.detail["rule"]
    assert len(fast.detail["trial_walls"]) == len(fast.detail["trial_times"])
    assert fast.overhead_s == pytest.approx(sum(fast.detail["trial_walls"]) + sum(fast.detail["ref_walls"]))
    m = fast.metrics(999.0)
    # One trial pass at least on the CPU clock (R T R), more when its two reference passes disagree.
    assert timer.rule.min_passes == 1 and "passes 1-5" in fast.detail["rule"]
    assert m["tokens_per_s_wall"] == 999.0 and m["timing_passes"] >= 1 and m["timing_overhead_s"] > 0
    assert len(fast.detail["ref_times"]) == m["timing_passes"] + 1
    assert 0 <= m["speed_spread"] < math.inf and isinstance(m["speed_noisy"], bool)
    # A later study on this machine starts from the fastest reference pass the machine has shown, so a study
    # begun while the machine is busy reports the quiet scale.
    recorded = machine_anchor(timer.machine_key)
    assert recorded is not None and recorded <= anchor.time_s
    record_machine_anchor(timer.machine_key, recorded / 10, {})  # as if a quieter moment had been seen
    later = optuna.create_study(storage=f"sqlite:///{tmp_path}/t.db", directions=["maximize", "maximize"])
    timer.measure(spec.reference_config(spec.reference("paper")), later, 0.0, 0)
    assert StudyRecord(later).speed_anchor.time_s == pytest.approx(recorded / 10)
    assert StudyRecord(later).speed_anchor.source == "this machine's record"


def test_the_machine_record_keeps_the_fastest_pass_and_can_be_switched_off(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "anchors.json"
    monkeypatch.setenv("DTUNE_SPEED_CACHE", str(path))
    assert machine_anchor("k") is None
    record_machine_anchor("k", 0.5, {"machine": "m"})
    record_machine_anchor("k", 0.7, {"machine": "m"})  # slower: kept out
    assert machine_anchor("k") == 0.5
    record_machine_anchor("k", 0.4, {"machine": "m"})
    assert machine_anchor("k") == 0.4 and [p.name for p in path.parent.iterdir()] == ["anchors.json"]
    path.write_text("not json")
    assert machine_anchor("k") is None
    record_machine_anchor("k", 0.3, {})  # a broken record is replaced by dtune's own, not fatal
    assert machine_anchor("k") == 0.3
    monkeypatch.setenv("DTUNE_SPEED_CACHE", "")
    record_machine_anchor("k", 0.1, {})
    assert machine_anchor("k") is None


# ------------------------------------------------------------------------------------ where it is shown
def test_report_files_and_show_cells_carry_the_robust_figure_and_its_spread(tmp_path):
    points = [TrialPoint(0, 0.9, 100.0, label="vanilla", speed_spread=0.02, speed_noisy=False,
                         tokens_per_s_low=99.0, tokens_per_s_high=101.0),
              TrialPoint(1, 0.88, 900.0, speed_spread=0.4, speed_noisy=True, tokens_per_s_low=700.0,
                         tokens_per_s_high=1200.0)]
    metrics = study_metrics(points)
    assert metrics["n_speed_noisy"] == 1
    write_study_files(tmp_path, points, "t", metrics)
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [r["speed_noisy"] for r in rows] == ["False", "True"] and rows[1]["speed_spread"] == "0.4"
    html = (tmp_path / "pareto.html").read_text()
    assert "load-corrected" in html and "noisy" in html and '"error_x"' in html
    assert (tmp_path / "pareto.png").stat().st_size > 0
    assert format_speed(points[1]) == "900.0 ±20% noisy" and format_speed(points[0]) == "100.0 ±1%"
    assert format_speed(TrialPoint(2, 0.5, 12.0)) == "12.0"
    assert SpeedEstimate(1.0, "wall").metrics() == {"tokens_per_s": 1.0, "speed_method": "wall", "speed_noisy": False}


def test_a_study_at_batch_16_is_timed_on_a_batch_of_16(tiny, tmp_path, monkeypatch, restore_torch_threads):
    """The probe is one full batch of the study's batch size (not 2 prompts at any batch size): the figure a study at
    --batch-size 16 optimises is measured at batch 16, and the trial records it."""
    from tuner.app.context import load_task
    from tuner.study.evaluate import Evaluator

    monkeypatch.setenv("DTUNE_SPEED_CACHE", str(tmp_path / "anchors.json"))
    spec, small, _ = tiny
    items = load_task(spec, None).load("validation")[:20]
    evaluator = Evaluator(small.model, small.tokenizer, small.task, batch_size=16)
    torch.set_num_threads(1)
    timer = timer_for(spec, evaluator, items)
    assert len(timer.prompts) == 16
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/t.db", directions=["maximize", "maximize"])
    speed = timer.measure(spec.reference_config(spec.reference("paper")), study, 0.0, 0)
    assert speed.detail["batch_size"] == 16 and speed.detail["probe_items"] == 16
    assert evaluator.chunk_for(50) == 64 and evaluator.chunk_for(16) == 16  # chunks of whole batches
