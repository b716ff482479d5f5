"""Studies outlive upgrades: a study database written by an earlier dtune (commit 805f65e, before the typed record
and the verdict owner) reads the same today: the same trials, verdicts, front and pick."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest

from tuner.storage.record import StudyRecord
from tuner.study.points import trial_points
from tuner.study.spec import load_spec
from tuner.verdict.pareto import pareto_front
from tuner.verdict.selection import pick

FIXTURES = Path(__file__).parent / "fixtures" / "studies"


def test_a_study_written_before_the_record_reads_the_same(tmp_path):
    expected = json.loads((FIXTURES / "arith-805f65e.json").read_text())
    db = tmp_path / "old.db"
    shutil.copy(FIXTURES / "arith-805f65e.db", db)
    study = optuna.load_study(study_name=expected["study"], storage=f"sqlite:///{db}")
    spec = load_spec("arith", ["validation_size=300", "test_size=300"])
    points = trial_points(study, spec.constraint)
    assert StudyRecord(study).baseline.to_dict() == expected["baseline"]
    got = [{k: getattr(p, k) for k in expected["trials"][0]} for p in points]
    for old, new in zip(expected["trials"], got, strict=True):
        assert new == {**old, **{k: pytest.approx(old[k]) for k in ("accuracy", "tokens_per_s", "drop", "drop_upper",
                                                                       "nfe") if old[k] is not None}}
    assert [p.number for p in pareto_front(points)] == expected["front"]
    for rule, number in expected["pick"].items():
        assert pick(points, rule, spec.constraint).number == number
