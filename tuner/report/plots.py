"""Pictures of a study: the interactive Pareto plot (plotly, self-contained HTML) and the same picture as a PNG
(matplotlib: plotly's PNG export needs kaleido and a browser). Both libraries are imported on use.

The speed axis is logarithmic: what matters is the ratio to the baseline (tuned settings run 20-60x vanilla), and
on a linear axis vanilla and every cautious setting crowd into its left edge.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..verdict.pareto import TrialPoint, finite, has_objectives

if TYPE_CHECKING:  # pragma: no cover - typing only
    import plotly.graph_objects as go


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


# The speed axis: the robust figure of tuner.study.timing, with the quartiles of its timing passes as error bars.
SPEED_AXIS = "tokens / s (load-corrected: probe passes timed against a reference)"

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


def fmt_params(params: dict) -> str:
    """Knobs as one sorted ``k=v`` line, floats to 4 significant digits: for hover text and tables."""
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k}={fmt(v)}" for k, v in sorted(params.items(), key=lambda kv: str(kv[0])))


def ci_text(p: TrialPoint) -> str:
    """The accuracy CI in percent as ``low–high`` (one decimal); empty without one."""
    if finite(p.ci_low) and finite(p.ci_high):
        return f"{100 * p.ci_low:.1f}–{100 * p.ci_high:.1f}"  # type: ignore[operator]
    return ""


def _hover(p: TrialPoint) -> str:
    lines = [f"trial {p.number}" + (f" ({p.label})" if p.label else "") + f" · {p.state}"]
    if not p.feasible:
        lines[0] += " · infeasible"
    lines.append(f"accuracy {100 * p.accuracy:.2f}%" + (f" [CI {ci_text(p)}]" if ci_text(p) else ""))
    speed = f"{p.tokens_per_s:.1f} tok/s"
    if finite(p.speed_spread):
        speed += f" (passes ±{50 * p.speed_spread:.0f}%{', noisy' if p.speed_noisy else ''})"  # type: ignore[operator]
    lines.append(speed + (f" · NFE {p.nfe:.1f}" if finite(p.nfe) else ""))
    if p.params:
        lines.append(fmt_params(p.params))
    return "<br>".join(lines)


def _ci_err(p: TrialPoint) -> tuple[float, float]:
    """(minus, plus) error-bar lengths in accuracy percent; zero without a CI."""
    if finite(p.ci_low) and finite(p.ci_high):
        return max(0.0, 100 * (p.accuracy - p.ci_low)), max(0.0, 100 * (p.ci_high - p.accuracy))  # type: ignore[operator]
    return 0.0, 0.0


def _speed_err(p: TrialPoint) -> tuple[float, float]:
    """(minus, plus) error-bar lengths in tokens/s: the quartiles of the trial's timing passes (tuner.study.timing)."""
    if finite(p.tokens_per_s_low) and finite(p.tokens_per_s_high):
        return max(0.0, p.tokens_per_s - p.tokens_per_s_low), max(0.0, p.tokens_per_s_high - p.tokens_per_s)  # type: ignore[operator]
    return 0.0, 0.0


def _error_bars(errs: list[tuple[float, float]]) -> dict[str, Any]:
    """A plotly error-bar spec from (minus, plus) lengths, hidden when every bar is empty."""
    return {"type": "data", "symmetric": False, "array": [e[1] for e in errs], "arrayminus": [e[0] for e in errs],
            "thickness": 1, "width": 0, "visible": any(e != (0.0, 0.0) for e in errs)}


def _plottable(points: Iterable[TrialPoint]) -> list[TrialPoint]:
    """Points that can sit on a log speed axis (a failed trial has no speed; a zero speed has no logarithm)."""
    return [p for p in points if has_objectives(p) and p.tokens_per_s > 0]


def _baseline_speed(points: Sequence[TrialPoint], baseline: str) -> float | None:
    """The baseline reference's tokens/s (its latest plottable trial), the unit of every speed-up label."""
    found = [p for p in _plottable(points) if p.label == baseline]
    return found[-1].tokens_per_s if found else None


def log_ticks(values: Iterable[float]) -> list[float]:
    """1-2-5 ticks spanning `values` on a log axis: plotly labels a narrow log axis with bare digits ("2", "5" for
    200 and 500), which a reader can't tell apart."""
    import math

    vals = [v for v in values if v > 0]
    if not vals:
        return []
    lo, hi = min(vals), max(vals)
    ticks = [m * 10.0**e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 5)]
    inside = [t for t in ticks if lo / 1.5 <= t <= hi * 1.5]
    if len(inside) >= 2:
        return inside
    return [max(t for t in ticks if t <= lo), min(t for t in ticks if t >= hi and t > lo)]  # the ticks around them


def _ref_text(p: TrialPoint, base: float | None) -> str:
    return f"{p.label} {p.tokens_per_s / base:.1f}×" if base else str(p.label)


