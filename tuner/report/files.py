"""A study's report: summary metrics and the artifact files a reviewer reads (trials table, front, plots).

Built from TrialPoints alone, so the tracker only uploads what this writes, and `show` or a test can build the same
files without MLflow.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..base.errors import one_line
from ..verdict.pareto import TrialPoint, finite, hypervolume_2d, pareto_front, pick_knee
from .plots import ci_text, fmt_params, pareto_figure, save_pareto_png

_log = logging.getLogger("tuner.tracking")


def study_metrics(points: Iterable[TrialPoint]) -> dict[str, float]:
    """Counts by state, the feasible front's size and best values, and its hypervolume (vs the worst corner of
    all complete points), for the parent run's metrics."""
    pts = list(points)
    front = pareto_front(pts)
    complete = [p for p in pts if p.state == "COMPLETE"]
    out: dict[str, float] = {
        "n_complete": len(complete),
        "n_pruned": sum(p.state == "PRUNED" for p in pts),
        "n_failed": sum(p.state == "FAIL" for p in pts),
        "n_feasible": sum(p.feasible for p in complete),
        "front_size": len(front),
        "n_speed_noisy": sum(bool(p.speed_noisy) for p in pts),  # trials timed on a machine too busy to trust
    }
    if front:
        out["best_accuracy"] = max(p.accuracy for p in front)
        out["best_tokens_per_s"] = max(p.tokens_per_s for p in front)
    measured = [p for p in complete if finite(p.accuracy) and finite(p.tokens_per_s)]
    if measured:
        ref = (min(p.accuracy for p in measured), min(p.tokens_per_s for p in measured))
        out["hypervolume"] = hypervolume_2d(front, ref)
    return out


def jsonable(value: Any) -> Any:
    """NaN/inf -> None so trials.json stays strict JSON (a failed trial has NaN objectives)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: None empty, containers as sorted JSON, anything else as is."""
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def write_study_files(
    folder: Path, points: list[TrialPoint], title: str, metrics: dict[str, float],
    accuracy_scale: float | None = None,
) -> None:
    """Write each artifact independently so one failure (say, a plotting bug) does not cost the others."""
    front = pareto_front(points)
    on_front = {p.number for p in front}
    rows = [jsonable({**p.to_dict(), "on_front": p.number in on_front}) for p in points]

    def trials_csv(path: Path) -> None:
        param_names = sorted({str(k) for p in points for k in p.params})
        base = [
            "number",
            "label",
            "state",
            "feasible",
            "on_front",
            "accuracy",
            "tokens_per_s",
            "nfe",
            "ci_low",
            "ci_high",
            "n",
            "drop",
            "drop_upper",
            "speed_spread",
            "speed_noisy",
            "tokens_per_s_low",
            "tokens_per_s_high",
        ]
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(base + [f"param.{n}" for n in param_names])
            for r in rows:
                params = {str(k): v for k, v in r["params"].items()}
                writer.writerow(
                    [csv_cell(r[c]) for c in base] + [csv_cell(params.get(n)) for n in param_names]
                )

    def front_json(path: Path) -> None:
        knee = pick_knee(front, accuracy_scale).number if front else None
        doc = {
            "title": title,
            "knee_trial": knee,
            "hypervolume": metrics.get("hypervolume"),
            "front": [jsonable(p.to_dict()) for p in front],
            "table": front_table(front),
        }
        path.write_text(json.dumps(doc, indent=2, default=str))

    writers: dict[str, Callable[[Path], Any]] = {
        "trials.csv": trials_csv,
        "trials.json": lambda path: path.write_text(json.dumps(rows, indent=2, default=str)),
        "front.json": front_json,
        "pareto.html": lambda path: pareto_figure(points, front, title).write_html(
            str(path), include_plotlyjs=True
        ),
        "pareto.png": lambda path: save_pareto_png(points, front, path, title),
    }
    for name, write in writers.items():
        try:
            write(folder / name)
        except Exception as exc:  # noqa: BLE001 - a broken artifact must not stop the rest or the study
            (folder / name).unlink(missing_ok=True)
            _log.warning("MLflow tracking: could not build %s, skipped: %s", name, one_line(exc, with_type=True, limit=300))


def front_table(front: Sequence[TrialPoint]) -> list[dict[str, Any]]:
    """One JSON-serialisable row per front point, in front order, for rich tables and MLflow logging.

    Accuracy and CI are in percent (what people read); numbers stay numeric so tables can sort them.
    """
    rows = []
    for p in front:
        rows.append(
            {
                "trial": p.number,
                "label": p.label or "",
                "accuracy_pct": round(100 * p.accuracy, 2),
                "ci_pct": ci_text(p),
                "tokens_per_s": round(p.tokens_per_s, 1),
                "speed_spread_pct": round(100 * p.speed_spread, 1) if finite(p.speed_spread) else None,
                "speed_noisy": bool(p.speed_noisy),
                "nfe": round(p.nfe, 2) if finite(p.nfe) else None,
                "items": p.n,
                "drop_pct": round(100 * p.drop, 2) if finite(p.drop) else None,
                "drop_upper_pct": round(100 * p.drop_upper, 2) if finite(p.drop_upper) else None,
                "params": fmt_params(p.params),
            }
        )
    return rows
