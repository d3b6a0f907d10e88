"""PNG plots for MLflow artifacts and reports (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

Curve = list[tuple[int, float]]  # (epoch, value) points, sorted by epoch


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: draw to memory, never to a window
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def learning_curves_png(curves: dict[str, Curve], metric: str) -> bytes:
    """One trial: losses (left) and the sweep metric (right) against the epoch."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key in ("train/loss", "val/loss"):
        if key in curves:
            steps, values = zip(*curves[key], strict=True)
            left.plot(steps, values, marker=".", label=key)
    left.set(xlabel="epoch", ylabel="loss", title="losses")
    left.legend(loc="best")
    if metric in curves:
        steps, values = zip(*curves[metric], strict=True)
        right.plot(steps, values, marker=".", color="tab:green")
    right.set(xlabel="epoch", ylabel=metric, title=metric)
    _integer_epochs(left, right)
    return _png(figure)


def metric_per_cell_png(
    labels: Sequence[str],
    means: Sequence[float],
    intervals: Sequence[tuple[float, float]],
    metric: str,
    paper: Sequence[float | None] = (),
) -> bytes:
    """Horizontal bars: each cell's mean with its 95% CI, and the paper's number as a marker."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.5))
    rows = list(range(len(labels)))
    low = [
        max(m - lo, 0.0) if lo == lo else 0.0 for m, (lo, _) in zip(means, intervals, strict=True)
    ]
    high = [
        max(hi - m, 0.0) if hi == hi else 0.0 for m, (_, hi) in zip(means, intervals, strict=True)
    ]
    axis.barh(rows, means, xerr=[low, high], capsize=3, color="tab:blue", alpha=0.8, label="ours")
    marks = [(r, p) for r, p in zip(rows, paper, strict=False) if p is not None]
    if marks:
        axis.scatter(
            [p for _, p in marks], [r for r, _ in marks], color="tab:red", zorder=3, label="paper"
        )
        axis.legend(loc="best")
    axis.set_yticks(rows, labels)
    axis.invert_yaxis()
    axis.set(xlabel=f"{metric} (mean, 95% CI)")
    return _png(figure)


def cell_curves_png(curves: dict[str, Curve], metric: str) -> bytes:
    """The sweep metric against the epoch, one line per cell (mean over its seeds)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for label, points in curves.items():
        steps, values = zip(*points, strict=True)
        axis.plot(steps, values, marker=".", label=label)
    axis.set(xlabel="epoch", ylabel=metric, title=f"{metric} per cell (mean over seeds)")
    _integer_epochs(axis)
    if len(curves) <= 12:
        axis.legend(loc="best", fontsize="small")
    return _png(figure)


def cost_png(
    labels: Sequence[str], costs: Sequence[float], values: Sequence[float], metric: str
) -> bytes:
    """Each cell's metric against its mean epoch time (the price of the gain)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.scatter(costs, values, color="tab:purple")
    for label, x, y in zip(labels, costs, values, strict=True):
        axis.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    axis.set(xlabel="epoch time (s)", ylabel=metric, title=f"{metric} against cost")
    return _png(figure)


def _integer_epochs(*axes: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    for axis in axes:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
