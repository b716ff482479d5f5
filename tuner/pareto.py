"""Pareto-front helpers for dtune's two objectives (accuracy and tokens/s, both maximised).

Kept free of Optuna and MLflow so the same code serves the CLI, the tracker and the exporter, and can be
tested on hand-made points. Plotly and matplotlib are imported lazily: most callers only need the maths.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import plotly.graph_objects as go

__all__ = [
    "TrialPoint",
    "front_table",
    "hypervolume_2d",
    "pareto_figure",
    "pareto_front",
    "pick_fastest",
    "pick_knee",
    "save_pareto_png",
]

# Ties in the knee distance closer than this are treated as equal, so float noise cannot flip the choice.
_TIE_EPS = 1e-12


@dataclass(frozen=True)
class TrialPoint:
    """One trial as the Pareto code sees it: two objectives plus what is needed to explain the point.

    ``params`` is excluded from hashing so points can live in sets/dict keys although dicts are unhashable.
    """

    number: int
    accuracy: float
    tokens_per_s: float
    feasible: bool = True
    state: str = "COMPLETE"
    params: dict = field(default_factory=dict, hash=False)
    label: str | None = None
    nfe: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict (used for trials.json / trials.csv)."""
        return asdict(self)


def _finite(x: Any) -> bool:
    """True for a real, finite number (numpy scalars included); None/NaN/inf/strings are not."""
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _has_objectives(p: TrialPoint) -> bool:
    return _finite(p.accuracy) and _finite(p.tokens_per_s)


def pareto_front(points: Iterable[TrialPoint]) -> list[TrialPoint]:
    """Non-dominated COMPLETE and feasible points, sorted by tokens/s ascending (so accuracy descending).

    Pruned, failed, running and infeasible trials never enter the front: a pruned trial's numbers are partial
    and an infeasible one breaks the accuracy constraint, so neither is a configuration we would ship.
    Exact duplicates (same accuracy and tokens/s) are collapsed to the lowest trial number, so the result
    does not depend on the input order; enqueued reference configs usually have the lowest numbers.
    """
    cands = [p for p in points if p.state == "COMPLETE" and p.feasible and _has_objectives(p)]
    # Sweep from the fastest point down: a point survives only if it is strictly more accurate than every
    # faster-or-equal point already seen. Sorting ties by accuracy desc then number asc makes the first
    # point of each tokens/s value the one that wins, and drops duplicates deterministically.
    cands.sort(key=lambda p: (-p.tokens_per_s, -p.accuracy, p.number))
    front: list[TrialPoint] = []
    best_acc = -math.inf
    for p in cands:
        if p.accuracy > best_acc:
            front.append(p)
            best_acc = p.accuracy
    front.reverse()
    return front


def pick_knee(front: Sequence[TrialPoint], accuracy_scale: float | None = None) -> TrialPoint:
    """The knee of a front: the point that bulges most towards the ideal corner.

    Both objectives are min-max normalised over ``front`` (so tokens/s in the thousands cannot swamp an
    accuracy fraction); the extremes then sit at (0, 1) and (1, 0) and the knee is the point with the largest
    signed distance above the line x + y = 1 joining them. Ties (including a front of two points, where both
    lie on the line, and a straight-line front) go to the more accurate point, then the lower trial number:
    dtune's brief is "faster without losing accuracy", so when the geometry does not decide we err towards
    accuracy; use :func:`pick_fastest` to trade accuracy for speed explicitly. A single point is its own knee.

    ``accuracy_scale`` (an accuracy fraction, e.g. the constraint's max_drop / 100) measures accuracy in units of
    the loss the user accepts instead of the front's own span, when that span is smaller: a feasible front of
    vanilla and a point 50x faster but 0.5 points less accurate (under a 1-point budget) then has its knee at the
    fast point, not at vanilla, as a span-normalised 0.5 points would weigh as much as the whole speed range.

    Raises ValueError on an empty front (there is nothing sensible to return).
    """
    pts = [p for p in front if _has_objectives(p)]
    if not pts:
        raise ValueError("pick_knee needs at least one point with finite accuracy and tokens/s")
    if len(pts) == 1:
        return pts[0]
    a_lo, a_hi = min(p.accuracy for p in pts), max(p.accuracy for p in pts)
    t_lo, t_hi = min(p.tokens_per_s for p in pts), max(p.tokens_per_s for p in pts)
    a_span = max(a_hi - a_lo, accuracy_scale or 0.0) or 1.0
    t_span = (t_hi - t_lo) or 1.0

    def score(p: TrialPoint) -> float:
        x = (p.tokens_per_s - t_lo) / t_span
        y = 1.0 - (a_hi - p.accuracy) / a_span  # the most accurate point at 1, as min-max puts it
        return (x + y - 1.0) / math.sqrt(2.0)

    best = pts[0]
    best_s = score(best)
    for p in pts[1:]:
        s = score(p)
        if s > best_s + _TIE_EPS or (
            abs(s - best_s) <= _TIE_EPS and (p.accuracy, -p.number) > (best.accuracy, -best.number)
        ):
            best, best_s = p, s
    return best


