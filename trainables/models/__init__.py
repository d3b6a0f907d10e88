"""Segmentation networks of the seed papers, composed from dimension-agnostic blocks.

``build_model(cfg, in_channels, out_channels)`` turns a :data:`ModelConfig` (selected by ``kind``:
``residual_unet``, ``attention_unet``, ``plain_unet``, ``unet``, ``clstm``, ``swin_unetr``) into
a module. 2-D and 3-D U-Nets share one code path (:mod:`trainables.models.blocks`,
:mod:`trainables.models.unet`); ``swin_unetr`` wraps MONAI's network.
"""

from trainables.models.build import build_model, count_parameters, describe, spec_for
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
from trainables.models.unet import UNet, UNetSpec

__all__ = [
    "AttentionUNetConfig",
    "CLSTMConfig",
    "ConvLSTMUNet",
    "ModelConfig",
    "PlainUNetConfig",
    "ResidualUNetConfig",
    "SwinUNETRConfig",
    "UNet",
    "UNetConfig",
    "UNetSpec",
    "build_model",
    "count_parameters",
    "describe",
    "spec_for",
]
