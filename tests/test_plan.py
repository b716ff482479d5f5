"""The cost plan `run` prints before its first trial (tuner.study.plan): items from the spec, the stored ledger and
the racing rungs; seconds from a probe timed on this device with the bundled model; the ETA of progress lines."""

from __future__ import annotations

import pytest

from tuner.study.plan import (
    CostPlan,
    Eta,
    Overheads,
    Probe,
    expected_items_per_trial,
    format_duration,
    format_plan,
    make_plan,
    typical_configs,
)
from tuner.study.spec import load_spec
from tuner.verdict.racing import rungs
from tuner.verdict.sequential import Design


def test_a_trial_is_expected_to_race_as_a_trial_about_the_margin_until_trials_have_run():
    spec = load_spec("arith")  # margin 5 points, discordance 6%, one-sided 95%
    assert rungs(1200, spec.race) == [150, 300, 600, 1200]
    # drops uniform over 2.5-7.5 points; bound half-widths 3.3/2.3/1.6/1.2 points at 150/300/600/1200 items: none
    # is decided at 150, 7% at 300, 27% at 600, the rest at the whole pool
    prior = expected_items_per_trial([150, 300, 600, 1200], spec.constraint)
    assert prior == pytest.approx(0.07 * 300 + 0.27 * 600 + 0.66 * 1200, abs=15) and prior == 978
    assert expected_items_per_trial([150, 300, 600, 1200], spec.constraint, [150, 150]) == prior  # still the prior
    assert expected_items_per_trial([150, 300, 600, 1200], spec.constraint, [150, 300, 1200]) == 550  # their mean
    wide = load_spec("arith", ["constraint.max_drop=20"]).constraint  # far wider than the bounds: decided early
    assert expected_items_per_trial([150, 300, 600, 1200], wide) < 400


def test_the_plan_counts_what_the_study_still_has_to_decode():
    spec = load_spec("arith")  # 30 trials, validation 1200, test 1500
    fresh = make_plan(spec, pool=1200, test_items=1500)
    assert (fresh.baseline_items, fresh.trials_left, fresh.items_per_trial) == (1200, 29, 978)
    assert fresh.test_pick_items == fresh.test_baseline_items == 1500 and fresh.test_staged is None
    assert fresh.seconds() is None and "no timed probe" in format_plan(fresh, spec)[0]
    resumed = make_plan(spec, pool=1200, test_items=1500, baseline_stored=600, trials_done=10,
                        finished_items=[150, 300, 600], test_baseline_stored=1500, design=Design())
    assert (resumed.baseline_items, resumed.trials_left, resumed.items_per_trial) == (600, 20, 350)
    assert resumed.test_baseline_items == 0  # export stored the baseline's whole split
    assert 0.5 * 1500 < resumed.test_pick_items < 1500 and "150/300/450/600/750/900/1050/1200/1350/1500" in resumed.test_staged
    probe = Probe("vanilla", 1.0, "paper", 0.02, 8)
    timed = make_plan(spec, pool=1200, test_items=1500, probe=probe)
    sec = timed.seconds()
    assert (sec.baseline, sec.trials, sec.test) == pytest.approx((1200.0, 29 * 978 * 0.02, 1500 * 0.02 + 1500 * 1.0))
    lines = format_plan(timed, spec)
    assert "1,200 items to decode" in lines[1] and "≈ 20m" in lines[1]
    assert "29 to run × ~978 items" in lines[2] and lines[-1] == "  total ≈ 55m (the study ≈ 29m, export ≈ 26m)"


def test_warm_ups_and_speed_passes_are_counted_beside_the_raced_items():
    spec = load_spec("arith")  # batch 16
    cpu = Overheads.for_study(spec, "cpu")  # R T R over a batch-sized probe, after a warm-up batch
    assert (cpu.warmup, cpu.probe, cpu.trial_passes, cpu.reference_passes, cpu.per_trial) == (16, 16, 1, 2, 64)
    assert Overheads.for_study(spec, "wall").per_trial == 16 + 16 * 5  # R T R T R
    probe = Probe("vanilla", 1.0, "paper", 0.1, 8, "cpu")
    plan = make_plan(spec, pool=1200, test_items=1500, probe=probe, overheads=cpu)
    sec = plan.seconds()
    assert plan.baseline_growths == 4 and plan.baseline_trial_left  # one warm-up per rung the ledger grows to
    assert sec.baseline == pytest.approx((1200 + 4 * 16) * 1.0 + 16 * (1 * 1.0 + 2 * 0.1))
    assert sec.trials == pytest.approx(29 * (978 + 64) * 0.1)
    assert sec.test == pytest.approx((1500 + 16) * 0.1 + (1500 + 16) * 1.0)
    lines = format_plan(plan, spec)
    assert "CPU-s/item" in lines[0] and "29 to run × (~978 raced + 64 warm-up and timing) items" in lines[2]
    stored = make_plan(spec, pool=1200, test_items=1500, baseline_stored=1200, trials_done=5,
                       test_baseline_stored=1500, probe=probe, overheads=cpu)
    assert not stored.baseline_trial_left and stored.baseline_growths == 0
    assert stored.seconds().baseline == 0 and stored.seconds().test == pytest.approx((1500 + 16) * 0.1)


