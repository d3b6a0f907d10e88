"""Training batches as the loader hands them over: patches grouped by the region they were cut.

A sample that will be rotated or scaled is cut with a margin around its patch (nnU-Net's
initial patch size, :func:`trainables.data.augment_config.source_shape`), the others at the
patch size, so only the ~36% of samples that need the margin (nnU-Net's rotation and scale
probabilities, 0.2 each) move the larger region through pinned memory and the host-to-device
copy. Each sample also carries the uniform draws that decide its transforms, drawn from its own
(seed, epoch, index), so a batch's augmentation does not depend on which worker cut what.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


class SampleDraws(NamedTuple):
    """One sample's host draws for the augmentation.

    Attributes:
        decisions: ``(decision_columns,)`` float64 uniforms, one per transform and flip axis.
        zooms: ``(C, 2)`` float64 uniforms of the low-resolution transform (channel, zoom).
    """

    decisions: np.ndarray
    zooms: np.ndarray


# (image (C, *S), label (*S), draws or None: augmented already, or augmentation off)
Sample = tuple[Tensor, Tensor, SampleDraws | None]


class SourceBatch(NamedTuple):
    """A batch before the training device augments it.

    Rows are the samples cut at the patch size ``P`` first, then those cut with the margin
    (``E``); the order inside each group is the loader's.

    Attributes:
        plain_image: ``(B1, C, *P)`` float16 or float32, or None when no sample is plain.
        plain_label: ``(B1, *P)`` uint8 or int64 codes, or None.
        wide_image: ``(B2, C, *E)``, or None when no sample was cut with the margin.
        wide_label: ``(B2, *E)``, or None.
        decisions: ``(B1 + B2, decision_columns)`` float64 host uniforms in row order; None
            when there is nothing left to augment (off, or done in the loader's workers).
        zooms: ``(B1 + B2, C, 2)`` float64 host uniforms, or None with ``decisions``.
    """

    plain_image: Tensor | None
    plain_label: Tensor | None
    wide_image: Tensor | None
    wide_label: Tensor | None
    decisions: np.ndarray | None
    zooms: np.ndarray | None

    def groups(self) -> list[tuple[Tensor, Tensor]]:
        """The non-empty groups, plain first: ``[(image, label), ...]``."""
        pairs = [(self.plain_image, self.plain_label), (self.wide_image, self.wide_label)]
        return [(image, label) for image, label in pairs if image is not None and label is not None]

    @property
    def rows(self) -> int:
        """``B1 + B2``, the samples in the batch."""
        return sum(image.shape[0] for image, _ in self.groups())


def collate_sources(samples: Sequence[Sample], patch: tuple[int, ...]) -> SourceBatch:
    """Stack samples into a :class:`SourceBatch`: those of spatial size ``patch`` first.

    Raises:
        ValueError: when some samples carry draws and others do not (one dataset makes both).
    """
    plain = [s for s in samples if tuple(s[0].shape[1:]) == tuple(patch)]
    wide = [s for s in samples if tuple(s[0].shape[1:]) != tuple(patch)]
    rows = plain + wide
    with_draws = [s[2] is not None for s in rows]
    if any(with_draws) and not all(with_draws):
        raise ValueError("every sample of a batch needs its augmentation draws, or none does")
    draws = [s[2] for s in rows if s[2] is not None]
    return SourceBatch(
        *_stacked(plain),
        *_stacked(wide),
        np.stack([d.decisions for d in draws]) if draws else None,
        np.stack([d.zooms for d in draws]) if draws else None,
    )


def _stacked(samples: list[Sample]) -> tuple[Tensor | None, Tensor | None]:
    if not samples:
        return None, None
    return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])
