"""The one checkpoint format of the engine, its file I/O, and warm starts.

A checkpoint is a versioned dict (:func:`make_checkpoint`)::

    {"version": 2, "config": {...}, "model": state_dict, "epoch": int, "iteration": int,
     "best": {"epoch": int, "value": float, "metric": str},
     "optimizer"?, "scheduler"?, "scaler"?: state dicts}

The *training state* (``state.pt``) carries the optional optimizer, scheduler and scaler
states, so a trial continues exactly where it was; the *best model* (``best.pt``) is the same
format with the best epoch's weights and without them. This module is pure file I/O: it
imports nothing from the runner (which builds the dicts it writes).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trainables.errors import InputError

if TYPE_CHECKING:
    from trainables.config.trial import InitConfig

CHECKPOINT_VERSION = 2  # 1: state.pt without "best"; best.pt a different, unversioned dict
TRAINING_STATE_FILE = "state.pt"  # model + optimizer/scheduler/scaler: continue training
BEST_MODEL_FILE = "best.pt"  # the best epoch's weights, no optimizer state
REQUIRED_KEYS = ("version", "config", "model", "epoch", "iteration", "best")
TRAINING_KEYS = ("optimizer", "scheduler", "scaler")


def make_checkpoint(
    config: dict[str, Any],
    model: dict[str, torch.Tensor],
    epoch: int,
    iteration: int,
    best: dict[str, Any] | None = None,
    **training: dict[str, Any],
) -> dict[str, Any]:
    """A checkpoint dict of the current format.

    Args:
        config: the trial config as JSON-able data (``TrialConfig.model_dump(mode="json")``).
        model: the model's state dict (weights).
        epoch, iteration: completed epochs and optimizer steps at these weights.
        best: ``{"epoch", "value", "metric"}`` of the best epoch so far (epoch 0: none yet).
        training: ``optimizer=``, ``scheduler=``, ``scaler=`` state dicts (training state only).
    """
    unknown = set(training) - set(TRAINING_KEYS)
    if unknown:
        raise ValueError(f"unknown checkpoint keys {sorted(unknown)}; allowed {TRAINING_KEYS}")
    best = best or {"epoch": 0, "value": math.nan, "metric": ""}
    return {
        "version": CHECKPOINT_VERSION,
        "config": config,
        "model": model,
        "epoch": int(epoch),
        "iteration": int(iteration),
        "best": dict(best),
        **training,
    }


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint dict atomically (temp file + rename: a crash leaves the old file)."""
    missing = [k for k in REQUIRED_KEYS if k not in checkpoint]
    if missing or checkpoint["version"] != CHECKPOINT_VERSION:
        raise ValueError(f"not a version {CHECKPOINT_VERSION} checkpoint (missing {missing})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)
    return path


def read_torch_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Whatever a ``.pt`` file holds; a missing or unreadable file is an InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found", path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files
        raise InputError(f"cannot read checkpoint: {_load_failure(err)}", path) from None


def _load_failure(err: Exception) -> str:
    """torch.load's reason in one line (its own messages run to ten, with advice to unpickle
    untrusted code, which ablate never does)."""
    text = str(err).strip()
    if "Weights only load failed" in text:
        return (
            "not an ablate checkpoint (torch.load with weights_only=True refused it: a corrupt "
            "file, or one holding Python objects besides tensors and plain data)"
        )
    # A truncated zip or a text file surfaces as a bare KeyError('101') or "[Errno 22]": say
    # what the file is, and keep torch's words for whoever debugs it.
    first = (text.splitlines() or [""])[0]
    return (
        "not a readable torch file (corrupt, truncated or another format; "
        f"{type(err).__name__}: {first})"
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint of the current format; any other content is an InputError naming
    the file (an older version, or a file that is not an ablate checkpoint)."""
    data = read_torch_file(path, map_location)
    version = data.get("version") if isinstance(data, dict) else None
    if version != CHECKPOINT_VERSION:
        raise InputError(
            f"checkpoint format {version!r} is not {CHECKPOINT_VERSION} "
            "(written by another ablate version, or not an ablate checkpoint)",
            path,
        )
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise InputError(f"checkpoint lacks {', '.join(missing)}", path)
    return data


def _init_weights(path: Path) -> dict[str, torch.Tensor]:
    """Weights for a warm start: a current checkpoint's ``model``, or a plain state dict
    (tensors only, e.g. exported from another tool); old checkpoint versions are refused."""
    data = read_torch_file(path)
    if isinstance(data, dict) and "version" in data:
        return load_checkpoint(path)["model"]
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return data
    raise InputError("neither an ablate checkpoint nor a state dict of tensors", path)


def apply_init(model: nn.Module, init: InitConfig) -> list[str]:
    """Warm start: load a checkpoint's (or a plain state dict's) weights into ``model``.

    ``init.prefix`` is prepended to every key, so a 2-D U-Net pre-trained on slices loads into
    the ``unet.`` sub-module of a C-LSTM. With ``strict: false`` keys that are missing from the
    model or whose shapes differ (e.g. the pre-trained output head) are skipped.

    Returns:
        The keys that were not loaded.
    """
    weights = {f"{init.prefix}{k}": v for k, v in _init_weights(Path(init.checkpoint)).items()}
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