def pick_fastest(front: Sequence[TrialPoint], min_accuracy: float) -> TrialPoint | None:
    """Highest tokens/s among points with accuracy >= ``min_accuracy``; None when no point qualifies.

    Ties on speed go to the more accurate point, then the lower trial number, so the choice is stable.
    """
    ok = [p for p in front if _has_objectives(p) and p.accuracy >= min_accuracy]
    if not ok:
        return None
    return max(ok, key=lambda p: (p.tokens_per_s, p.accuracy, -p.number))


def hypervolume_2d(
    points: Iterable[TrialPoint | tuple[float, float]], reference: tuple[float, float]
) -> float:
    """Area dominated by ``points`` and bounded below by ``reference`` = (accuracy, tokens/s), both maximised.

    Computed over exactly the points given (dominated ones add nothing, so passing every trial is harmless;
    pass ``pareto_front(points)`` to exclude infeasible/pruned trials). Points not strictly better than the
    reference in both objectives contribute zero. Units are accuracy-fraction × tokens/s: compare values only
    between studies that share a reference.
    """
    ref_a, ref_t = reference
    xy: list[tuple[float, float]] = []
    for p in points:
        a, t = (p.accuracy, p.tokens_per_s) if isinstance(p, TrialPoint) else (p[0], p[1])
        if _finite(a) and _finite(t) and a > ref_a and t > ref_t:
            xy.append((a, t))
    # Sweep from the fastest point: each point adds the horizontal slab between the best accuracy so far
    # and its own accuracy, as wide as its speed margin over the reference.
    xy.sort(key=lambda at: (-at[1], -at[0]))
    area = 0.0
    best_a = ref_a
    for a, t in xy:
        if a > best_a:
            area += (t - ref_t) * (a - best_a)
            best_a = a
    return area


# ----------------------------------------------------------------------------------------------- display


def _category(p: TrialPoint) -> str:
    if p.state == "COMPLETE":
        return "complete" if p.feasible else "infeasible"
    return {"PRUNED": "pruned", "FAIL": "failed"}.get(p.state, p.state.lower())


_CATEGORY_ORDER = ["complete", "infeasible", "pruned", "failed", "running"]


def _categories(points: Iterable[TrialPoint]) -> list[str]:
    """Categories present, in a fixed legend order (unknown states last, alphabetically)."""
    n = len(_CATEGORY_ORDER)
    return sorted(
        {_category(p) for p in points},
        key=lambda c: (_CATEGORY_ORDER.index(c) if c in _CATEGORY_ORDER else n, c),
    )


# Colour per category; the same palette in plotly and matplotlib so the HTML and the PNG read alike.
_COLOURS = {
    "complete": "#1f77b4",
    "infeasible": "#ff7f0e",
    "pruned": "#9e9e9e",
    "failed": "#d62728",
    "running": "#bcbd22",
    "front": "#2ca02c",
    "reference": "#9467bd",
}


def _fmt_params(params: dict) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k}={fmt(v)}" for k, v in sorted(params.items(), key=lambda kv: str(kv[0])))


def _ci_text(p: TrialPoint) -> str:
    if _finite(p.ci_low) and _finite(p.ci_high):
        return f"{100 * p.ci_low:.1f}–{100 * p.ci_high:.1f}"  # type: ignore[operator]
    return ""


def _hover(p: TrialPoint) -> str:
    lines = [f"trial {p.number}" + (f" ({p.label})" if p.label else "") + f" · {p.state}"]
    if not p.feasible:
        lines[0] += " · infeasible"
    lines.append(f"accuracy {100 * p.accuracy:.2f}%" + (f" [CI {_ci_text(p)}]" if _ci_text(p) else ""))
    lines.append(f"{p.tokens_per_s:.1f} tok/s" + (f" · NFE {p.nfe:.1f}" if _finite(p.nfe) else ""))
    if p.params:
        lines.append(_fmt_params(p.params))
    return "<br>".join(lines)


def _ci_err(p: TrialPoint) -> tuple[float, float]:
    """(minus, plus) error-bar lengths in accuracy percent; zero without a CI."""
    if _finite(p.ci_low) and _finite(p.ci_high):
        return max(0.0, 100 * (p.accuracy - p.ci_low)), max(0.0, 100 * (p.ci_high - p.accuracy))  # type: ignore[operator]
    return 0.0, 0.0


def _plottable(points: Iterable[TrialPoint]) -> list[TrialPoint]:
    return [p for p in points if _has_objectives(p)]


