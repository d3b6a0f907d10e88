"""The report's segmentation panels: one validation case, reference vs winner vs worst cell.

The best model of the winner's run and of the worst cell's best run (MLflow artifact
``checkpoint/best.pt``, whose ``config`` is the trial's resolved config) each predict the first
validation case of the winner's split with the engine's sliding window, on the CPU, at the
case's (validation-view) size. The panels show the middle axial slice through the reference
tumour: FLAIR with WT, TC and ET as coloured overlays.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestrator.report_plots import _figure, _png, shorten

if TYPE_CHECKING:
    from orchestrator.winners import WinnersTable

CHECKPOINT = "checkpoint/best.pt"
COLORS = {"WT": (0.1, 0.8, 0.1), "TC": (1.0, 0.85, 0.0), "ET": (0.9, 0.1, 0.1)}
ALPHA = 0.45


@dataclass
class Pick:
    """A panel's model: its title and the MLflow run holding the checkpoint."""

    title: str
    run_id: str


def picks(table: WinnersTable) -> list[Pick]:
    """The winner's run and the worst ranked cell's best run (when it is another cell)."""
    done = [c for c in table.cells if c.runs]
    if not done or not table.winner_run_id:
        return []
    chosen = [Pick(f"winner: {shorten(done[0].label, 32)}", table.winner_run_id)]
    if len(done) > 1:
        worst = done[-1]
        pick = max if table.mode == "max" else min
        run_id = pick(worst.runs, key=lambda r: worst.runs[r])
        chosen.append(Pick(f"worst: {shorten(worst.label, 32)}", run_id))
    return chosen


def segmentation_png(client: Any, table: WinnersTable) -> tuple[bytes | None, str]:
    """(PNG or None, a caption saying which case and slice, or why there is no figure)."""
    chosen = picks(table)
    if not chosen:
        return None, "no finished run with a model"
    with tempfile.TemporaryDirectory() as tmp:
        models = [(p.title, _load(client, p.run_id, Path(tmp))) for p in chosen]
    if any(model is None for _, model in models):
        return None, f"a selected run has no {CHECKPOINT} artifact"
    cfg = models[0][1][0]
    image, label, case_id, scheme = _case(cfg)
    preds = [(title, _predict(model, cfg, image, scheme)) for title, (cfg, model) in models]
    return _render(image, label, preds, scheme, cfg), case_id


def _load(client: Any, run_id: str, folder: Path) -> tuple[Any, Any] | None:
    """(trial config, model in eval mode on the CPU) from a run's best checkpoint."""
    from trainables.config.trial import parse_trial_config
    from trainables.engine.checkpoint import load_checkpoint

    names = {a.path for a in client.list_artifacts(run_id, "checkpoint")}
    if CHECKPOINT not in names:
        return None
    path = client.download_artifacts(run_id, CHECKPOINT, str(folder / run_id))
    checkpoint = load_checkpoint(path, map_location="cpu")
    cfg = parse_trial_config(checkpoint["config"])
    return cfg, _model(cfg, checkpoint["model"])


def _model(cfg: Any, weights: dict[str, Any]) -> Any:
    from trainables.engine.data import prepare_trial_data
    from trainables.losses import output_channels
    from trainables.models import build_model

    data = prepare_trial_data(cfg.data)
    model = build_model(cfg.model, len(data.modalities), output_channels(cfg.loss, data.scheme))
    model.load_state_dict(weights)
    return model.eval()


def _case(cfg: Any) -> tuple[np.ndarray, np.ndarray, str, Any]:
    """(image (C, X, Y, Z), label (X, Y, Z), case id, scheme): validation case 0, as
    validation crops it."""
    from trainables.data.sampling import validation_view
    from trainables.engine.data import prepare_trial_data
    from trainables.engine.validation import validation_case_ids

    data = prepare_trial_data(cfg.data)
    case_id = validation_case_ids(cfg, data)[0]
    case = data.dataset.load(case_id, modalities=data.modalities)
    image, label = validation_view(case.image, case.label, cfg.sampling)
    return np.asarray(image, np.float32), np.asarray(label), case_id, data.scheme


def _predict(model: Any, cfg: Any, image: np.ndarray, scheme: Any) -> np.ndarray:
    """(X, Y, Z) internal label map of the model's sliding-window prediction on the CPU."""
    import torch

    from trainables.engine.validation import predict_case
    from trainables.losses import logits_to_labels

    with torch.no_grad():
        logits = predict_case(model, cfg, image, torch.device("cpu"), contextlib.nullcontext())
    return logits_to_labels(logits[None], cfg.loss, scheme)[0].numpy()


def tumour_slice(regions: np.ndarray) -> int:
    """The middle axial index (last axis) of the slices where region 0 (WT) is present."""
    present = np.flatnonzero(regions[0].reshape(-1, regions.shape[-1]).any(axis=0))
    return int((present[0] + present[-1]) // 2) if present.size else regions.shape[-1] // 2


def _render(
    image: np.ndarray,
    label: np.ndarray,
    preds: list[tuple[str, np.ndarray]],
    scheme: Any,
    cfg: Any,
) -> bytes:
    from trainables.data.labels import regions_from_labels

    ref = regions_from_labels(label, scheme)
    z = tumour_slice(ref)
    modalities = list(cfg.data.modalities)
    flair = image[modalities.index("flair") if "flair" in modalities else 0, ..., z]
    panels = [("reference", ref), *((t, regions_from_labels(p, scheme)) for t, p in preds)]
    figure, axes = _figure(3.2 * len(panels), 3.6, len(panels))
    for axis, (title, regions) in zip(np.atleast_1d(axes), panels, strict=True):
        axis.imshow(np.flipud(flair.T), cmap="gray")
        axis.imshow(_overlay(regions[..., z], scheme.region_names))
        axis.set_title(title, fontsize="small")
        axis.axis("off")
    handles = [_patch(name) for name in scheme.region_names if name.upper() in COLORS]
    if handles:
        figure.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    return _png(figure)


def _overlay(masks: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """(Y, X, 4) RGBA: each region's colour where it is present (inner regions on top)."""
    rgba = np.zeros((*np.flipud(masks[0].T).shape, 4), np.float32)
    for mask, name in zip(masks, names, strict=False):
        color = COLORS.get(name.upper(), (0.2, 0.5, 1.0))
        shown = np.flipud(mask.T).astype(bool)
        rgba[shown] = (*color, ALPHA)
    return rgba


def _patch(name: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=COLORS[name.upper()], alpha=0.8, label=name.upper())
