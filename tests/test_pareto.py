"""Pareto maths and pictures on hand-made points (no Optuna, no MLflow)."""

from __future__ import annotations

import math
import random

import pytest

from tuner.report.files import front_table
from tuner.report.plots import pareto_figure, pareto_png_figure, save_pareto_png
from tuner.verdict.pareto import TrialPoint, hypervolume_2d, pareto_front, pick_fastest, pick_knee


def pt(number: int, acc: float, tps: float, **kw) -> TrialPoint:
    return TrialPoint(number=number, accuracy=acc, tokens_per_s=tps, **kw)


@pytest.fixture
def mixed() -> list[TrialPoint]:
    """Front = trials 0, 1, 7; everything else is excluded for one stated reason."""
    return [
        pt(0, 0.80, 10.0, label="vanilla", params={"window": 1}),
        pt(1, 0.70, 20.0, params={"window": 4, "threshold": 0.9}, nfe=12.5, ci_low=0.65, ci_high=0.75),
        pt(2, 0.60, 15.0),  # dominated by 1
        pt(3, 0.90, 30.0, feasible=False),  # would dominate everything, but breaks the constraint
        pt(4, 0.95, 40.0, state="PRUNED"),  # partial numbers never count
        pt(5, 0.70, 20.0),  # exact duplicate of 1: the lower number (1) is kept
        pt(6, math.nan, math.nan, state="FAIL"),
        pt(7, 0.50, 30.0, label="fast-dllm"),
        pt(8, 0.65, 20.0),  # same speed as 1, less accurate: dominated
        pt(9, 0.99, 99.0, state="RUNNING"),
    ]


def test_front_excludes_dominated_infeasible_pruned_and_duplicates(mixed):
    front = pareto_front(mixed)
    assert [p.number for p in front] == [0, 1, 7]
    assert [p.tokens_per_s for p in front] == sorted(p.tokens_per_s for p in front)


def test_front_does_not_depend_on_input_order(mixed):
    expected = [p.number for p in pareto_front(mixed)]
    rng = random.Random(0)
    for _ in range(5):
        shuffled = mixed[:]
        rng.shuffle(shuffled)
        assert [p.number for p in pareto_front(shuffled)] == expected


def test_front_of_nothing_usable_is_empty():
    assert pareto_front([]) == []
    assert pareto_front([pt(0, 0.9, 9.0, state="PRUNED"), pt(1, 0.9, 9.0, feasible=False)]) == []


# A convex front (bulging towards high accuracy and high speed): the knee is trial 1.
CONVEX = [pt(0, 0.80, 10.0), pt(1, 0.78, 80.0), pt(2, 0.65, 90.0), pt(3, 0.50, 100.0)]


def test_knee_on_convex_front():
    assert pick_knee(CONVEX).number == 1
    assert pick_knee(list(reversed(CONVEX))).number == 1


def test_knee_small_and_degenerate_fronts():
    assert pick_knee([pt(4, 0.5, 5.0)]).number == 4
    # Two points both lie on the extreme-to-extreme line: the documented rule picks the more accurate one.
    assert pick_knee([pt(0, 0.6, 50.0), pt(1, 0.8, 10.0)]).number == 1
    # A straight-line front has no knee either: same rule.
    assert pick_knee([pt(0, 0.5, 30.0), pt(1, 0.6, 20.0), pt(2, 0.7, 10.0)]).number == 2
    with pytest.raises(ValueError):
        pick_knee([])


def test_knee_weighs_accuracy_against_the_allowed_drop():
    # vanilla vs a point 50x faster and half a point less accurate, under a 1-point budget
    front = [pt(0, 0.955, 40.0), pt(7, 0.950, 2000.0)]
    assert pick_knee(front).number == 0  # span-normalised, the half point weighs as much as the speed range
    assert pick_knee(front, accuracy_scale=0.01).number == 7
    # a front whose accuracy span exceeds the scale is judged as before
    assert pick_knee(CONVEX, accuracy_scale=0.01).number == 1


def test_fastest_with_min_accuracy():
    assert pick_fastest(CONVEX, 0.70).number == 1
    assert pick_fastest(CONVEX, 0.0).number == 3
    assert pick_fastest(CONVEX, 0.80).number == 0
    assert pick_fastest(CONVEX, 0.81) is None
    assert pick_fastest([], 0.0) is None


def test_hypervolume_matches_hand_computation():
    # Reference (0.40, 0). Slabs from the fastest point down:
    #   (0.50, 100): 100 * (0.50 - 0.40) = 10.0
    #   (0.65,  90):  90 * (0.65 - 0.50) = 13.5
    #   (0.78,  80):  80 * (0.78 - 0.65) = 10.4
    #   (0.80,  10):  10 * (0.80 - 0.78) =  0.2        total 34.1
    assert hypervolume_2d(CONVEX, (0.40, 0.0)) == pytest.approx(34.1)
    # Dominated points and points outside the reference box change nothing; tuples are accepted too.
    extra = [pt(9, 0.60, 50.0), pt(10, 0.30, 500.0), pt(11, 0.99, -1.0)]
    assert hypervolume_2d(CONVEX + extra, (0.40, 0.0)) == pytest.approx(34.1)
    assert hypervolume_2d([(0.8, 10.0)], (0.4, 0.0)) == pytest.approx(4.0)
    assert hypervolume_2d([], (0.0, 0.0)) == 0.0


