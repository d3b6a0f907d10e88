"""Mirroring test-time augmentation, nnU-Net's default at inference: the model sees the image
flipped along every combination of its spatial axes, and the probabilities, flipped back, are
averaged. Used by the test pass (``validation.test_tta``) and ``ablate predict --tta`` alike
(:func:`model_labels`), so the two give the same labels."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from torch import Tensor

from trainables.data.labels import LabelScheme
from trainables.engine.resize import ToSource, source_labels
from trainables.losses import LossConfig, logits_to_probabilities


def flip_axes(input_dims: int) -> list[tuple[int, ...]]:
    """Every combination of flipped spatial axes of a (C, X, Y, Z) volume, identity first.

    3-D models: the 8 subsets of (1, 2, 3); 2-D models (slices along Z): the 4 subsets of the
    in-plane axes (1, 2). Axis numbers index the (C, *S) volume.
    """
    axes = (1, 2, 3) if input_dims == 3 else (1, 2)
    return [combo for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]


def mirrored_probabilities(
    logits_of: Callable[[np.ndarray], Tensor], image: np.ndarray, input_dims: int, loss: LossConfig
) -> Tensor:
    """(K, *S) float32 probabilities (softmax or sigmoid, per ``loss``) of the (C, *S) ``image``,
    averaged over its mirrored copies; ``logits_of`` maps a (C, *S) image to (K, *S) logits."""
    flips = flip_axes(input_dims)
    total: Tensor | None = None
    for axes in flips:
        view = np.ascontiguousarray(np.flip(image, axes)) if axes else image
        probs = logits_to_probabilities(logits_of(view)[None], loss)[0]
        probs = probs.flip(axes) if axes else probs
        total = probs if total is None else total.add_(probs)
    assert total is not None
    return total / len(flips)


def model_labels(
    logits_of: Callable[[np.ndarray], Tensor],
    image: np.ndarray,
    input_dims: int,
    loss: LossConfig,
    scheme: LabelScheme,
    tta: bool,
    to_source: ToSource | None = None,
) -> Tensor:
    """(*S) int64 internal labels of one model on a (C, *S) image: its logits decoded directly
    (as validation does), or with ``tta`` its mirrored probabilities averaged, then decoded.
    ``to_source`` (a resampled case) first brings the probabilities back to the source grid
    (:func:`~trainables.engine.resize.source_labels`), so the labels are (*S_source). The test
    pass and a one-model :class:`~trainables.engine.predict.Predictor` both call it."""
    if not tta:
        return source_labels(logits_of(image), loss, scheme, to_source)
    probs = mirrored_probabilities(logits_of, image, input_dims, loss)
    return source_labels(probs, loss, scheme, to_source, probabilities=True)
