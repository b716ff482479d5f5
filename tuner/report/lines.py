"""A trial and a study in one readable line each: for logs, progress and MLflow run descriptions."""

from __future__ import annotations

from decoder.config import KNOBS

from ..storage.record import TrialRecord
from ..verdict.constraint import Constraint

# What a line shows of a trial's config: its mode and the knobs a study may search.
SHOWN_KNOBS = {"mode", *(name for name, knob in KNOBS.items() if knob.search is not None)}


def trial_line(trial: TrialRecord, finished: int | None = None, budget: int | None = None) -> str:
    """Number, state, knobs, accuracy with its CI, the paired drop's upper bound, tokens/s, items used, and why it
    stopped."""
    m = trial.metrics
    config = trial.config or {}
    ref = trial.reference
    parts = [f"trial {trial.number}" + (f" ({ref})" if ref else "") + f" {trial.state.name}"]
    if finished is not None and budget:
        parts[0] += f" [{finished}/{budget}]"
    mode = config.get("mode")
    knobs = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items()
                     if k in SHOWN_KNOBS and (k == "mode" or mode in KNOBS[k].modes))  # the knobs its mode reads
    if knobs:
        parts.append(knobs)
    if m.accuracy is not None:
        ci = (f" [95% CI {m.accuracy_ci_low:.1%}–{m.accuracy_ci_high:.1%}]"
              if m.accuracy_ci_low is not None and m.accuracy_ci_high is not None else "")
        parts.append(f"accuracy {m.accuracy:.1%}{ci}")
    if m.drop is not None and m.drop_upper is not None and not ref:
        parts.append(f"drop {100 * m.drop:.1f} pts (upper {100 * m.drop_upper:.1f})")
    if m.tokens_per_s is not None:
        parts.append(f"{m.tokens_per_s:.1f} tokens/s")
    if m.n is not None:
        parts.append(f"{m.n} items")
    if m.race_verdict:
        parts.append(str(m.race_verdict))
    if trial.duplicate_of is not None:
        parts.append(f"repeat of trial {trial.duplicate_of}")
    if trial.repeats_avoided:
        parts.append(f"{trial.repeats_avoided} repeated proposal(s) replaced")
    return " · ".join(parts)


def study_line(study_name: str, task: str, model: str, trials: int, constraint: Constraint) -> str:
    """The study run's description on its MLflow page: what was tuned, the promise, where to look."""
    c = constraint
    return (f"dtune study {study_name}: {task} on {model}, {trials} trials maximising accuracy and tokens/s while "
            f"losing at most {c.max_drop:g} accuracy points against {c.baseline} (one-sided {c.confidence:.0%} bound "
            "of the paired drop). Each nested run is a trial; its description gives its state, knobs, accuracy with "
            "its CI, paired drop, tokens/s and items used. Artifacts: pareto.html (interactive, log speed axis), "
            "pareto.png, front.json (the front and the knee that export --pick knee takes), trials.csv/json; "
            "exported profiles under profiles/, registered ones under registry/.")