def test_sampled_trials_are_priced_at_points_spread_over_the_search_space():
    spec = load_spec("arith")  # window 4 choices, threshold 0.5-0.99, alpha 0-0.7, early exit 2 choices
    points = typical_configs(spec)
    assert points == typical_configs(spec) and len(points) == 4  # the same points for a given spec
    assert sorted(str(p.window) for p in points) == ["16", "32", "64", "None"]  # each window once
    assert sorted(p.threshold for p in points) == pytest.approx([0.5 + 0.49 * (i + 0.5) / 4 for i in range(4)])
    assert sorted(p.alpha for p in points) == pytest.approx([0.7 * (i + 0.5) / 4 for i in range(4)])
    assert sorted(p.early_exit for p in points) == [False, False, True, True] and {p.mode for p in points} == {
        "streaming"}
    cpu = Overheads.for_study(spec, "cpu")  # per trial: a warm-up batch and a pass of its own (32 items), R R (32)
    probe = Probe("vanilla", 1.0, "paper", 0.1, 8, "cpu", typical_s=0.3, typical_points=4)
    plan = make_plan(spec, pool=1200, test_items=1500, probe=probe, overheads=cpu)
    assert plan.seconds().trials == pytest.approx(29 * ((978 + 32) * 0.3 + 32 * 0.1))
    assert plan.seconds().test == pytest.approx((1500 + 16) * 0.1 + (1500 + 16) * 1.0)  # the pick: the reference
    assert "the search space 0.3 CPU-s/item (mean of 4 points)" in format_plan(plan, spec)[0]
    eta = Eta(plan, started=0.0)
    assert eta.remaining_s(baseline_items=0, trials_finished=0, trial_items=0, now=0.0) == pytest.approx(
        plan.seconds().study)


@pytest.mark.slow
def test_the_probe_times_the_baseline_and_a_streaming_configuration_on_this_device(tmp_path, monkeypatch):
    from decoder import load_model
    from tuner.app.context import load_task
    from tuner.study.evaluate import Evaluator
    from tuner.study.plan import probe

    monkeypatch.setenv("DTUNE_SPEED_CACHE", str(tmp_path / "speed.json"))
    spec = load_spec("arith", ["task_options.validation_size=4", "task_options.test_size=1"])
    task = load_task(spec, None)
    evaluator = Evaluator(*load_model(spec.model, device="cpu"), task, batch_size=2)
    decoded = []
    real = evaluator.evaluate
    monkeypatch.setattr(evaluator, "evaluate", lambda items, config, **kw: decoded.append(len(items)) or real(
        items, config, **kw))
    timed = probe(spec, evaluator, task.load("validation"), n=2)
    assert (timed.baseline, timed.trial, timed.items) == ("vanilla", "paper", 2)
    assert timed.clock == "cpu"  # one CPU thread decodes here (the suite's conftest): the CPU clock, as trials
    assert timed.baseline_s > 2 * timed.trial_s > 0  # vanilla decodes every step; the streaming reference exits early
    assert decoded == [2] * 12  # the baseline, the reference, 4 points of the space: a warm-up pass, a timed one
    assert timed.typical_points == 4 and timed.typical_s > 0  # their order is the machine's, not asserted
    line = format_plan(make_plan(spec, pool=4, test_items=1, probe=timed), spec)[0]
    assert "timed on 2 validation items here: vanilla" in line
    # Timed once per machine: another worker (or `run --plan`) reads the record and decodes nothing.
    again = probe(spec, evaluator, task.load("validation"), n=2)
    assert decoded == [2] * 12 and (again.baseline_s, again.trial_s, again.typical_s) == (
        timed.baseline_s, timed.trial_s, timed.typical_s)
    assert "this machine's record of 20" in again.describe()
    # Other prompts (or batch, configurations, weights, clock) are another record: timed afresh.
    probe(spec, evaluator, task.load("validation")[2:], n=2)
    assert decoded == [2] * 24


def test_the_eta_follows_the_pace_of_the_work_done():
    plan = CostPlan(trials_left=10, pool=1000, rungs=(100, 1000), baseline_stored=0, items_per_trial=200,
                    items_per_trial_measured=False, test_total=0, test_pick_items=0, test_baseline_items=0,
                    test_staged=None, probe=Probe("vanilla", 1.0, "paper", 0.1, 4))
    eta = Eta(plan, started=0.0)
    assert eta.remaining_s(baseline_items=0, trials_finished=0, trial_items=0, now=0.0) == 1000 + 10 * 200 * 0.1
    # 500 baseline items and 2 trials (400 items) done in 540 s, as planned: 500 + 8 * 20 s left
    assert eta.remaining_s(baseline_items=500, trials_finished=2, trial_items=400, now=540.0) == pytest.approx(660)
    # the same work in twice the time: twice the time left
    assert eta.remaining_s(baseline_items=500, trials_finished=2, trial_items=400, now=1080.0) == pytest.approx(1320)
    # four trials raced over 500 items each, not the plan's 200: the six left are priced at 500
    assert eta.remaining_s(baseline_items=500, trials_finished=4, trial_items=2000, now=700.0) == pytest.approx(
        500 + 6 * 500 * 0.1)
    assert eta.line(baseline_items=1000, trials_finished=10, trial_items=2000, now=3000.0) == " · ETA 0s"
    assert [format_duration(s) for s in (5, 95, 700, 3900, 90000, None)] == ["5s", "1m 35s", "12m", "1h 05m",
                                                                             "1d 1h", "?"]
