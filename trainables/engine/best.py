"""The best epoch of a trial, tracked in one place: the runner updates it after every epoch.

``ablate train`` keeps the best model from it, the Tune Trainable reports ``best/epoch`` and
``best/<metric>`` with every result and writes its weights and per-case metrics into each
checkpoint, and the driver's tracking reads those reported values instead of recomputing them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

DEFAULT_METRIC, DEFAULT_MODE = "val/dice_mean", "max"


@dataclass
class BestEpoch:
    """The best epoch so far by ``metric`` (``mode`` max or min).

    Attributes:
        epoch: 1-based epoch of the best value; 0 while no epoch had a finite value.
        value: the metric at that epoch (NaN before).
        iteration: optimizer steps completed at that epoch.
        weights: CPU copy of the model's state dict at that epoch (None before, or after a
            restore that had no best model file).
        per_case: that epoch's per-case validation rows (``{"case": id, "val/...": v}``).
    """

    metric: str = DEFAULT_METRIC
    mode: str = DEFAULT_MODE
    epoch: int = 0
    value: float = math.nan
    iteration: int = 0
    weights: dict[str, torch.Tensor] | None = None
    per_case: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {self.mode!r}")

    def improves(self, value: float | None) -> bool:
        """True when ``value`` is finite and better than the best so far (ties keep the first)."""
        if value is None or not math.isfinite(value):
            return False
        if self.epoch == 0:
            return True
        return value > self.value if self.mode == "max" else value < self.value

    def update(
        self,
        metrics: dict[str, float],
        epoch: int,
        iteration: int,
        model: nn.Module,
        per_case: list[dict[str, Any]],
    ) -> bool:
        """Take this epoch when its metric improves; returns whether it did."""
        value = metrics.get(self.metric)
        if not self.improves(value):
            return False
        assert value is not None
        self.epoch, self.value, self.iteration = epoch, float(value), iteration
        self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.per_case = [dict(row) for row in per_case]
        return True

    def metrics(self) -> dict[str, float]:
        """``{"best/epoch": e, "best/<metric>": v}``, empty before the first finite value."""
        if self.epoch == 0:
            return {}
        return {"best/epoch": float(self.epoch), f"best/{self.metric}": self.value}

    def summary(self) -> dict[str, Any]:
        """The ``best`` entry of a checkpoint: ``{"epoch", "value", "metric"}``."""
        return {"epoch": self.epoch, "value": self.value, "metric": self.metric}

    def load_summary(self, best: dict[str, Any]) -> None:
        """Inverse of :meth:`summary` (weights and per-case rows are restored separately);
        a summary for another metric (the sweep changed it) starts the tracking afresh."""
        if best.get("metric") != self.metric:
            self.epoch, self.value, self.weights, self.per_case = 0, math.nan, None, []
            return
        self.epoch, self.value = int(best["epoch"]), float(best["value"])
