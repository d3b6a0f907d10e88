"""nnU-Net v2's own training step for the BraTS (region-based) 3d_fullres configuration.

The reference side of ``benchmarks/bench_vs_nnunet.py``. The network is nnU-Net's own
``PlainConvUNet`` from ``dynamic-network-architectures`` (the package nnU-Net v2 builds its
networks with; ``pip install --no-deps dynamic-network-architectures``, a benchmark-only
dependency). The rest of nnU-Net (``nnunetv2``) pulls a large dependency tree, so the pieces of
its step are re-implemented here, each following the nnU-Net v2 source it cites
(github.com/MIC-DKFZ/nnUNet):

* loss: ``DC_and_BCE_loss`` (``nnunetv2/training/loss/compound_losses.py``) with
  ``MemoryEfficientSoftDiceLoss`` (``nnunetv2/training/loss/dice.py``), configured as
  ``nnUNetTrainer._build_loss`` does for regions: ``batch_dice`` from the plan (True for
  3d_fullres), ``do_bg=True``, ``smooth=1e-5``, weights 1/1; wrapped in
  ``DeepSupervisionWrapper`` (``nnunetv2/training/loss/deep_supervision.py``) with weights
  ``1/2**i`` over the decoder outputs, the lowest one set to 0, normalised to sum 1;
* targets: region masks (``ConvertSegmentationToRegionsTransform``) downsampled per output with
  ``DownsampleSegForDSTransform`` (batchgeneratorsv2: ``interpolate(..., mode="nearest-exact")``
  on the masks). nnU-Net does this in its CPU data-loader workers, so it is *not* part of its
  timed step; here it is done once, when the step is built;
* optimizer: ``nnUNetTrainer.configure_optimizers``: ``SGD(lr=1e-2, momentum=0.99,
  nesterov=True, weight_decay=3e-5)``, torch's default (foreach) implementation;
* step: ``nnUNetTrainer.train_step``: ``zero_grad(set_to_none=True)``; forward *and loss* under
  ``torch.autocast("cuda")`` (fp16) on CUDA only; ``GradScaler`` scale/backward, ``unscale_``,
  ``clip_grad_norm_(12)``, ``step``, ``update``; the loss is returned as a NumPy value
  (``l.detach().cpu().numpy()``, a host sync every step). On CPU: plain fp32, no scaler;
* ``torch.backends.cudnn.benchmark = True`` is set by nnU-Net's ``run_training``; the benchmark
  script sets it around the reference's steps.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.data.labels import LabelScheme
from trainables.losses.common import region_masks

# nnU-Net v2's 3d_fullres plan for BraTS 2021 (Dataset137, nnUNetPlans): architecture kwargs of
# ``dynamic_network_architectures.architectures.unet.PlainConvUNet``.
BRATS_FEATURES: tuple[int, ...] = (32, 64, 128, 256, 320, 320)
BRATS_INPUT_CHANNELS = 4  # t1, t1ce, t2, flair
BRATS_REGIONS = 3  # whole tumour, tumour core, enhancing tumour (sigmoid outputs)
INITIAL_LR = 1e-2  # nnUNetTrainer.__init__
WEIGHT_DECAY = 3e-5
GRAD_CLIP = 12.0  # nnUNetTrainer.train_step


def plan_kwargs(features: tuple[int, ...] = BRATS_FEATURES, spatial_dims: int = 3) -> dict:
    """``PlainConvUNet`` kwargs of the BraTS 3d_fullres plan for the given stage widths.

    Kernel 3 everywhere, stride 1 at the first stage and 2 after, two convs per encoder and
    decoder stage, conv bias, affine instance norm (eps 1e-5), in-place LeakyReLU (slope 0.01,
    torch's default), no dropout, deep supervision on.
    """
    n_stages = len(features)
    conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
    norm = nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d
    return {
        "n_stages": n_stages,
        "features_per_stage": list(features),
        "conv_op": conv,
        "kernel_sizes": [[3] * spatial_dims] * n_stages,
        "strides": [[1] * spatial_dims] + [[2] * spatial_dims] * (n_stages - 1),
        "n_conv_per_stage": [2] * n_stages,
        "n_conv_per_stage_decoder": [2] * (n_stages - 1),
        "conv_bias": True,
        "norm_op": norm,
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": nn.LeakyReLU,
        "nonlin_kwargs": {"inplace": True},
        "deep_supervision": True,
    }


def build_network(
    input_channels: int, num_classes: int, features: tuple[int, ...], spatial_dims: int = 3
) -> nn.Module:
    """nnU-Net's network as ``get_network_from_plans`` builds it (He init, slope 1e-2).

    Training mode returns ``len(features) - 1`` logits ``(B, num_classes, *S / 2**i)``,
    highest resolution first.
    """
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    network = PlainConvUNet(
        input_channels=input_channels,
        num_classes=num_classes,
        **plan_kwargs(features, spatial_dims),
    )
    network.apply(network.initialize)
    return network


class MemoryEfficientSoftDiceLoss(nn.Module):
    """nnU-Net's ``MemoryEfficientSoftDiceLoss`` for one-hot (region) targets, no loss mask.

    ``-mean_c (2 Σ x y + smooth) / clip(Σ y + Σ x + smooth, 1e-8)`` with ``x = sigmoid(logits)``;
    sums over the spatial axes, then over the batch when ``batch_dice``. Note the sign: nnU-Net
    returns ``-Dice`` (our engine's losses return ``1 - Dice``).
    """

    def __init__(self, batch_dice: bool = True, do_bg: bool = True, smooth: float = 1e-5):
        super().__init__()
        self.batch_dice, self.do_bg, self.smooth = batch_dice, do_bg, smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``(B, C, *S)`` logits and ``(B, C, *S)`` bool masks -> scalar."""
        x = torch.sigmoid(logits)
        if not self.do_bg:
            x, target = x[:, 1:], target[:, 1:]
        axes = tuple(range(2, x.ndim))
        with torch.no_grad():
            sum_gt = target.sum(axes)
        intersect = (x * target).sum(axes)
        sum_pred = x.sum(axes)
        if self.batch_dice:
            intersect, sum_pred, sum_gt = intersect.sum(0), sum_pred.sum(0), sum_gt.sum(0)
        dc = (2 * intersect + self.smooth) / torch.clip(sum_gt + sum_pred + self.smooth, 1e-8)
        return -dc.mean()


class DCAndBCELoss(nn.Module):
    """nnU-Net's ``DC_and_BCE_loss`` without an ignore label: ``BCE + Dice term`` (weights 1)."""

    def __init__(self, batch_dice: bool = True, smooth: float = 1e-5) -> None:
        super().__init__()
        self.ce = nn.BCEWithLogitsLoss()
        self.dc = MemoryEfficientSoftDiceLoss(batch_dice=batch_dice, do_bg=True, smooth=smooth)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``(B, R, *S)`` logits and ``(B, R, *S)`` bool region masks -> scalar."""
        dc_loss = self.dc(logits, target)
        ce_loss = self.ce(logits, target.float())
        return ce_loss + dc_loss


class DeepSupervisionWrapper(nn.Module):
    """nnU-Net's ``DeepSupervisionWrapper``: ``Σ_i w_i loss(output_i, target_i)``, skipping
    outputs whose weight is 0 (the lowest-resolution one)."""

    def __init__(self, loss: nn.Module, weights: list[float]) -> None:
        super().__init__()
        self.loss, self.weights = loss, tuple(weights)

    def forward(self, outputs: list[Tensor], targets: list[Tensor]) -> Tensor:
        terms = [
            w * self.loss(o, t)
            for w, o, t in zip(self.weights, outputs, targets, strict=True)
            if w != 0.0
        ]
        return sum(terms[1:], terms[0])


def deep_supervision_weights(n_stages: int) -> list[float]:
    """``nnUNetTrainer._build_loss``: one weight per decoder output (``n_stages - 1``), ``1/2**i``,
    the last set to 0, normalised to sum 1 (6 stages: [8, 4, 2, 1, 0] / 15)."""
    weights = [1 / 2**i for i in range(n_stages - 1)]
    weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def region_targets(label: Tensor, scheme: LabelScheme, n_outputs: int) -> list[Tensor]:
    """Per-output bool region masks, as nnU-Net's loader delivers them.

    Args:
        label: ``(B, *S)`` int64 internal codes.
        scheme: label scheme whose regions (in order) are the output channels.
        n_outputs: number of deep-supervision outputs; output ``i`` has spatial size
            ``S / 2**i`` (the plan's strides are 2 after the first stage).

    Returns:
        ``[(B, R, *S / 2**i) bool for i in range(n_outputs)]``, downsampled with
        ``nearest-exact`` as ``DownsampleSegForDSTransform``.
    """
    masks = region_masks(label, scheme)  # (B, R, *S) float 0/1
    targets = [masks.bool()]
    for i in range(1, n_outputs):
        size = [s // 2**i for s in masks.shape[2:]]
        targets.append(F.interpolate(masks, size=size, mode="nearest-exact").bool())
    return targets


@dataclass
class NNUNetStep:
    """nnU-Net's training step on a fixed batch (see the module docstring).

    Attributes:
        network: the eager ``PlainConvUNet``; ``step_network`` may be ``torch.compile`` of it.
        data: ``(B, C, *S)`` float32 input on the device.
        target: per-output ``(B, R, *S / 2**i)`` bool region masks on the device.
        grad_scaler: a ``GradScaler`` on CUDA, None on CPU (as nnU-Net).
    """

    network: nn.Module
    step_network: nn.Module
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    grad_scaler: torch.amp.GradScaler | None
    data: Tensor
    target: list[Tensor]
    device: torch.device

    def autocast(self) -> AbstractContextManager:
        """fp16 autocast on CUDA, nothing elsewhere (``nnUNetTrainer.train_step``)."""
        if self.device.type == "cuda":
            return torch.autocast(self.device.type, enabled=True)
        return nullcontext()

    def step(self) -> float:
        """One optimizer step; returns the loss as a float (a host sync, as nnU-Net)."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            output = self.step_network(self.data)
            loss = self.loss(output, self.target)
        params = self.network.parameters()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            self.optimizer.step()
        return float(loss.detach().cpu().numpy())


def build_reference(
    image: Tensor,
    label: Tensor,
    scheme: LabelScheme,
    features: tuple[int, ...] = BRATS_FEATURES,
    compile_model: bool = False,
) -> NNUNetStep:
    """nnU-Net's step for ``features`` on a given batch.

    Args:
        image: ``(B, C, *S)`` float32 input, already on the training device (copied).
        label: ``(B, *S)`` int64 internal codes on the same device.
        scheme: label scheme whose regions are the outputs (BraTS: WT, TC, ET).
        features: stage widths (the BraTS plan by default).
        compile_model: ``torch.compile`` the network and the Dice term, as nnU-Net >= 2.4 does
            by default on CUDA (``nnUNetTrainer._do_i_compile``; ``nnUNet_compile=f`` turns
            it off).

    Returns:
        the step, with the network in training mode.
    """
    network = build_network(image.shape[1], len(scheme.regions), features, image.ndim - 2)
    network = network.to(image.device).train()
    loss = DCAndBCELoss(batch_dice=True)
    if compile_model:
        loss.dc = torch.compile(loss.dc)
    optimizer = torch.optim.SGD(
        network.parameters(), INITIAL_LR, weight_decay=WEIGHT_DECAY, momentum=0.99, nesterov=True
    )
    cuda = image.device.type == "cuda"
    return NNUNetStep(
        network=network,
        step_network=torch.compile(network) if compile_model else network,
        loss=DeepSupervisionWrapper(loss, deep_supervision_weights(len(features))),
        optimizer=optimizer,
        grad_scaler=torch.amp.GradScaler("cuda") if cuda else None,
        data=image.clone(),
        target=region_targets(label, scheme, len(features) - 1),
        device=image.device,
    )
