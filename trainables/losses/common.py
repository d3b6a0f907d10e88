"""Shared pieces of the losses: target encodings, the soft Dice reduction, a float32 base class.

Targets arrive as ``(B, *S)`` int64 internal label codes and are turned into float masks on the
logits' device with plain comparisons (no lookup tables to move between devices, no numpy).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from trainables.data.labels import LabelScheme


def region_masks(target: Tensor, scheme: LabelScheme) -> Tensor:
    """Float masks of the scheme's regions.

    Args:
        target: ``(B, *S)`` int64 internal codes.
        scheme: internal scheme whose ``regions`` (name -> codes) to build, in order.

    Returns:
        ``(B, R, *S)`` float32, 1 inside region ``r``.
    """
    masks = []
    for codes in scheme.regions.values():
        mask = target == codes[0]
        for code in codes[1:]:
            mask = mask | (target == code)
        masks.append(mask)
    return torch.stack(masks, dim=1).float()


def one_hot(target: Tensor, num_classes: int) -> Tensor:
    """``(B, *S)`` int64 codes -> ``(B, num_classes, *S)`` float32 one-hot (contiguous)."""
    return torch.stack([target == c for c in range(num_classes)], dim=1).float()


def soft_dice(
    probs: Tensor, truth: Tensor, smooth: float, batch_dice: bool, squared: bool = False
) -> Tensor:
    """Soft Dice per channel: ``(2 Σ p y + smooth) / (Σ p + Σ y + smooth)``.

    Args:
        probs: ``(B, C, *S)`` float32 probabilities.
        truth: ``(B, C, *S)`` float32 binary masks.
        smooth: added to numerator and denominator (an empty channel predicted empty scores 1).
        batch_dice: sum over the batch axis too (one Dice per channel).
        squared: use ``Σ p² + Σ y²`` in the denominator (FM-Net, paper 001 Eq. 1).

    Returns:
        ``(C,)`` if ``batch_dice`` else ``(B, C)``, float32 Dice coefficients in [0, 1].
    """
    dims = spatial_dims(probs, batch_dice)
    intersection = (probs * truth).sum(dims)
    if squared:
        denominator = (probs * probs).sum(dims) + (truth * truth).sum(dims)
    else:
        denominator = probs.sum(dims) + truth.sum(dims)
    return (2.0 * intersection + smooth) / (denominator + smooth)


def spatial_dims(x: Tensor, with_batch: bool) -> tuple[int, ...]:
    """Axes to reduce for a per-channel sum of a ``(B, C, *S)`` tensor."""
    spatial = tuple(range(2, x.ndim))
    return (0, *spatial) if with_batch else spatial


def regions_phrase(scheme: LabelScheme) -> str:
    """``"one per region wt, tc, et"``: names the expected channels in shape errors."""
    return f"one per region {', '.join(scheme.region_names)}"


def classes_phrase(scheme: LabelScheme) -> str:
    """``"one per class 0..3"``: names the expected channels in shape errors."""
    return f"one per class 0..{scheme.num_classes - 1}"


@contextlib.contextmanager
def no_autocast(device: torch.device) -> Iterator[None]:
    """Disable autocast on ``device`` so the loss reductions run in float32."""
    if device.type in ("cpu", "cuda"):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:  # other backends: the explicit .float() casts are enough
        yield


class Float32Loss(nn.Module):
    """Base of every single-output loss: checks shapes, then computes in float32.

    Under fp16 autocast, sums of 128³ probabilities overflow half precision and small Dice
    denominators underflow, so logits are cast to float32 and autocast is switched off before
    any sigmoid/softmax or reduction. Subclasses implement :meth:`compute`.

    Args:
        channels: number of logit channels this loss expects.
        what: phrase naming the channels for the error message (``"one per region wt, tc, et"``).
    """

    def __init__(self, channels: int, what: str) -> None:
        super().__init__()
        self.channels = channels
        self.what = what

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``(B, C, *S)`` logits and ``(B, *S)`` int64 codes -> scalar float32 loss."""
        self._check(logits, target)
        with no_autocast(logits.device):
            return self.compute(logits.float(), target)

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        """The loss on float32 ``(B, C, *S)`` logits; returns a scalar."""
        raise NotImplementedError

    def _check(self, logits: Tensor, target: Tensor) -> None:
        name = type(self).__name__
        if logits.ndim not in (4, 5) or logits.shape[1] != self.channels:
            raise ValueError(
                f"{name} expects (B, {self.channels}, *S) logits with 2-D or 3-D S "
                f"({self.what}), got shape {tuple(logits.shape)}"
            )
        if target.shape != logits.shape[:1] + logits.shape[2:]:
            raise ValueError(
                f"{name}: target shape {tuple(target.shape)} does not match logits "
                f"{tuple(logits.shape)} (expected (B, *S) = "
                f"{tuple(logits.shape[:1] + logits.shape[2:])})"
            )