def test_figure_has_traces_labels_and_hover(mixed):
    front = pareto_front(mixed)
    fig = pareto_figure(mixed, front, "gsm8k study")
    names = [t.name for t in fig.data]
    assert "reference" in names and any(n.startswith("Pareto front") for n in names)
    front_trace = next(t for t in fig.data if t.name.startswith("Pareto front"))
    assert front_trace.line.shape == "vh"
    assert list(front_trace.x) == [10.0, 20.0, 30.0]
    assert list(front_trace.y) == pytest.approx([80.0, 70.0, 50.0])  # accuracy in percent
    refs = next(t for t in fig.data if t.name == "reference")
    assert set(refs.text) == {"vanilla 1.0×", "fast-dllm 3.0×"}  # each reference with its speed-up
    hover = " ".join(h for t in fig.data for h in (t.hovertext or ()))
    assert "threshold=0.9" in hover and "NFE 12.5" in hover and "CI 65.0–75.0" in hover
    assert fig.layout.title.text == "gsm8k study"


def test_speed_axis_is_logarithmic_with_the_baseline_marked(mixed):
    """Speed-ups are ratios: both plots put tokens/s on a log axis, draw the baseline as a vertical line at its
    speed, and label each reference with its multiple of it; the PNG adds a speed-up axis on top."""
    fig = pareto_figure(mixed, pareto_front(mixed), "gsm8k study")
    assert fig.layout.xaxis.type == "log" and "log scale" in fig.layout.xaxis.title.text
    line = next(t for t in fig.data if t.name.startswith("baseline"))
    assert line.name == "baseline (vanilla) 10.0 tok/s" and list(line.x) == [10.0, 10.0]
    assert min(line.y) < 50.0 and max(line.y) > 95.0  # spans every plotted accuracy (pruned 95%, fast-dllm 50%)

    png = pareto_png_figure(mixed, pareto_front(mixed), "gsm8k study")
    ax = png.axes[0]
    assert ax.get_xscale() == "log"
    vlines = [ln for ln in ax.get_lines() if ln.get_label().startswith("baseline")]
    assert len(vlines) == 1 and list(vlines[0].get_xdata()) == [10.0, 10.0]
    assert {t.get_text() for t in ax.texts} == {"vanilla 1.0×", "fast-dllm 3.0×"}
    top = [a for a in ax.child_axes if "speed-up" in a.get_xlabel()]
    assert top and top[0].get_xlabel() == "speed-up vs vanilla (×)"
    # Without a baseline among the points: still a log axis, no line, plain labels.
    alone = [p for p in mixed if p.label != "vanilla"]
    fig = pareto_figure(alone, pareto_front(alone), "s")
    assert fig.layout.xaxis.type == "log" and not any(t.name.startswith("baseline") for t in fig.data)


def test_png_written(tmp_path, mixed):
    out = save_pareto_png(mixed, pareto_front(mixed), tmp_path / "sub" / "pareto.png", "gsm8k study")
    data = out.read_bytes()
    assert out.exists() and len(data) > 1000
    assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_front_table_rows(mixed):
    rows = front_table(pareto_front(mixed))
    assert [r["trial"] for r in rows] == [0, 1, 7]
    assert rows[0]["label"] == "vanilla" and rows[0]["accuracy_pct"] == 80.0
    assert rows[1]["ci_pct"] == "65.0–75.0" and rows[1]["nfe"] == 12.5
    assert rows[1]["params"] == "threshold=0.9, window=4"


def test_points_are_hashable_despite_params():
    assert len({pt(1, 0.5, 1.0, params={"a": 1}), pt(1, 0.5, 1.0, params={"a": 1})}) == 1


def test_log_ticks_are_plain_1_2_5_numbers_spanning_the_speeds():
    from tuner.report.plots import log_ticks

    assert log_ticks([150.0, 1400.0]) == [100.0, 200.0, 500.0, 1000.0, 2000.0]
    assert log_ticks([10.0, 30.0]) == [10.0, 20.0]
    assert log_ticks([12.0, 13.0]) == [10.0, 20.0]  # always two ticks at least
    assert log_ticks([]) == []
    fig = pareto_figure([pt(0, 0.8, 150.0, label="vanilla"), pt(1, 0.7, 1400.0)], [], "s")
    assert list(fig.layout.xaxis.ticktext) == ["100", "200", "500", "1000", "2000"]
