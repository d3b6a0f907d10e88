"""Validation: whole-volume (or centre-crop) sliding-window prediction and BraTS metrics.

The loss is measured on the cached grid; a whole case resampled to a target spacing is scored
on the crop of its own grid (probabilities brought back, as the test pass does), a centre crop
on the cached grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from trainables.config.trial import TrialConfig
from trainables.data.labels import LabelScheme, regions_from_labels
from trainables.data.sampling import validation_view
from trainables.engine.data import TrialData
from trainables.engine.inference import sliding_window_logits
from trainables.engine.resize import source_labels, to_source_grid
from trainables.metrics import case_metrics, dice, mean_metrics
from trainables.metrics.names import metric_name


def predict_case(
    model: nn.Module,
    cfg: TrialConfig,
    image: np.ndarray,
    device: torch.device,
    autocast: AbstractContextManager,
) -> Tensor:
    """(K, *S) float32 logits for one case's image (C, *S), by sliding window."""
    volume = torch.from_numpy(np.asarray(image, dtype=np.float32)).to(device)
    return sliding_window_logits(
        model,
        volume,
        cfg.sampling.patch_size,
        overlap=cfg.validation.overlap,
        gaussian=cfg.validation.gaussian,
        batch_size=cfg.validation.inference_batch(cfg.model.input_dims),
        autocast=autocast,
    )


def validation_case_ids(cfg: TrialConfig, data: TrialData) -> Sequence[str]:
    ids = data.split.val
    return ids[: cfg.validation.max_cases] if cfg.validation.max_cases else ids


@dataclass(frozen=True)
class ValidationResult:
    """One validation pass.

    Attributes:
        metrics: means over the cases, ``val/``-prefixed (``val/dice_mean``, ``val/loss``...).
        per_case: one row per case, ``{"case": id, "val/dice_wt": v, ..., "val/loss": v}``,
            with the same names as the means.
    """

    metrics: dict[str, float]
    per_case: list[dict[str, Any]]


@torch.no_grad()
def validate(
    model: nn.Module,
    loss_fn: nn.Module,
    cfg: TrialConfig,
    data: TrialData,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
) -> ValidationResult:
    """Validation loss and metrics per case and their means, keys prefixed ``val/``."""
    model.eval()
    losses: list[float] = []
    per_case: list[dict[str, float]] = []
    case_ids = list(validation_case_ids(cfg, data))
    for case_id in case_ids:
        case = data.dataset.load(case_id, modalities=data.modalities, mmap=True)
        assert case.label is not None
        image, label = validation_view(case.image, case.label, cfg.sampling)
        logits = predict_case(model, cfg, image, device, autocast())
        target = torch.from_numpy(np.asarray(label, dtype=np.int64)).to(device)
        losses.append(float(loss_fn(logits[None], target[None])))
        pred, ref, spacing = _scored_labels(logits, label, case_id, cfg, data)
        per_case.append(_case_metrics(pred, ref, spacing, data.scheme, cfg))
    model.train()
    metrics = {metric_name("val", k): v for k, v in mean_metrics(per_case).items()}
    metrics[metric_name("val", "loss")] = float(np.mean(losses))
    rows = [
        {
            "case": case_id,
            **{metric_name("val", k): float(v) for k, v in case.items()},
            metric_name("val", "loss"): loss,
        }
        for case_id, case, loss in zip(case_ids, per_case, losses, strict=True)
    ]
    return ValidationResult(metrics, rows)


def _scored_labels(
    logits: Tensor, label: np.ndarray, case_id: str, cfg: TrialConfig, data: TrialData
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Prediction, reference and spacing the metrics compare: a whole resampled case on the
    crop of its source grid (probabilities brought back, the label as it was, its spacing),
    the grid an unresampled case is scored on, so ``val/`` numbers compare across
    ``resample`` settings; otherwise (a centre crop) on the cached grid. The test pass pastes
    the crop back into the whole volume: Dice, HD95, surface Dice, RVD and sensitivity agree
    with it, while specificity (which counts the background outside the crop) and an empty
    region's HD95 penalty (the volume's diagonal) do not, for resampled and unresampled cases
    alike."""
    entry = data.dataset.entry(case_id)
    if cfg.sampling.validation == "whole" and entry.source_spacing is not None:
        to_source = to_source_grid(entry.crop_shape, entry.spacing, entry.source_spacing)
        pred = source_labels(logits, cfg.loss, data.scheme, to_source).cpu().numpy()
        return pred, np.asarray(data.dataset.source_label(case_id)), entry.source_spacing
    pred = source_labels(logits, cfg.loss, data.scheme, None).cpu().numpy()
    return pred, np.asarray(label), entry.spacing


def _case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, float, float],
    scheme: LabelScheme,
    cfg: TrialConfig,
) -> dict[str, float]:
    """Full BraTS metrics, or Dice alone when HD95 is switched off (it dominates CPU time)."""
    if cfg.validation.hd95:
        return case_metrics(pred, ref, spacing, scheme, cfg.validation.tolerance_mm)
    pred_regions = regions_from_labels(pred, scheme)
    ref_regions = regions_from_labels(ref, scheme)
    out = {
        f"dice_{name}": dice(p, r)
        for name, p, r in zip(scheme.region_names, pred_regions, ref_regions, strict=True)
    }
    out["dice_mean"] = float(np.mean(list(out.values())))
    return out
