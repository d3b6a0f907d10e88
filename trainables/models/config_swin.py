"""Paper 003's transformer baseline: the SwinUNETR model config (MONAI's network)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from trainables.models.config_base import Filters, _SpatialModel

SWIN_STAGES = 4  # MONAI's SwinUNETR decoder is built for exactly four transformer stages


class SwinUNETRConfig(_SpatialModel):
    """Paper 003's SwinUNETR baseline: :class:`monai.networks.nets.SwinUNETR` (Sec. 3.3).

    A Swin transformer encoder (patch embedding of stride 2, then four stages each halving the
    resolution) with a convolutional U-Net decoder; the total stride is ``2**5 = 32`` per axis.
    Stage ``i`` has ``feature_size * 2**i`` channels split over ``num_heads[i]`` heads.
    Deep supervision is not offered: the network has one output.

    Attributes:
        spatial_dims: 3 for volumes, 2 for slices (MONAI's ``spatial_dims``); each patch axis
            must be divisible by 32.
        feature_size: embedding width; a multiple of 12 (MONAI's requirement). MONAI's BraTS
            tutorial uses 48; paper 003 lowered it to 36 to fit Colab's memory (Sec. 3.3.1).
        depths: Swin blocks per stage (4 stages).
        num_heads: attention heads per stage (4 stages).
        window_size: local attention window edge, in tokens.
        use_checkpoint: gradient checkpointing of the Swin blocks (less memory, slower step).
        drop_rate: dropout after the patch embedding and inside the Swin blocks (MLP, attention
            output).
        attn_drop_rate: dropout rate of the attention weights.
        dropout_path_rate: stochastic depth: the rate at which a block's residual branch is
            dropped, rising linearly over the blocks to this value.
        norm_name: normalisation of the convolutional decoder blocks.
    """

    kind: Literal["swin_unetr"] = "swin_unetr"
    spatial_dims: Literal[2, 3] = 3
    feature_size: int = Field(48, ge=12)
    depths: tuple[int, int, int, int] = (2, 2, 2, 2)
    num_heads: tuple[int, int, int, int] = (3, 6, 12, 24)
    window_size: int = Field(7, ge=1)
    use_checkpoint: bool = False
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    attn_drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    dropout_path_rate: float = Field(0.0, ge=0.0, lt=1.0)
    norm_name: Literal["instance", "batch"] = "instance"

    @field_validator("feature_size")
    @classmethod
    def _multiple_of_12(cls, value: int) -> int:
        if value % 12:
            lower, upper = value // 12 * 12, (value // 12 + 1) * 12
            raise ValueError(
                f"feature_size must be divisible by 12 (SwinUNETR), got {value}; "
                f"try {lower or 12} or {upper}"
            )
        return value

    @field_validator("depths", "num_heads")
    @classmethod
    def _positive_entries(cls, value: tuple[int, ...], info: Any) -> tuple[int, ...]:
        if any(v <= 0 for v in value):
            raise ValueError(f"{info.field_name} must be strictly positive, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _heads_divide_widths(self) -> SwinUNETRConfig:
        widths = self.stage_filters[1 : SWIN_STAGES + 1]
        bad = [(w, h) for w, h in zip(widths, self.num_heads, strict=True) if w % h]
        if bad:
            raise ValueError(
                f"num_heads {list(self.num_heads)} must divide the stage widths {list(widths)} "
                f"(feature_size * 2**i); not {[f'{w}/{h}' for w, h in bad]}"
            )
        return self

    @property
    def stage_filters(self) -> Filters:
        """Channels per resolution, full resolution first: f, f, 2f, 4f, 8f, 16f."""
        f = self.feature_size
        return (f, *(f * 2**i for i in range(SWIN_STAGES + 1)))

    def divisor(self) -> tuple[int, ...]:
        """Patch embedding (stride 2) then 4 patch mergings: 32 per axis."""
        return (2 ** (SWIN_STAGES + 1),) * self.input_dims
