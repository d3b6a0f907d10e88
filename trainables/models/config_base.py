"""What the model configs share: the filters and norm-group checks, the patch divisor, and the
settings several kinds declare in common (a kind switch keeps those: trainables.config.kinds)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from trainables.config import Frozen

NormChoice = Literal["batch", "group", "instance"]
Filters = tuple[int, ...]

# Paper 003: the 2-D slice U-Net keeps Ronneberger's widths; the 3-D U-Net is much smaller.
UNET_2D_FILTERS: Filters = (64, 128, 256, 512, 1024)
UNET_3D_FILTERS: Filters = (8, 16, 32, 64)


def stride_product(strides: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Per axis, the product of the per-stage strides: what an input axis must divide by."""
    return tuple(math.prod(axis) for axis in zip(*strides, strict=True))


def _check_filters(value: Filters) -> Filters:
    if len(value) < 2:
        raise ValueError(f"filters needs at least 2 stages (one down-sampling step), got {value}")
    if any(f <= 0 for f in value):
        raise ValueError(f"filters must be strictly positive, got {value}")
    return value


def _check_groups(norm: str, groups: int, filters: Filters) -> None:
    if norm != "group":
        return
    bad = [f for f in filters if f % groups]
    if bad:
        raise ValueError(
            f"group_norm_groups={groups} must divide every entry of filters {filters} "
            f"(not {bad}) when norm is 'group'"
        )


class _ModelBase(Frozen):
    """Shared helpers: the patch divisor from the number of down-sampling steps."""

    @property
    def input_dims(self) -> int:
        """2 for a slice model ``(B, C, X, Y)``, 3 for a volume model ``(B, C, X, Y, Z)``."""
        return int(self.spatial_dims)  # type: ignore[attr-defined]

    @property
    def stage_filters(self) -> Filters:
        """Features per resolution stage, highest resolution first."""
        return tuple(self.filters)  # type: ignore[attr-defined]

    def divisor(self) -> tuple[int, ...]:
        """What each patch axis must be divisible by, one entry per input axis."""
        return (2 ** (len(self.stage_filters) - 1),) * self.input_dims


class _SpatialModel(_ModelBase):
    """A network of 2-D slices or 3-D volumes (every kind but the C-LSTM, whose U-Net is 2-D).

    Attributes:
        spatial_dims: 3 for a volume model (3-D patches), 2 for a slice model (2-D patches).
    """

    spatial_dims: Literal[2, 3] = 3


class _NormedModel(_SpatialModel):
    """A U-Net whose convolutions are followed by a batch, group or instance norm.

    Attributes:
        norm: normalisation after every convolution: ``instance`` (affine, no running
            statistics, as in nnU-Net), ``batch`` or ``group``.
        group_norm_groups: number of GroupNorm groups with ``norm: group`` (must divide every
            stage's features).
    """

    norm: NormChoice = "instance"
    group_norm_groups: int = Field(8, ge=1)
