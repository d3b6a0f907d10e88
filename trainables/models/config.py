"""Model configs: one frozen pydantic model per seed paper's network, selected by ``kind``.

=================  =========================================================================
``kind``           network
=================  =========================================================================
residual_unet      BTRSeg (Carmo): residual 3-D U-Net, norm batch / group / instance
attention_unet     FM-Net (Yilmaz & Arslan): attention U-Net, deep supervision, bottleneck
plain_unet         nnU-Net (002): conv-IN-LeakyReLU x2, strided conv down, features capped
unet               paper 003: classic U-Net, 2-D slice model with BN or small 3-D U-Net
clstm              van de Leemput et al.: 2-D U-Net inside a ConvLSTM over slices
swin_unetr         paper 003's transformer baseline: MONAI's SwinUNETR (Hatamizadeh et al.)
=================  =========================================================================

Every config has ``input_dims`` (2 for slice models, 3 for volume models, clstm included) and
``divisor()`` (what each patch axis must be divisible by). Invalid values fail at config time
with a message that names the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from trainables.models.config_base import (
    UNET_2D_FILTERS,
    UNET_3D_FILTERS,
    Filters,
    NormChoice,
    _check_filters,
    _check_groups,
    _ModelBase,
    _NormedModel,
    _SpatialModel,
    stride_product,
)
from trainables.models.config_swin import SWIN_STAGES, SwinUNETRConfig
from trainables.planning.topology import stage_features

__all__ = [
    "SWIN_STAGES",
    "UNET_2D_FILTERS",
    "UNET_3D_FILTERS",
    "AttentionUNetConfig",
    "CLSTMConfig",
    "Filters",
    "ModelConfig",
    "NormChoice",
    "PlainUNetConfig",
    "ResidualUNetConfig",
    "SwinUNETRConfig",
    "UNetConfig",
]


class ResidualUNetConfig(_NormedModel):
    """BTRSeg's residual U-Net: max-pool down, transposed-conv up, residual blocks.

    Attributes:
        spatial_dims: 3 for a volume model (3-D patches), 2 for a slice model (2-D patches).
        filters: feature maps per resolution stage, highest resolution first (at least 2);
            ``len(filters) - 1`` max-pool steps, so each patch axis must be divisible by
            ``2**(len(filters) - 1)`` (16 for the default five stages).
        norm: normalisation after every convolution: ``batch``, ``group`` (GroupNorm of
            ``group_norm_groups`` groups) or ``instance`` (affine, no running statistics, as in
            nnU-Net).
        group_norm_groups: number of GroupNorm groups with ``norm: group`` (must divide every
            entry of ``filters``); ignored by the other norms.
        negative_slope: LeakyReLU slope after every norm (0 gives ReLU); also the ``a`` of the
            Kaiming-normal weight initialisation.
    """

    kind: Literal["residual_unet"] = "residual_unet"
    spatial_dims: Literal[2, 3] = 3
    filters: Filters = (16, 32, 64, 128, 256)
    norm: NormChoice = "group"
    group_norm_groups: int = Field(8, ge=1)
    negative_slope: float = Field(0.01, ge=0)

    _filters = field_validator("filters")(_check_filters)

    @model_validator(mode="after")
    def _groups_divide_filters(self) -> ResidualUNetConfig:
        _check_groups(self.norm, self.group_norm_groups, self.filters)
        return self


class AttentionUNetConfig(_NormedModel):
    """FM-Net: attention U-Net with instance norm, LeakyReLU 0.02, max-pool, transposed conv.

    ``deep_supervision`` counts the extra heads below the full-resolution output (FM-Net: 2, at
    1/2 and 1/4 resolution). ``bottleneck_depth`` counts the extra double-conv blocks at the
    lowest resolution with ``filters[-1]`` features (FM-Net: 2; the authors' code stacks that many
    ``conv_block``s after the last encoder stage).

    Attributes:
        spatial_dims: 3 for a volume model (3-D patches), 2 for a slice model (2-D patches).
        filters: feature maps per resolution stage, highest resolution first (at least 2);
            ``len(filters) - 1`` max-pool steps, so each patch axis must be divisible by
            ``2**(len(filters) - 1)`` (16 for the default five stages).
        attention: additive attention gates (Oktay et al.) on every skip connection, gated by
            the coarser decoder level; false gives plain skips (the attention ablation).
        deep_supervision: number of extra 1x1 output heads below the full-resolution one, at
            1/2, 1/4, 1/8 resolution (0 to 3, at most ``len(filters) - 2``; 0: one output).
            An integer, unlike ``plain_unet``'s true/false.
        bottleneck_depth: extra double-conv blocks with ``filters[-1]`` features at the lowest
            resolution (0 to 4).
        negative_slope: LeakyReLU slope after every norm (FM-Net: 0.02; 0 gives ReLU); also
            the ``a`` of the Kaiming-normal weight initialisation.
        norm: normalisation after every convolution: ``instance`` (FM-Net's; affine, no running
            statistics), ``batch`` or ``group`` (the norm ablation).
        group_norm_groups: number of GroupNorm groups with ``norm: group`` (must divide every
            entry of ``filters``).
    """

    kind: Literal["attention_unet"] = "attention_unet"
    spatial_dims: Literal[2, 3] = 3
    filters: Filters = (32, 64, 128, 256, 512)
    attention: bool = True
    deep_supervision: int = 2
    bottleneck_depth: int = 2
    negative_slope: float = Field(0.02, ge=0)

    _filters = field_validator("filters")(_check_filters)

    @field_validator("deep_supervision")
    @classmethod
    def _ds_range(cls, value: int) -> int:
        if not 0 <= value <= 3:
            raise ValueError(f"deep_supervision must be between 0 and 3 extra heads, got {value}")
        return value

    @field_validator("bottleneck_depth")
    @classmethod
    def _bottleneck_range(cls, value: int) -> int:
        if not 0 <= value <= 4:
            raise ValueError(f"bottleneck_depth must be between 0 and 4 blocks, got {value}")
        return value

    @model_validator(mode="after")
    def _ds_fits_decoder(self) -> AttentionUNetConfig:
        _check_groups(self.norm, self.group_norm_groups, self.filters)
        levels = len(self.filters) - 1
        if self.deep_supervision > levels - 1:
            raise ValueError(
                f"deep_supervision={self.deep_supervision} needs more decoder levels: filters "
                f"{self.filters} give {levels}, so at most {levels - 1} extra heads"
            )
        return self


def _check_per_stage(
    name: str, values: tuple[tuple[int, ...], ...] | None, stages: int, dims: int
) -> None:
    """A per-stage, per-axis list must have one entry per stage, each with one value per axis."""
    if values is None:
        return
    if len(values) != stages:
        raise ValueError(
            f"{name}: {len(values)} entries for num_stages {stages}: give one per stage"
        )
    bad = [list(v) for v in values if len(v) != dims]
    if bad:
        raise ValueError(f"{name}: each entry needs {dims} values (spatial_dims), got {bad[0]}")


class PlainUNetConfig(_NormedModel):
    """nnU-Net's plain conv U-Net: features ``base_filters * 2**i`` capped at ``max_filters``.

    With ``deep_supervision`` the training-mode output holds the decoder levels nnU-Net gives
    a non-zero loss weight: all but the lowest decoder level (nnU-Net computes that one but
    weights it 0), i.e. all resolutions but the two lowest, ``max(1, num_stages - 2)`` outputs.
    Norm (instance) is nnU-Net's default and ``norm`` its ``norm_op`` ablation; the LeakyReLU
    slope (0.01) is nnU-Net's, not configurable.

    Attributes:
        spatial_dims: 3 for a volume model (3-D patches), 2 for a slice model (2-D patches).
        base_filters: features of the first (full-resolution) stage (nnU-Net: 32); stage ``i``
            has ``base_filters * 2**i``, capped at ``max_filters``.
        num_stages: resolution stages, so ``num_stages - 1`` strided-conv down-sampling steps
            and each patch axis divisible by ``2**(num_stages - 1)`` (32 for the default 6,
            nnU-Net's 3-D depth for a 128^3 patch); at least 2.
        max_filters: cap on the features of any stage (nnU-Net: 320 in 3-D, 512 in 2-D).
        deep_supervision: in training, return the ``max(1, num_stages - 2)`` logits nnU-Net
            weights in its deep-supervision loss (full resolution first); false: one output.
        norm: normalisation after every convolution: ``instance`` (nnU-Net's default),
            ``batch`` or ``group``; only instance norm can take ``train.speed.fused_norm_act``.
        group_norm_groups: number of GroupNorm groups with ``norm: group`` (must divide every
            stage's features).
        strides: per stage, the down-sampling factor (1 or 2) per axis, nnU-Net plans'
            ``pool_op_kernel_sizes``: ``num_stages`` entries, the first all 1, e.g.
            ``[2, 2, 1]`` to keep thick slices' Z (axes X, Y, Z) in the early stages; each
            patch axis must be divisible by the product of its strides. None: 2 on every axis
            after the first stage.
        kernel_sizes: per stage, the convolution kernel (odd) per axis, nnU-Net plans'
            ``conv_kernel_sizes`` (e.g. ``[3, 3, 1]`` while Z is coarse); the decoder block of a
            level uses that level's. None: 3 everywhere.
    """

    kind: Literal["plain_unet"] = "plain_unet"
    spatial_dims: Literal[2, 3] = 3
    base_filters: int = 32
    num_stages: int = 6
    max_filters: int = 320
    deep_supervision: bool = True
    strides: tuple[tuple[Literal[1, 2], ...], ...] | None = None
    kernel_sizes: tuple[tuple[PositiveInt, ...], ...] | None = None

    @field_validator("base_filters", "max_filters")
    @classmethod
    def _positive(cls, value: int, info: Any) -> int:
        if value <= 0:
            raise ValueError(f"{info.field_name} must be strictly positive, got {value}")
        return value

    @field_validator("num_stages")
    @classmethod
    def _enough_stages(cls, value: int) -> int:
        if value < 2:
            raise ValueError(f"num_stages must be at least 2 (one down-sampling step), got {value}")
        return value

    @model_validator(mode="after")
    def _groups_divide_stages(self) -> PlainUNetConfig:
        _check_groups(self.norm, self.group_norm_groups, self.filters)
        for name in ("strides", "kernel_sizes"):
            _check_per_stage(name, getattr(self, name), self.num_stages, self.spatial_dims)
        if self.strides is not None and any(s != 1 for s in self.strides[0]):
            raise ValueError(
                f"strides: the first stage works at full resolution, so its stride is "
                f"{[1] * self.spatial_dims}, got {list(self.strides[0])}"
            )
        kernels = self.kernel_sizes or ()
        if any(k % 2 == 0 for per_axis in kernels for k in per_axis):
            raise ValueError(
                "kernel_sizes: every kernel must be odd (same padding keeps the shape), got "
                f"{[list(k) for k in self.kernel_sizes]}"
            )
        return self

    def divisor(self) -> tuple[int, ...]:
        """What each patch axis must be divisible by: the product of its strides."""
        if self.strides is None:
            return super().divisor()
        return stride_product(self.strides)

    @property
    def filters(self) -> Filters:
        """Features per stage, e.g. (32, 64, 128, 256, 320, 320) for the defaults."""
        return stage_features(self.num_stages, self.base_filters, self.max_filters)

    @property
    def deep_supervision_outputs(self) -> int:
        """Number of logits returned in training mode (1 without deep supervision)."""
        return max(1, self.num_stages - 2) if self.deep_supervision else 1


class UNetConfig(_SpatialModel):
    """Paper 003's classic U-Net: ReLU, max-pool, transposed conv (or nearest) up.

    Without ``filters`` the paper's widths for ``spatial_dims`` are used: 2-D (64..1024), 3-D
    (8, 16, 32, 64). ``norm="none"`` is the plain U-Net the paper started from.

    Attributes:
        spatial_dims: 2 for the slice U-Net (2-D patches), 3 for the small volume U-Net; also
            picks the default ``filters``. The C-LSTM's inner ``unet`` must be 2.
        filters: feature maps per resolution stage, highest resolution first (at least 2);
            each patch axis must be divisible by ``2**(len(filters) - 1)``. Omitted: paper
            003's (64, 128, 256, 512, 1024) in 2-D, (8, 16, 32, 64) in 3-D, or (16, 32, 64,
            128, 256) as the C-LSTM's ``unet``.
        norm: normalisation after every convolution: ``batch`` (paper 003 and 004), ``group``,
            ``instance``, or ``none`` (the plain U-Net; its convolutions then have biases).
        group_norm_groups: number of GroupNorm groups with ``norm: group`` (must divide every
            entry of ``filters``); ignored by the other norms.
        upsample: ``transpose`` (2x transposed convolution) or ``nearest`` (1x1 convolution,
            then 2x nearest-neighbour up-sampling; the C-LSTM's ``unet`` default, paper 004).
    """

    kind: Literal["unet"] = "unet"
    spatial_dims: Literal[2, 3] = 2
    filters: Filters = UNET_2D_FILTERS
    norm: Literal["batch", "group", "instance", "none"] = "batch"
    group_norm_groups: int = Field(8, ge=1)
    upsample: Literal["transpose", "nearest"] = "transpose"

    _filters = field_validator("filters")(_check_filters)

    @model_validator(mode="before")
    @classmethod
    def _paper_filters_for_dims(cls, data: Any) -> Any:
        if isinstance(data, dict) and "filters" not in data and data.get("spatial_dims") == 3:
            return {**data, "filters": UNET_3D_FILTERS}
        return data

    @model_validator(mode="after")
    def _groups_divide_filters(self) -> UNetConfig:
        _check_groups(self.norm, self.group_norm_groups, self.filters)
        return self


def _clstm_unet_default() -> UNetConfig:
    # Paper 004: BN after every conv, ReLU, nearest-neighbour up-sampling, 4 max-pools.
    return UNetConfig(spatial_dims=2, filters=(16, 32, 64, 128, 256), upsample="nearest")


class CLSTMConfig(_ModelBase):
    """Paper 004: a 2-D U-Net per axial slice inside a unidirectional ConvLSTM over the last axis.

    ``unet`` is the inner slice network; the same dict as a ``kind: unet`` model config
    pre-trains it on slices (stage one of the paper's two-stage training). Input and output are
    volumes ``(B, C, X, Y, Z)``; only X and Y are constrained by the U-Net's down-sampling.

    Attributes:
        unet: the inner 2-D slice U-Net; keys left out take the C-LSTM's defaults (filters
            16-256, batch norm, ``upsample: nearest``), not those of ``kind: unet``.
        hidden_channels: channels of the ConvLSTM's hidden and cell states; the U-Net outputs
            ``4 * hidden_channels`` (the input terms of the four gates).
        checkpointing: gradient-checkpoint each slice step (recomputed in the backward pass), so
            only one slice's U-Net activations are held at a time; slower, far less memory. Not
            with ``train.speed.cuda_graphs``.
    """

    kind: Literal["clstm"] = "clstm"
    unet: UNetConfig = Field(default_factory=_clstm_unet_default)
    hidden_channels: int = 8
    checkpointing: bool = True

    @field_validator("unet", mode="before")
    @classmethod
    def _slice_unet(cls, data: Any) -> Any:
        if isinstance(data, dict):  # omitted keys take the C-LSTM defaults, not paper 003's
            return {**_clstm_unet_default().model_dump(), **data}
        return data

    @field_validator("unet")
    @classmethod
    def _unet_is_2d(cls, value: UNetConfig) -> UNetConfig:
        if value.spatial_dims != 2:
            raise ValueError(
                f"unet.spatial_dims must be 2 (a slice U-Net), got {value.spatial_dims}"
            )
        return value

    @field_validator("hidden_channels")
    @classmethod
    def _positive_hidden(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"hidden_channels must be strictly positive, got {value}")
        return value

    @property
    def input_dims(self) -> int:
        return 3

    @property
    def stage_filters(self) -> Filters:
        return self.unet.filters

    def divisor(self) -> tuple[int, ...]:
        d = 2 ** (len(self.unet.filters) - 1)
        return (d, d, 1)


ModelConfig = Annotated[
    ResidualUNetConfig
    | AttentionUNetConfig
    | PlainUNetConfig
    | UNetConfig
    | CLSTMConfig
    | SwinUNETRConfig,
    Field(discriminator="kind"),
]
