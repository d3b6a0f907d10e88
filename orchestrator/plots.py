"""PNG plots for MLflow artifacts and reports (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import io
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


def _integer_epochs(*axes: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    for axis in axes:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
