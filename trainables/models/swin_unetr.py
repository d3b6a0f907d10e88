"""SwinUNETR (paper 003's transformer baseline) from MONAI, behind this project's model contract.

MONAI is imported here only, and only when a SwinUNETR is built: importing MONAI's network
package takes seconds, which every other model kind (and every CLI call) would otherwise pay.
MONAI >= 1.5 infers the input size at run time (``img_size`` is gone), so the wrapper passes
only architecture settings; the patch-size rule (divisible by 32) is checked at config time by
``SwinUNETRConfig.divisor()``.
"""

from __future__ import annotations

from torch import nn

from trainables.models.config import SwinUNETRConfig


def build_swin_unetr(cfg: SwinUNETRConfig, in_channels: int, out_channels: int) -> nn.Module:
    """MONAI's SwinUNETR for ``cfg``: ``(B, in_channels, *S) -> (B, out_channels, *S)`` logits.

    ``S`` is 2-D or 3-D (``cfg.spatial_dims``), every axis divisible by 32. Weights keep
    MONAI's own initialisation (truncated normal for the transformer's linear layers).
    """
    from monai.networks.nets import SwinUNETR  # slow import: see the module docstring

    return SwinUNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        spatial_dims=cfg.spatial_dims,
        feature_size=cfg.feature_size,
        depths=cfg.depths,
        num_heads=cfg.num_heads,
        window_size=cfg.window_size,
        norm_name=cfg.norm_name,
        drop_rate=cfg.drop_rate,
        attn_drop_rate=cfg.attn_drop_rate,
        dropout_path_rate=cfg.dropout_path_rate,
        use_checkpoint=cfg.use_checkpoint,
    )


def describe_swin_unetr(cfg: SwinUNETRConfig) -> str:
    """One line for logs, e.g. ``swin_unetr 3-D feature size 48, depths 2-2-2-2, ...``."""
    parts = [
        f"depths {'-'.join(map(str, cfg.depths))}",
        f"heads {'-'.join(map(str, cfg.num_heads))}",
        f"window {cfg.window_size}",
        f"{cfg.norm_name} norm decoder",
    ]
    if cfg.use_checkpoint:
        parts.append("gradient checkpointing")
    return f"swin_unetr {cfg.spatial_dims}-D feature size {cfg.feature_size}, " + ", ".join(parts)
