"""The report's figures as PNG bytes (matplotlib, Agg): every label fits its figure.

Cell labels (``model.attention=true,model.deep_supervision=1``) are long, so figures use
constrained layout, shorten labels to :data:`LABEL_CHARS`, and where many labels would collide
(the cost plot) number the points and list the labels in a legend beside the axes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from orchestrator.plots import _integer_epochs, _pyplot

Band = list[tuple[int, float, float, float]]  # (epoch, mean, low, high) over a cell's runs
LABEL_CHARS = 42
DPI = 110


def shorten(label: str, limit: int = LABEL_CHARS) -> str:
    """``label`` cut in the middle to ``limit`` characters (both ends stay readable)."""
    if len(label) <= limit:
        return label
    keep = (limit - 1) // 2
    return f"{label[:keep]}…{label[-(limit - 1 - keep) :]}"


def _figure(width: float, height: float, columns: int = 1) -> tuple[Any, Any]:
    plt = _pyplot()
    return plt.subplots(1, columns, figsize=(width, height), layout="constrained")


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    _pyplot().close(figure)
    return buffer.getvalue()


def dot_whisker_png(
    labels: Sequence[str],
    means: Sequence[float],
    intervals: Sequence[tuple[float, float]],
    metric: str,
    paper: Sequence[float | None] = (),
) -> bytes:
    """Each cell's mean (dot) with its 95% interval (whisker), best first; the paper's number
    as a red diamond where the study file gives one."""
    figure, axis = _figure(8, 0.42 * len(labels) + 1.4)
    rows = list(range(len(labels)))
    for row, (low, high) in zip(rows, intervals, strict=True):
        if math.isfinite(low) and math.isfinite(high):
            axis.plot([low, high], [row, row], color="tab:blue", lw=2, solid_capstyle="butt")
    axis.plot(means, rows, "o", color="tab:blue", label="ours: mean, 95% CI")
    marks = [(r, p) for r, p in zip(rows, paper, strict=False) if p is not None]
    if marks:
        xs, ys = [p for _, p in marks], [r for r, _ in marks]
        axis.plot(xs, ys, "D", color="tab:red", label="paper")
    axis.set_yticks(rows, [shorten(label) for label in labels])
    axis.invert_yaxis()
    axis.grid(axis="x", alpha=0.3)
    axis.set(xlabel=metric)
    axis.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, frameon=False)
    return _png(figure)


def band_curves_png(curves: dict[str, Band], metric: str) -> bytes:
    """The metric against the epoch per cell: the mean over its runs, shaded min..max."""
    figure, axis = _figure(8, 4.6)
    for label, points in curves.items():
        steps = [p[0] for p in points]
        (line,) = axis.plot(steps, [p[1] for p in points], marker=".", label=shorten(label))
        lows, highs = [p[2] for p in points], [p[3] for p in points]
        axis.fill_between(steps, lows, highs, color=line.get_color(), alpha=0.18, lw=0)
    axis.set(xlabel="epoch", ylabel=metric)
    axis.grid(alpha=0.3)
    _integer_epochs(axis)
    if len(curves) <= 16:
        axis.figure.legend(loc="outside right upper", fontsize="small", frameon=False)
    return _png(figure)


def pareto_png(
    labels: Sequence[str],
    cost_hours: Sequence[float],
    values: Sequence[float],
    metric: str,
    mode: str = "max",
    device: str = "GPU",
) -> bytes:
    """Each cell's metric against its ``device``-hours (GPU or CPU) per run; the cells no other
    cell beats on both (the Pareto front) are joined. Points are numbered; the legend names them."""
    figure, axis = _figure(8.5, 4.6)
    front = pareto_front(cost_hours, values, mode)
    scale, unit = _cost_unit(cost_hours)
    cost_hours = [h * scale for h in cost_hours]  # tiny sweeps: minutes or seconds, not 0.0011 h
    ordered = sorted(front, key=lambda i: cost_hours[i])
    axis.step(
        [cost_hours[i] for i in ordered],
        [values[i] for i in ordered],
        where="post",
        color="tab:gray",
        alpha=0.6,
        label="Pareto front",
    )
    for number, (label, x, y) in enumerate(zip(labels, cost_hours, values, strict=True), 1):
        color = "tab:green" if number - 1 in front else "tab:purple"
        axis.scatter([x], [y], color=color, zorder=3, label=f"{number}: {shorten(label, 36)}")
        axis.annotate(str(number), (x, y), textcoords="offset points", xytext=(5, 4))
    axis.set(xlabel=f"{device}-{unit} per run", ylabel=metric)
    axis.grid(alpha=0.3)
    figure.legend(loc="outside right upper", fontsize="small", frameon=False)
    return _png(figure)


def _cost_unit(cost_hours: Sequence[float]) -> tuple[float, str]:
    """(factor from hours, unit name) that keeps the largest cost at 1 or above."""
    largest = max((h for h in cost_hours if math.isfinite(h)), default=1.0)
    if largest >= 1.0:
        return 1.0, "hours"
    return (60.0, "minutes") if largest * 60 >= 1.0 else (3600.0, "seconds")


def pareto_front(costs: Sequence[float], values: Sequence[float], mode: str = "max") -> set[int]:
    """Indices of the points no other point beats (cheaper or as cheap, and better)."""
    sign = 1.0 if mode == "max" else -1.0
    front = set()
    for i, (cost, value) in enumerate(zip(costs, values, strict=True)):
        beaten = any(
            c <= cost and sign * v >= sign * value and (c, v) != (cost, value)
            for c, v in zip(costs, values, strict=True)
        )
        if not beaten:
            front.add(i)
    return front
