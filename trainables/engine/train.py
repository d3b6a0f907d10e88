"""Run one trial to the end without Ray: what ``ablate train`` does."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trainables.engine.checkpoint import save_checkpoint
from trainables.engine.config import TrialConfig
from trainables.engine.runner import TrialRunner

Progress = Callable[[str], None]


@dataclass
class TrainResult:
    """Per-epoch metrics and the best epoch by validation Dice (or loss when Dice is absent)."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    checkpoint: Path | None = None

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def train_trial(
    cfg: TrialConfig,
    progress: Progress | None = None,
    checkpoint_dir: Path | None = None,
) -> TrainResult:
    """Train ``cfg`` for ``cfg.train.epochs`` epochs; keep the best checkpoint if a dir is given."""
    runner = TrialRunner(cfg, progress=progress)
    result = TrainResult()
    best = -math.inf
    for _ in range(cfg.train.epochs):
        metrics = runner.run_epoch()
        result.history.append(metrics)
        if progress:
            progress(format_epoch(metrics, cfg.train.epochs))
        score = metrics.get("val/dice_mean", -metrics.get("val/loss", math.inf))
        if "val/loss" in metrics and score > best:
            best, result.best_epoch = score, runner.epoch
            if checkpoint_dir is not None:
                result.checkpoint = save_checkpoint(runner, Path(checkpoint_dir) / "best.pt")
    return result


def format_epoch(metrics: dict[str, float], epochs: int) -> str:
    """``epoch 3/10  train/loss 0.512  val/dice_mean 0.734  12.3 s`` for progress output."""
    parts = [f"epoch {int(metrics['epoch'])}/{epochs}", f"train/loss {metrics['train/loss']:.4f}"]
    for key in (
        "val/loss",
        "val/dice_wt",
        "val/dice_tc",
        "val/dice_et",
        "val/dice_fg",
        "val/dice_mean",
    ):
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.4f}")
    parts.append(f"{metrics['perf/epoch_s']:.1f} s")
    return "  ".join(parts)
