"""`python -m tuner run --compile`: the study decodes on the fused path and every timed trial records it."""

from __future__ import annotations

import os

import pytest
from helpers import load, small_args

from tuner.cli import main
from tuner.storage.record import TrialMetrics, read_trials


def test_a_compiled_run_records_the_switch_with_every_timing(tmp_path):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["run", *small_args(tmp_path, 2), "--no-progress", "--accept-low-power", "--compile"]) == 0
    finally:
        os.chdir(cwd)
    done = [t for t in read_trials(load(tmp_path, 2)) if t.metrics]  # a reference still queued has none
    assert len(done) == 2 and all(t.metrics.compile for t in done)
    assert all(t.timing.get("compile") is True for t in done if t.timing)


@pytest.mark.parametrize("stored", [{}, {"tokens_per_s": 3.0}])
def test_an_eager_metric_record_keeps_the_keys_it_had(stored):
    """False is not stored: records timed eagerly (and studies written before the flag) keep their keys."""
    metrics = TrialMetrics.read(stored)
    assert metrics.compile is False and metrics.to_dict() == stored
    assert TrialMetrics.from_dict({**stored, "compile": True}).to_dict() == {**stored, "compile": True}