def pareto_figure(points: Sequence[TrialPoint], front: Sequence[TrialPoint], title: str, *,
                  baseline: str = "vanilla") -> go.Figure:
    """Interactive plotly figure: x = tokens/s (log scale), y = accuracy (%), one trace per trial category.

    The front is drawn as the staircase of the dominated region, the baseline as a dotted vertical line, each
    reference (a point with a ``label``) as a named star with its speed-up; hover shows knobs, NFE and CI.
    """
    import plotly.graph_objects as go

    pts = _plottable(points)
    fig = go.Figure()
    for cat in _categories(pts):
        grp = [p for p in pts if _category(p) == cat and not p.label]
        if not grp:
            continue
        errs = [_ci_err(p) for p in grp]
        xerrs = [_speed_err(p) for p in grp]
        fig.add_trace(
            go.Scatter(
                x=[p.tokens_per_s for p in grp],
                y=[100 * p.accuracy for p in grp],
                mode="markers",
                name=cat,
                marker={"color": _COLOURS.get(cat, "#7f7f7f"), "size": 8, "opacity": 0.75},
                error_y=_error_bars(errs),
                error_x=_error_bars(xerrs),
                hovertext=[_hover(p) for p in grp],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    refs = sorted((p for p in pts if p.label), key=lambda p: p.tokens_per_s)
    base = _baseline_speed(pts, baseline)
    if refs:
        fig.add_trace(
            go.Scatter(
                x=[p.tokens_per_s for p in refs],
                y=[100 * p.accuracy for p in refs],
                mode="markers+text",
                name="reference",
                text=[_ref_text(p, base) for p in refs],
                # Above and below in turn: references often sit close together (fast-dllm and paper).
                textposition=["top center" if i % 2 == 0 else "bottom center" for i in range(len(refs))],
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
    if base and pts:
        ys = [100 * p.accuracy for p in pts]
        fig.add_trace(
            go.Scatter(  # a trace, not a shape: shapes and annotations take log10 coordinates on a log axis
                x=[base, base],
                y=[min(ys) - 1, max(ys) + 1],
                mode="lines",
                line={"color": _COLOURS["reference"], "dash": "dot", "width": 1.5},
                name=f"baseline ({baseline}) {base:.1f} tok/s",
                hoverinfo="name",
            )
        )
    ticks = log_ticks(p.tokens_per_s for p in pts)
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    fig.update_layout(
        title=title,
        xaxis_title=SPEED_AXIS + (f"; log scale; speed-ups vs {baseline} on the stars" if base else "; log scale"),
        yaxis_title="accuracy (%)",
        hovermode="closest",
        template="plotly_white",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0},
    )
    return fig


def save_pareto_png(
    points: Sequence[TrialPoint], front: Sequence[TrialPoint], path: str | Path, title: str, *,
    baseline: str = "vanilla",
) -> Path:
    """Static PNG of the same picture (:func:`pareto_png_figure`)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    pareto_png_figure(points, front, title, baseline=baseline).savefig(out, format="png")
    return out


def pareto_png_figure(points: Sequence[TrialPoint], front: Sequence[TrialPoint], title: str, *,
                      baseline: str = "vanilla") -> Any:
    """The matplotlib figure of the PNG, drawn on a bare Agg canvas.

    Uses a bare ``Figure`` + ``FigureCanvasAgg`` rather than pyplot: no global figure registry and no
    backend switching, so it is safe from worker threads and headless machines.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    pts = _plottable(points)
    for cat in _categories(pts):
        grp = [p for p in pts if _category(p) == cat and not p.label]
        if not grp:
            continue
        errs = [_ci_err(p) for p in grp]
        xerrs = [_speed_err(p) for p in grp]
        xs = [p.tokens_per_s for p in grp]
        ys = [100 * p.accuracy for p in grp]
        colour = _COLOURS.get(cat, "#7f7f7f")
        if any(e != (0.0, 0.0) for e in errs + xerrs):
            ax.errorbar(
                xs,
                ys,
                yerr=[[e[0] for e in errs], [e[1] for e in errs]],
                xerr=[[e[0] for e in xerrs], [e[1] for e in xerrs]],
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
    base = _baseline_speed(pts, baseline)
    if base:
        ax.axvline(base, color=_COLOURS["reference"], linestyle=":", linewidth=1.2,
                   label=f"baseline ({baseline}) {base:.1f} tok/s", zorder=1)
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
        for i, p in enumerate(sorted(refs, key=lambda p: p.tokens_per_s)):
            ax.annotate(
                _ref_text(p, base),
                (p.tokens_per_s, 100 * p.accuracy),
                textcoords="offset points",
                xytext=(6, 6) if i % 2 == 0 else (6, -14),  # above and below in turn, as in the HTML
                fontsize=9,
                color=_COLOURS["reference"],
            )
    if pts:
        from matplotlib.ticker import FuncFormatter, LogLocator

        ax.set_xscale("log")
        # Plain numbers (12, 50, 200), not 10^1: a study rarely spans more than two decades.
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter("")
        if base:
            top = ax.secondary_xaxis("top", functions=(lambda x: x / base, lambda r: r * base))
            top.set_xlabel(f"speed-up vs {baseline} (×)")
            top.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            top.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
            top.xaxis.set_minor_formatter("")
    ax.set_xlabel(SPEED_AXIS + "; log scale")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, pad=30 if pts and base else 6)  # room for the speed-up axis above the plot
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig
