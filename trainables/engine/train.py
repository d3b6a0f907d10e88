"""Run one trial to the end without Ray: what ``ablate train`` does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trainables.config.trial import TrialConfig
from trainables.engine.best import DEFAULT_METRIC, DEFAULT_MODE
from trainables.engine.checkpoint import BEST_MODEL_FILE
from trainables.engine.runner import TrialRunner

Progress = Callable[[str], None]


@dataclass
class TrainResult:
    """Per-epoch metrics and the runner's best epoch (0 when no epoch had a finite metric).

    Attributes:
        checkpoint: the best model file (``<checkpoint_dir>/best.pt``) when one was written.
        per_case: the best epoch's per-case validation rows.
        left_out: ``<file>: <problem>`` of each case the data had but could not prepare.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    checkpoint: Path | None = None
    per_case: list[dict[str, object]] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def train_trial(
    cfg: TrialConfig,
    progress: Progress | None = None,
    checkpoint_dir: Path | None = None,
    metric: str = DEFAULT_METRIC,
    mode: str = DEFAULT_MODE,
) -> TrainResult:
    """Train ``cfg`` for ``cfg.train.epochs`` epochs, selecting the best epoch by ``metric``.

    With ``checkpoint_dir`` the training state, best model and per-case metrics are written
    there after every epoch (:meth:`TrialRunner.save`).
    """
    runner = TrialRunner(cfg, progress=progress, metric=metric, mode=mode)
    result = TrainResult(left_out=runner.data.dataset.left_out)
    for _ in range(cfg.train.epochs):
        metrics = runner.run_epoch()
        result.history.append(metrics)
        if progress:
            progress(format_epoch(metrics, cfg.train.epochs))
        if checkpoint_dir is not None:
            runner.save(checkpoint_dir)
    result.best_epoch, result.per_case = runner.best.epoch, runner.best.per_case
    if checkpoint_dir is not None and runner.best.weights is not None:
        result.checkpoint = Path(checkpoint_dir) / BEST_MODEL_FILE
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
        "test/dice_mean",  # the last epoch: the best epoch's weights on the test cases
    ):
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.4f}")
    parts.append(f"{metrics['perf/epoch_s']:.1f} s")
    return "  ".join(parts)
