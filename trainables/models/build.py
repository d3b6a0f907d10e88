"""``build_model(cfg, in_channels, out_channels)``: turn a model config into a ``torch.nn.Module``.

Each config maps to a :class:`UNetSpec` (the one U-Net code path); the C-LSTM wraps a 2-D U-Net;
``swin_unetr`` is MONAI's network (:mod:`trainables.models.swin_unetr`).
Weights are initialised like nnU-Net (kaiming normal with ``a`` = the LeakyReLU slope, zero
biases). Contract: input ``(B, in_channels, *S)``; output logits ``(B, out_channels, *S)``, or in
training mode with deep supervision a list of logits, highest resolution first.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from trainables.errors import InputError
from trainables.models.blocks import ConvOps, init_weights
from trainables.models.clstm import ConvLSTMUNet
from trainables.models.config import (
    AttentionUNetConfig,
    CLSTMConfig,
    ModelConfig,
    PlainUNetConfig,
    ResidualUNetConfig,
    SwinUNETRConfig,
    UNetConfig,
)
from trainables.models.swin_unetr import build_swin_unetr, describe_swin_unetr
from trainables.models.unet import UNet, UNetSpec

NNUNET_SLOPE = 0.01  # nnU-Net's LeakyReLU negative slope


def spec_for(cfg: ModelConfig, fused_norm_act: bool = False) -> UNetSpec:
    """The U-Net description of a (non-C-LSTM) config.

    ``fused_norm_act`` (``train.speed.fused_norm_act``) fuses instance norm + activation where a
    model's norm is instance norm (:class:`ConvOps` ignores it for other norms).
    """
    fused = fused_norm_act
    if isinstance(cfg, ResidualUNetConfig):
        ops = ConvOps(cfg.spatial_dims, cfg.norm, cfg.negative_slope, cfg.group_norm_groups, fused)
        return UNetSpec(ops, cfg.filters, block="residual")
    if isinstance(cfg, AttentionUNetConfig):
        ops = ConvOps(cfg.spatial_dims, cfg.norm, cfg.negative_slope, cfg.group_norm_groups, fused)
        heads = cfg.deep_supervision or None
        return UNetSpec(
            ops,
            cfg.filters,
            attention=cfg.attention,
            bottleneck_depth=cfg.bottleneck_depth,
            deep_supervision_heads=heads,
        )
    if isinstance(cfg, PlainUNetConfig):
        ops = ConvOps(cfg.spatial_dims, cfg.norm, NNUNET_SLOPE, cfg.group_norm_groups, fused)
        heads = cfg.deep_supervision_outputs - 1 if cfg.deep_supervision else None
        return UNetSpec(
            ops,
            cfg.filters,
            down="strided",
            deep_supervision_heads=heads,
            strides=cfg.strides,
            kernel_sizes=cfg.kernel_sizes,
        )
    if isinstance(cfg, UNetConfig):
        ops = ConvOps(cfg.spatial_dims, cfg.norm, 0.0, cfg.group_norm_groups, fused)
        return UNetSpec(ops, cfg.filters, up=cfg.upsample)
    raise TypeError(f"no U-Net spec for {type(cfg).__name__}")


def build_model(
    cfg: ModelConfig, in_channels: int, out_channels: int, fused_norm_act: bool = False
) -> nn.Module:
    """Build and initialise the network ``cfg`` describes.

    Args:
        cfg: a validated model config.
        in_channels: input channels (modalities).
        out_channels: output channels (classes or regions); outputs are logits.
        fused_norm_act: ``train.speed.fused_norm_act``: instance norm + (Leaky)ReLU as one
            fused layer (same parameters and state-dict keys; SwinUNETR ignores it).
    """
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if value <= 0:
            raise InputError(f"{name} must be strictly positive, got {value}", where="model")
    if isinstance(cfg, CLSTMConfig):
        return _build_clstm(cfg, in_channels, out_channels, fused_norm_act)
    if isinstance(cfg, SwinUNETRConfig):
        return build_swin_unetr(cfg, in_channels, out_channels)
    spec = spec_for(cfg, fused_norm_act)
    model = UNet(spec, in_channels, out_channels)
    model.apply(partial(init_weights, negative_slope=spec.ops.negative_slope))
    return model


def _build_clstm(
    cfg: CLSTMConfig, in_channels: int, out_channels: int, fused_norm_act: bool
) -> ConvLSTMUNet:
    unet = build_model(cfg.unet, in_channels, 4 * cfg.hidden_channels, fused_norm_act)
    assert isinstance(unet, UNet)
    model = ConvLSTMUNet(unet, cfg.hidden_channels, out_channels, cfg.checkpointing)
    init_weights(model.hidden_conv, negative_slope=0.0)
    init_weights(model.head, negative_slope=0.0)
    model.reset_forget_bias()
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def describe(cfg: ModelConfig) -> str:
    """One line for logs and reports, e.g. ``attention_unet 3-D 32-64-128-256-512 ...``."""
    if isinstance(cfg, CLSTMConfig):
        ckpt = "checkpointed" if cfg.checkpointing else "no checkpointing"
        return f"clstm (hidden {cfg.hidden_channels}, {ckpt}) over {describe(cfg.unet)}"
    if isinstance(cfg, SwinUNETRConfig):
        return describe_swin_unetr(cfg)
    spec = spec_for(cfg)
    parts = [
        cfg.kind,
        f"{spec.ops.spatial_dims}-D",
        "-".join(str(f) for f in spec.filters),
        f"{spec.ops.norm} norm",
        f"{spec.block} blocks",
        f"{spec.down} down",
        f"{spec.up} up",
    ]
    if spec.attention:
        parts.append("attention gates")
    if spec.bottleneck_depth:
        parts.append(f"bottleneck {spec.bottleneck_depth}")
    if spec.deep_supervision_heads is not None:
        parts.append(f"deep supervision +{spec.deep_supervision_heads}")
    return " ".join(parts[:3]) + ", " + ", ".join(parts[3:])