def pareto_figure(points: Sequence[TrialPoint], front: Sequence[TrialPoint], title: str) -> go.Figure:
    """Interactive plotly figure: x = tokens/s, y = accuracy (%), one trace per trial category.

    The front is drawn as the staircase of the dominated region (vertical-then-horizontal between front
    points), reference trials (those with a ``label``) are starred and named, hover shows params/NFE/CI.
    Saved as self-contained HTML it works offline (PNG export through kaleido would need Chrome).
    """
    import plotly.graph_objects as go

    pts = _plottable(points)
    fig = go.Figure()
    for cat in _categories(pts):
        grp = [p for p in pts if _category(p) == cat and not p.label]
        if not grp:
            continue
        errs = [_ci_err(p) for p in grp]
        fig.add_trace(
            go.Scatter(
                x=[p.tokens_per_s for p in grp],
                y=[100 * p.accuracy for p in grp],
                mode="markers",
                name=cat,
                marker={"color": _COLOURS.get(cat, "#7f7f7f"), "size": 8, "opacity": 0.75},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [e[1] for e in errs],
                    "arrayminus": [e[0] for e in errs],
                    "thickness": 1,
                    "width": 0,
                    "visible": any(e != (0.0, 0.0) for e in errs),
                },
                hovertext=[_hover(p) for p in grp],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    refs = [p for p in pts if p.label]
    if refs:
        fig.add_trace(
            go.Scatter(
                x=[p.tokens_per_s for p in refs],
                y=[100 * p.accuracy for p in refs],
                mode="markers+text",
                name="reference",
                text=[p.label for p in refs],
                textposition="top center",
                marker={"color": _COLOURS["reference"], "size": 13, "symbol": "star"},
                hovertext=[_hover(p) for p in refs],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    fr = sorted(_plottable(front), key=lambda p: (p.tokens_per_s, -p.accuracy))
    if fr:
        fig.add_trace(
            go.Scatter(
                x=[p.tokens_per_s for p in fr],
                y=[100 * p.accuracy for p in fr],
                mode="lines+markers",
                line={"shape": "vh", "color": _COLOURS["front"], "width": 2},
                marker={"color": _COLOURS["front"], "size": 10, "symbol": "diamond-open"},
                name=f"Pareto front ({len(fr)})",
                hovertext=[_hover(p) for p in fr],
                hovertemplate="%{hovertext}<extra>front</extra>",
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title="tokens / s",
        yaxis_title="accuracy (%)",
        hovermode="closest",
        template="plotly_white",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0},
    )
    return fig


def save_pareto_png(
    points: Sequence[TrialPoint], front: Sequence[TrialPoint], path: str | Path, title: str
) -> Path:
    """Static PNG of the same picture, drawn with matplotlib's Agg canvas.

    Uses a bare ``Figure`` + ``FigureCanvasAgg`` rather than pyplot: no global figure registry and no
    backend switching, so it is safe from worker threads and headless machines.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(8, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    pts = _plottable(points)
    for cat in _categories(pts):
        grp = [p for p in pts if _category(p) == cat and not p.label]
        if not grp:
            continue
        errs = [_ci_err(p) for p in grp]
        xs = [p.tokens_per_s for p in grp]
        ys = [100 * p.accuracy for p in grp]
        colour = _COLOURS.get(cat, "#7f7f7f")
        if any(e != (0.0, 0.0) for e in errs):
            ax.errorbar(
                xs,
                ys,
                yerr=[[e[0] for e in errs], [e[1] for e in errs]],
                fmt="none",
                ecolor=colour,
                alpha=0.4,
                linewidth=0.8,
            )
        ax.scatter(xs, ys, s=22, color=colour, alpha=0.75, label=cat, zorder=2)
    fr = sorted(_plottable(front), key=lambda p: (p.tokens_per_s, -p.accuracy))
    if fr:
        ax.step(
            [p.tokens_per_s for p in fr],
            [100 * p.accuracy for p in fr],
            where="pre",
            color=_COLOURS["front"],
            linewidth=1.8,
            label=f"Pareto front ({len(fr)})",
            zorder=3,
        )
        ax.scatter(
            [p.tokens_per_s for p in fr],
            [100 * p.accuracy for p in fr],
            s=60,
            facecolors="none",
            edgecolors=_COLOURS["front"],
            linewidths=1.5,
            zorder=4,
        )
    refs = [p for p in pts if p.label]
    if refs:
        ax.scatter(
            [p.tokens_per_s for p in refs],
            [100 * p.accuracy for p in refs],
            marker="*",
            s=160,
            color=_COLOURS["reference"],
            label="reference",
            zorder=5,
        )
        for p in refs:
            ax.annotate(
                str(p.label),
                (p.tokens_per_s, 100 * p.accuracy),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=9,
                color=_COLOURS["reference"],
            )
    ax.set_xlabel("tokens / s")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, format="png")
    return out


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
                "ci_pct": _ci_text(p),
                "tokens_per_s": round(p.tokens_per_s, 1),
                "nfe": round(p.nfe, 2) if _finite(p.nfe) else None,
                "params": _fmt_params(p.params),
            }
        )
    return rows
