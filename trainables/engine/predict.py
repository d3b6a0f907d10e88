"""A trained model (or an ensemble of them) applied to new images, as the trial saw them.

:func:`build_predictor` turns checkpoint dicts (the engine's format, config inside) into a
:class:`Predictor`; :func:`prepare_input` decodes one case and preprocesses it exactly as the
cache did for the trial (the trial's ``data.preprocess``, the model's modalities in its order,
the crop to the non-zero box, float16 storage); :meth:`Predictor.predict` runs the trial's
sliding window (overlap, Gaussian weights, windows per pass, precision) and decodes labels.

One model without test-time augmentation decodes its logits directly, as validation does, so a
prediction equals the engine's evaluation voxel for voxel. Ensembles and ``tta`` average
*probabilities* (softmax or sigmoid, per the loss) over models and mirrored inputs (every
combination of flips of the model's spatial axes, nnU-Net style), then decode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from trainables.config.postprocess import REGION_NAMES, PostprocessConfig
from trainables.config.trial import TrialConfig, parse_trial_config
from trainables.data.labels import LabelScheme
from trainables.data.nifti import load_case
from trainables.data.preprocess import ForegroundNormalization, crop_shape, preprocess
from trainables.data.resample import TargetSpacing
from trainables.data.types import CaseRecord, LoadedCase
from trainables.engine.bench import configured_scheme
from trainables.engine.postprocess import postprocess_labels, with_postprocess
from trainables.engine.precision import autocast_context, effective_precision, resolve_device
from trainables.engine.resize import ToSource, source_labels, to_source_grid
from trainables.engine.tta import mirrored_probabilities, model_labels
from trainables.engine.validation import predict_case
from trainables.errors import InputError
from trainables.losses import (
    logits_to_probabilities,
    output_channels,
)
from trainables.models import build_model


@dataclass
class Member:
    """One model of a predictor: its trial config and network (eval mode, on the device)."""

    cfg: TrialConfig
    model: nn.Module
    source: str


@dataclass
class Predictor:
    """Models that read the same inputs and decode to the same labels.

    Attributes:
        members: one per checkpoint (an ensemble when more than one).
        scheme: the internal label scheme of the outputs (BraTS regions or binary).
        device: where the models run.
    """

    members: list[Member]
    scheme: LabelScheme
    device: torch.device

    @property
    def cfg(self) -> TrialConfig:
        """The first member's config (every member shares data and loss output settings)."""
        return self.members[0].cfg

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.cfg.data.modalities)

    def describe(self) -> str:
        """One line: model kind, members, modalities, device and precision."""
        cfg, n = self.cfg, len(self.members)
        what = f"{n}-model ensemble of {cfg.model.kind}" if n > 1 else cfg.model.kind
        precision = effective_precision(cfg.train.precision, self.device)
        mods = ", ".join(self.modalities)
        line = f"{what} ({cfg.name}) reading {mods}, on {self.device.type} in {precision}"
        steps = postprocess_steps(self.postprocess)
        return f"{line}; post-processing: {steps}" if steps else line

    @property
    def postprocess(self) -> PostprocessConfig:
        """The members' ``validation.test_postprocess``; for an ensemble whose members'
        largest-component steps differ (each run decided its own, ``auto``), each step the
        majority of members took (nnU-Net decides once on every fold's validation cases;
        a tie leaves the step out, as nnU-Net leaves out a step that does not help)."""
        return majority_postprocess(
            [member.cfg.validation.test_postprocess for member in self.members]
        )

    def predict(
        self, image: np.ndarray, tta: bool = False, to_source: ToSource | None = None
    ) -> np.ndarray:
        """(C, *S) preprocessed image -> (*S) uint8 internal label codes, post-processed as the
        test pass does (:attr:`postprocess`); a resampled case (``to_source``,
        :func:`source_grid_of`) gives labels on its source grid's crop."""
        labels = self._labels(image, tta, to_source)
        return postprocess_labels(labels, self.postprocess, self.scheme)

    @torch.no_grad()
    def _labels(self, image: np.ndarray, tta: bool, to_source: ToSource | None) -> np.ndarray:
        if len(self.members) == 1:  # as the test pass predicts it
            member = self.members[0]
            dims, loss = member.cfg.model.input_dims, member.cfg.loss
            logits_of = partial(self._logits, member)
            labels = model_labels(logits_of, image, dims, loss, self.scheme, tta, to_source)
            return labels.to(torch.uint8).cpu().numpy()
        total: torch.Tensor | None = None
        for member in self.members:
            probs = self._probabilities(member, image, tta)
            total = probs if total is None else total.add_(probs)
        assert total is not None
        mean = total / len(self.members)
        labels = source_labels(mean, self.cfg.loss, self.scheme, to_source, probabilities=True)
        return labels.to(torch.uint8).cpu().numpy()

    def _probabilities(self, member: Member, image: np.ndarray, tta: bool) -> torch.Tensor:
        """(K, *S) probabilities of one member, averaged over mirrored inputs with ``tta`` (as
        the test pass does with ``validation.test_tta``)."""
        if tta:
            dims, loss = member.cfg.model.input_dims, member.cfg.loss
            return mirrored_probabilities(partial(self._logits, member), image, dims, loss)
        return logits_to_probabilities(self._logits(member, image)[None], member.cfg.loss)[0]

    def _logits(self, member: Member, image: np.ndarray) -> torch.Tensor:
        """(K, *S) float32 logits (on the device) of one member on a (C, *S) image."""
        precision = effective_precision(member.cfg.train.precision, self.device)
        autocast = autocast_context(precision, self.device)
        volume = np.ascontiguousarray(image, dtype=np.float32)
        return predict_case(member.model, member.cfg, volume, self.device, autocast)


