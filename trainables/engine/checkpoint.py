"""Checkpoint state of a trial, and warm starts from earlier checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trainables.errors import InputError

if TYPE_CHECKING:
    from trainables.engine.config import InitConfig
    from trainables.engine.runner import TrialRunner

CHECKPOINT_VERSION = 1


def trial_state(runner: TrialRunner) -> dict[str, Any]:
    """Model, optimizer, scheduler, scaler, counters and config of a trial, as a state dict.

    RNG state is not needed: every epoch reseeds from (seed, epoch).
    """
    return {
        "version": CHECKPOINT_VERSION,
        "config": runner.cfg.model_dump(mode="json"),
        "model": runner.model.state_dict(),
        "optimizer": runner.optimizer.state_dict(),
        "scheduler": runner.scheduler.state_dict(),
        "scaler": runner.scaler.state_dict(),
        "epoch": runner.epoch,
        "iteration": runner.iteration,
    }


def restore_state(runner: TrialRunner, state: dict[str, Any]) -> None:
    """Inverse of :func:`trial_state`."""
    if state.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"checkpoint format {state.get('version')!r} is not {CHECKPOINT_VERSION}")
    runner.model.load_state_dict(state["model"])
    runner.optimizer.load_state_dict(state["optimizer"])
    runner.scheduler.load_state_dict(state["scheduler"])
    runner.scaler.load_state_dict(state["scaler"])
    runner.epoch = int(state["epoch"])
    runner.iteration = int(state["iteration"])


def save_checkpoint(runner: TrialRunner, path: str | Path) -> Path:
    """Write the trial state atomically (temp file + rename) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(runner.state_dict(), tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint file; unreadable files are an input error naming the path."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found", path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files
        raise InputError(f"cannot read checkpoint: {err}", path) from None


def apply_init(model: nn.Module, init: InitConfig) -> list[str]:
    """Warm start: load a checkpoint's (or a plain state dict's) weights into ``model``.

    ``init.prefix`` is prepended to every key, so a 2-D U-Net pre-trained on slices loads into
    the ``unet.`` sub-module of a C-LSTM. With ``strict: false`` keys that are missing from the
    model or whose shapes differ (e.g. the pre-trained output head) are skipped.

    Returns:
        The keys that were not loaded.
    """
    state = load_checkpoint(init.checkpoint)
    weights = {f"{init.prefix}{k}": v for k, v in state.get("model", state).items()}
    own = model.state_dict()
    skipped = [k for k, v in weights.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if k.startswith(init.prefix) and k not in weights]
    if init.strict and (skipped or missing):
        raise InputError(
            f"weights do not match the model: {len(skipped)} unexpected or mis-shaped keys "
            f"(e.g. {skipped[:3]}), {len(missing)} missing (e.g. {missing[:3]}); "
            "set train.init.strict: false to load what fits",
            init.checkpoint,
        )
    if len(skipped) == len(weights):
        raise InputError(f"no key fits the model (prefix {init.prefix!r})", init.checkpoint)
    model.load_state_dict({k: v for k, v in weights.items() if k not in skipped}, strict=False)
    return skipped
