"""Cross-component rules of a trial config, checked when the config is validated.

Each rule returns the :class:`ConfigProblem`\\ s it finds (dotted field, value, why), so
``ablate validate`` and ``ablate sweep`` reject an impossible trial before any data is read or a
worker starts; the builders (``build_model``, ``build_loss``, ``build_optimizer``,
``build_scheduler``, the samplers) then assume a valid config. Rules that need one component
only live in that component's model; these span components.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

from trainables.config import ConfigProblem
from trainables.config.base import did_you_mean
from trainables.data.labels import (
    INTERNAL_BINARY,
    INTERNAL_BRATS,
    LabelScheme,
    get_scheme,
    internal_scheme,
    scheme_kind,
)
from trainables.data.splits import folded_case_count
from trainables.data.types import BRATS_MODALITIES, CT_MODALITY
from trainables.models import ModelConfig
from trainables.optim import CosineSchedule

if TYPE_CHECKING:
    from trainables.config.trial import DataConfig, TrialConfig

SYNTHETIC_MODALITIES = {"mri": BRATS_MODALITIES, "ct": (CT_MODALITY,)}


def trial_problems(cfg: TrialConfig) -> list[ConfigProblem]:
    """Every cross-component problem of ``cfg``, in field order."""
    return [
        *data_problems(cfg.data),
        *resample_problems(cfg),
        *patch_problems(cfg),
        *augment_problems(cfg),
        *batch_problems(cfg),
        *schedule_problems(cfg),
        *freeze_problems(cfg),
        *speed_problems(cfg),
        *postprocess_problems(cfg),
    ]


def patch_problems(cfg: TrialConfig) -> list[ConfigProblem]:
    """The training patch must have the model's axes, fit its stride and leave a real bottleneck."""
    patch, kind = list(cfg.sampling.patch_size), cfg.model.kind
    dims = cfg.model.input_dims
    if len(patch) != dims:
        why = f"{patch} has {len(patch)} axes but model {kind!r} takes {dims}-D input"
        return [ConfigProblem("sampling.patch_size", why)]
    divisor = list(cfg.model.divisor())
    if any(p % d for p, d in zip(patch, divisor, strict=True)):
        why = f"{patch} must be divisible by {divisor} (the total stride of model {kind!r})"
        return [ConfigProblem("sampling.patch_size", why)]
    if math.prod(p // d for p, d in zip(patch, divisor, strict=True)) < 2:
        least = [2 * d if d > 1 else p for p, d in zip(patch, divisor, strict=True)]
        why = (
            f"{patch} leaves a 1-voxel bottleneck in model {kind!r} (stride {divisor}); "
            f"normalisation needs more: use at least {least}"
        )
        return [ConfigProblem("sampling.patch_size", why)]
    return []


# Input voxels of one training step (batch x channels x patch) no device holds: 2**31 is 8 GiB
# of float32 input before a single activation (the first layer's are ~30x that), and the
# limit of torch's 32-bit-indexed kernels. A typo (an extra zero or three) lands above it.
MAX_STEP_VOXELS = 2**31


def batch_problems(cfg: TrialConfig) -> list[ConfigProblem]:
    """A step's input must be a size some device can hold (checked at validation, not as an
    out-of-memory error, or an overflow inside torch, when the trial starts)."""
    batch, patch = cfg.train.batch_size, list(cfg.sampling.patch_size)
    voxels = batch * len(cfg.data.modalities) * math.prod(patch)
    if voxels <= MAX_STEP_VOXELS:
        return []
    why = (
        f"{batch} patches of {patch} x {len(cfg.data.modalities)} channels is {voxels:.3g} input "
        f"voxels per step ({voxels * 4 / 2**30:.3g} GiB as float32 before any activation), "
        "more than any device holds: lower train.batch_size or sampling.patch_size"
    )
    return [ConfigProblem("train.batch_size", why)]


def schedule_problems(cfg: TrialConfig) -> list[ConfigProblem]:
    """Warm-up must leave epochs for the schedule; a cosine must not anneal *up* to ``min_lr``."""
    problems = []
    schedule, epochs = cfg.schedule, cfg.train.epochs
    if schedule.warmup_epochs >= epochs:
        why = (
            f"{schedule.warmup_epochs} must be less than train.epochs ({epochs}): the warm-up "
            "would leave no epochs for the schedule"
        )
        problems.append(ConfigProblem("schedule.warmup_epochs", why))
    if isinstance(schedule, CosineSchedule) and schedule.min_lr > cfg.optimizer.lr:
        why = (
            f"{schedule.min_lr} must not exceed optimizer.lr ({cfg.optimizer.lr}): the cosine "
            "anneals from the optimizer's lr down to min_lr"
        )
        problems.append(ConfigProblem("schedule.min_lr", why))
    return problems


def freeze_problems(cfg: TrialConfig) -> list[ConfigProblem]:
    """``train.freeze.module`` must name a sub-module of the network the model config builds."""
    freeze = cfg.train.freeze
    if freeze is None:
        return []
    names = submodule_names(cfg.model)
    if freeze.module in names:
        return []
    top = sorted({n.split(".")[0] for n in names})
    why = (
        f"{freeze.module!r} is not a sub-module of model {cfg.model.kind!r} (top level: "
        f"{', '.join(top)}){did_you_mean(freeze.module, names)}"
    )
    return [ConfigProblem("train.freeze.module", why)]


def speed_problems(cfg: TrialConfig) -> list[ConfigProblem]:
    """Speed switches the trial's model or settings cannot take."""
    problems = _graph_problems(cfg) if cfg.train.speed.cuda_graphs else []
    if cfg.train.speed.channels_last and cfg.model.kind == "clstm":
        problems.append(
            ConfigProblem(
                "train.speed.channels_last",
                "true with model.kind clstm: the C-LSTM runs 2-D convolutions over the slices "
                "of a volume, so neither channels_last_3d nor channels_last fits all of it",
            )
        )
    return problems


def _graph_problems(cfg: TrialConfig) -> list[ConfigProblem]:
    """CUDA graphs need a CUDA device, static modules (no freezing), no second graph machinery
    (``torch.compile``) and no activation checkpointing (it reads the CUDA RNG state to replay
    dropout, which a capture forbids)."""
    checkpoint_field = "use_checkpoint" if cfg.model.kind == "swin_unetr" else "checkpointing"
    checkpointing = getattr(cfg.model, checkpoint_field, False)
    clashes = {
        "device": "cpu" if cfg.device == "cpu" else None,
        "train.compile": "true" if cfg.train.compile else None,
        "train.freeze": "set" if cfg.train.freeze is not None else None,
        f"model.{checkpoint_field}": "true" if checkpointing else None,
    }
    reasons = {
        "device": "CUDA graphs need a CUDA device (use device: cuda or auto)",
        "train.compile": "torch.compile brings its own graphs; turn one of the two off",
        "train.freeze": "freezing changes which parameters get gradients mid-run, which a "
        "captured graph cannot follow",
        "model.checkpointing": "activation checkpointing reads the CUDA RNG state during the "
        "step, which a graph capture forbids; turn one of the two off",
    }
    reasons["model.use_checkpoint"] = reasons["model.checkpointing"]
    return [
        ConfigProblem("train.speed.cuda_graphs", f"true with {field} {value}: {reasons[field]}")
        for field, value in clashes.items()
        if value is not None
    ]


@functools.lru_cache(maxsize=64)
def submodule_names(model: ModelConfig) -> frozenset[str]:
    """Dotted names of every sub-module (not the root) of the network ``model`` describes.

    Built on the meta device: no memory is allocated and no weights are initialised, so this
    costs milliseconds even for a large network. Channel counts do not change the names.
    """
    import torch

    from trainables.models import build_model

    with torch.device("meta"):
        network = build_model(model, 1, 1)
    return frozenset(name for name, _ in network.named_modules() if name)


def resample_problems(cfg: TrialConfig) -> list[ConfigProblem]:
    """A slice model resampled to a target spacing must say whether its slice spacing is
    resampled too: nnU-Net's 2d configuration keeps it, a 3-D one does not."""
    resample = cfg.data.preprocess.resample
    if (
        cfg.model.input_dims == 2
        and resample.kind == "target_spacing"
        and "in_plane_only" not in resample.model_fields_set
    ):
        why = (
            f"model {cfg.model.kind!r} reads 2-D slices: write true to keep each case's slice "
            "spacing and resample in-plane only (nnU-Net's 2d configuration), or false to "
            "resample the slice spacing too"
        )
        return [ConfigProblem("data.preprocess.resample.in_plane_only", why)]
    return []


def augment_problems(cfg: TrialConfig) -> list[ConfigProblem]:
    """Dummy 2-D augmentation keeps one axis of a 3-D patch; a slice model's patch has none."""
    if cfg.augment.dummy_2d and cfg.model.input_dims == 2:
        why = (
            f"model {cfg.model.kind!r} reads 2-D slices, which are rotated and scaled in-plane "
            "already: leave dummy_2d null or false"
        )
        return [ConfigProblem("augment.dummy_2d", why)]
    return []


def postprocess_problems(cfg: TrialConfig) -> list[ConfigProblem]:
    """Largest-component regions must be regions of the labels, where the config alone says
    which labels they are (a named scheme, or generated cases); ``label_scheme: auto`` on real
    data is checked when the data is read (:class:`~trainables.engine.runner.TrialRunner`)."""
    regions = cfg.validation.test_postprocess.largest_component_regions
    scheme = known_scheme(cfg.data)
    missing = [r for r in regions if scheme is not None and r not in scheme.regions]
    if not missing or scheme is None:
        return []
    names = ", ".join(repr(r) for r in missing)
    verb = "is not a region" if len(missing) == 1 else "are not regions"
    why = f"{names} {verb} of {scheme_kind(scheme)} labels (regions: {', '.join(scheme.regions)})"
    return [ConfigProblem("validation.test_postprocess.largest_component_regions", why)]


def known_scheme(data: DataConfig) -> LabelScheme | None:
    """The internal label scheme the config alone fixes: a named ``label_scheme``, or the
    generated cases' (``data.root`` unset); None when the dataset's layout decides."""
    if data.label_scheme != "auto":
        return internal_scheme(get_scheme(data.label_scheme))
    if data.root is None:
        return INTERNAL_BINARY if data.synthetic.modality == "ct" else INTERNAL_BRATS
    return None


def data_problems(data: DataConfig) -> list[ConfigProblem]:
    """The trial validates every epoch; synthetic cases have known modalities and count."""
    problems = []
    split = data.split
    if getattr(split, "fractions", (1, 1, 1))[1] <= 0:
        why = (
            f"{list(split.fractions)} gives no validation cases; a trial validates on them, "
            "so give the val fraction (the second) a positive share"
        )
        problems.append(ConfigProblem("data.split.fractions", why))
    if data.root is None:
        problems += _synthetic_problems(data)
    return problems


def _synthetic_problems(data: DataConfig) -> list[ConfigProblem]:
    """Without ``data.root`` the trial reads generated cases: their modalities and count."""
    problems = []
    synthetic = data.synthetic
    have = SYNTHETIC_MODALITIES[synthetic.modality]
    missing = [m for m in data.modalities if m not in have]
    if missing:
        why = (
            f"{list(data.modalities)} asks for {', '.join(missing)}, but synthetic "
            f"{synthetic.modality} cases (data.root unset) have only {', '.join(have)}"
        )
        problems.append(ConfigProblem("data.modalities", why))
    folds = getattr(data.split, "folds", None)
    foldable = folded_case_count(synthetic.cases, data.split)
    if folds is not None and folds > foldable:
        held_out = (
            f" ({synthetic.cases - foldable} held out for testing)"
            if foldable < synthetic.cases
            else ""
        )
        why = (
            f"{folds} folds need {folds} cases or more to fold; data.synthetic.cases is "
            f"{synthetic.cases}{held_out}"
        )
        problems.append(ConfigProblem("data.split.folds", why))
    return problems