def build_predictor(
    checkpoints: Sequence[tuple[str, dict[str, Any]]],
    device: str = "auto",
    postprocess: bool = True,
) -> Predictor:
    """Models from ``(source, checkpoint dict)`` pairs; InputError naming the source when a
    config is invalid, the weights do not fit it, or ensemble members disagree.
    ``postprocess`` False: the raw label maps, without ``validation.test_postprocess``."""
    if not checkpoints:
        raise InputError("no model to predict with")
    torch_device = resolve_device(device)
    members = [_member(src, ckpt, torch_device, postprocess) for src, ckpt in checkpoints]
    _check_members(members)
    return Predictor(members, configured_scheme(members[0].cfg), torch_device)


def postprocess_steps(cfg: PostprocessConfig) -> str:
    """``largest component of the foreground, of et`` (empty when nothing is applied)."""
    if not cfg.decided:
        return "largest components as nnU-Net's rule decides after training (auto)"
    steps = ["largest component of the foreground"] if cfg.largest_component else []
    steps += [f"largest component of {region}" for region in cfg.largest_component_regions]
    if cfg.min_et_voxels:
        steps.insert(0, f"enhancing tumour under {cfg.min_et_voxels} voxels to necrosis")
    return ", ".join(steps)


def majority_postprocess(configs: Sequence[PostprocessConfig]) -> PostprocessConfig:
    """One post-processing for an ensemble: ``min_et_voxels`` of the first (a cell's runs
    share it), each largest-component step taken by more than half of ``configs``; regions
    in the members' order when they agree, else in the order ``auto`` tries them (the
    order changes the result). An undecided ``auto`` is an error."""
    if any(not c.decided for c in configs):
        raise ValueError("an undecided largest_component 'auto' has no steps to vote on")
    lists = {c.largest_component_regions for c in configs}
    regions = [r for c in configs for r in c.largest_component_regions]
    kept = [r for r in REGION_NAMES if 2 * regions.count(r) > len(configs)]
    foreground = 2 * sum(c.largest_component is True for c in configs) > len(configs)
    agreed = next(iter(lists)) if len(lists) == 1 else tuple(kept)
    update = {"largest_component": foreground, "largest_component_regions": agreed}
    return configs[0].model_copy(update=update)


def _member(
    source: str, checkpoint: dict[str, Any], device: torch.device, postprocess: bool = True
) -> Member:
    cfg = parse_trial_config(checkpoint.get("config"), source)
    _check_dataset_numbers(cfg, source)
    if not postprocess:
        cfg = with_postprocess(cfg, PostprocessConfig())
    if not cfg.validation.test_postprocess.decided:
        raise InputError(
            "validation.test_postprocess.largest_component is 'auto', but the run never "
            "decided it (it decides after its last epoch; this model was saved by a run "
            "stopped earlier): for a sweep's run `ablate test SWEEP` decides it and replaces "
            "the run's model; --no-postprocess writes the label maps without post-processing",
            source,
        )
    scheme = configured_scheme(cfg)
    model = build_model(cfg.model, len(cfg.data.modalities), output_channels(cfg.loss, scheme))
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[:2]
        raise InputError(
            f"the weights do not fit the model its config describes ({' '.join(first)})", source
        ) from None
    return Member(cfg, model.to(device).eval(), source)


def _check_dataset_numbers(cfg: TrialConfig, source: str) -> None:
    """A model must carry every dataset-level number its preprocessing applies: ``foreground``
    normalisation's statistics and ``target_spacing`` resampling's spacing are the training
    dataset's, which new images cannot provide."""
    norm = cfg.data.preprocess.normalization
    try:
        if isinstance(norm, ForegroundNormalization):
            for modality in cfg.data.modalities:
                norm.stats_for(modality)
        if isinstance(cfg.data.preprocess.resample, TargetSpacing):
            cfg.data.preprocess.resample.target()
    except InputError as err:
        raise InputError(f"{err.where}: {err.message}", source) from None


def _check_members(members: list[Member]) -> None:
    """Ensemble members must read the same channels the same way and decode alike."""
    first = members[0]
    for other in members[1:]:
        same = (
            other.cfg.data.modalities == first.cfg.data.modalities
            and other.cfg.data.preprocess == first.cfg.data.preprocess
            and other.cfg.loss.output == first.cfg.loss.output
            and configured_scheme(other.cfg) == configured_scheme(first.cfg)
        )
        if not same:
            raise InputError(
                "cannot ensemble: its modalities, preprocessing or outputs differ from those of "
                f"{first.source}",
                other.source,
            )


def source_grid_of(case: LoadedCase, source_shape: Sequence[int]) -> ToSource | None:
    """How a prepared input's outputs go back to its source grid's crop (``source_shape``: the
    source images' (X, Y, Z)); None when it was not resampled."""
    return to_source_grid(crop_shape(case.bbox, source_shape), case.spacing, case.source_spacing)


def prepare_input(record: CaseRecord, predictor: Predictor) -> LoadedCase:
    """Decode one case's images and preprocess them as the trial's cache did.

    Returns:
        The case with image (C, X', Y', Z') float32 (values rounded through float16, as the
        cache stores them), ``bbox`` the crop from the source grid, ``label`` None; resampled
        to the training's spacing when its config says so (``source_spacing`` set).

    Raises:
        CaseError: a modality the model reads is missing, or a file is unreadable (named).
    """
    case = load_case(replace(record, label=None), predictor.modalities)  # labels unused
    case = preprocess(case, predictor.cfg.data.preprocess)
    image = case.image.astype(np.float16).astype(np.float32)
    return replace(case, image=image)
