"""The calibration replay (benchmarks/calibration.py) on a small synthetic grid: today's policy, the new one and the
new one with staged confirmation side by side, on the same draws, with the figures issue 28 asks for."""

from __future__ import annotations

import json
import sys

import pytest

from benchmarks import calibration


@pytest.mark.slow
def test_the_replay_reports_the_staged_confirmation_beside_both_policies(tmp_path, monkeypatch):
    grid, out = tmp_path / "grid", tmp_path / "calib.md"
    monkeypatch.setattr(sys, "argv", ["calibration", "synth", "--grid", str(grid), "--pool", "1200"])
    calibration.main()
    monkeypatch.setattr(sys, "argv", [
        "calibration", "replay", "--grid", str(grid), "--studies", "2", "--trials", "8", "--validation", "300",
        "--test", "400", "--looks", "0.25,0.5,0.75,1", "--windows", "16,32", "--thresholds", "0.9,0.97", "--alphas", "0,0.35", "--finish",
        "--out", str(out)])
    calibration.main()
    table = out.read_text()
    for row in ("| today (point estimates) |", "| new (paired bounds + racing + finishing) |",
                "| new + staged confirmation (looks at 100/200/300/400 items, obrien-fleming spending) |"):
        assert row in table
    assert "baseline exported" in table and "test items per export (share of the split)" in table
    studies = json.loads(out.with_suffix(".studies.json").read_text())
    assert sorted(o["policy"] for o in studies) == ["new", "new", "staged", "staged", "today", "today"]
    for seed in (0, 1):
        new, staged = (next(o for o in studies if o["policy"] == p and o["seed"] == seed) for p in ("new", "staged"))
        assert staged["picked"] == new["picked"]  # one pick, two confirmations of it
        if new["picked"] is not None:
            assert new["test_items"] == 400 and staged["test_items"] in (100, 200, 300, 400)
            assert not (staged["confirmed"] and staged["violates"] != new["violates"])


@pytest.mark.slow
def test_the_replay_of_the_agreement_constraint_judges_by_disagreement(tmp_path, monkeypatch):
    """Labels hidden: the studies judge by the disagreement with vanilla's answers, the truth is the disagreement
    on fresh problems, and a confirmed pick's accuracy drop there is never above its disagreement."""
    grid, out = tmp_path / "grid", tmp_path / "agree.md"
    monkeypatch.setattr(sys, "argv", ["calibration", "synth", "--grid", str(grid), "--pool", "1200"])
    calibration.main()
    monkeypatch.setattr(sys, "argv", [
        "calibration", "replay", "--grid", str(grid), "--studies", "2", "--trials", "8", "--validation", "300",
        "--test", "400", "--looks", "0.25,0.5,0.75,1", "--windows", "16,32", "--thresholds", "0.9,0.97",
        "--alphas", "0,0.35", "--metric", "agreement", "--max-drop", "10", "--out", str(out)])
    calibration.main()
    studies = json.loads(out.with_suffix(".studies.json").read_text())
    assert sorted(o["policy"] for o in studies) == ["new", "new", "staged", "staged"]  # no agreement "today"
    g = calibration.replace(calibration.load_grid(str(grid)), metric="agreement")
    for o in studies:
        if o["picked"] is not None:
            fresh = calibration.draw(1000 + o["seed"], 300, 400, g.pool).fresh
            assert o["true_drop"] == pytest.approx(calibration.true_drop(g, o["picked"], fresh))  # the disagreement
            assert calibration.accuracy_drop(g, o["picked"], fresh) <= o["true_drop"] + 1e-12
