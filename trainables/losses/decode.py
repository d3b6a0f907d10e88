"""Turn network outputs into probabilities and internal label maps.

The loss config decides the output parameterisation (see :mod:`trainables.losses.config`):
region outputs go through a sigmoid and are thresholded at 0.5 then decoded by nesting (BraTS:
ET -> 3, TC without ET -> 1, WT without TC -> 2; binary: fg -> 1); class outputs go through a
softmax and an argmax. Sliding-window inference averages *probabilities*, hence the separate
:func:`probabilities_to_labels`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainables.data.labels import LabelScheme
from trainables.losses.config import LossConfig


def logits_to_probabilities(logits: Tensor, cfg: LossConfig) -> Tensor:
    """``(B, C, *S)`` logits -> float32 probabilities of the same shape.

    Sigmoid per channel for region outputs, softmax over channels for class outputs.
    """
    logits = logits.float()  # fp16 softmax of large logits loses the small probabilities
    if cfg.output == "regions":
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)


def probabilities_to_labels(probs: Tensor, cfg: LossConfig, scheme: LabelScheme) -> Tensor:
    """``(B, C, *S)`` probabilities -> ``(B, *S)`` int64 internal label map.

    Region outputs: a voxel is in region ``r`` when ``probs[:, r] > 0.5``; regions are then
    painted from the largest to the smallest, each with the one code it owns (the code not in
    any region nested inside it), so inconsistent masks (ET outside WT) resolve to the innermost
    region. Class outputs: argmax over channels.
    """
    if cfg.output == "classes":
        return probs.argmax(dim=1)
    return regions_to_labels(probs > 0.5, scheme)


def logits_to_labels(logits: Tensor, cfg: LossConfig, scheme: LabelScheme) -> Tensor:
    """``(B, C, *S)`` logits -> ``(B, *S)`` int64 internal label map (see
    :func:`probabilities_to_labels`). ``sigmoid(x) > 0.5`` is ``x > 0`` and softmax keeps the
    argmax, so no probabilities are computed."""
    if cfg.output == "classes":
        return logits.argmax(dim=1)
    return regions_to_labels(logits > 0, scheme)


def regions_to_labels(masks: Tensor, scheme: LabelScheme) -> Tensor:
    """``(B, R, *S)`` bool region masks (``scheme.regions`` order) -> ``(B, *S)`` int64 codes."""
    if masks.shape[1] != len(scheme.regions):
        raise ValueError(
            f"expected {len(scheme.regions)} region channels ({', '.join(scheme.region_names)}), "
            f"got {masks.shape[1]}"
        )
    labels = torch.zeros(masks.shape[:1] + masks.shape[2:], dtype=torch.int64, device=masks.device)
    for index, code in nesting_order(scheme):
        labels = labels.masked_fill(masks[:, index], code)
    return labels


def nesting_order(scheme: LabelScheme) -> list[tuple[int, int]]:
    """``(region index, owned code)`` pairs, outermost region first.

    BraTS: ``[(0, 2), (1, 1), (2, 3)]`` (WT owns ED, TC owns NCR, ET owns ET); binary:
    ``[(0, 1)]``.

    Raises:
        ValueError: if a region does not own exactly one code (regions not nested).
    """
    regions = [set(codes) for codes in scheme.regions.values()]
    order = []
    for index, codes in enumerate(regions):
        inner = set().union(*(other for other in regions if other < codes))
        owned = codes - inner
        if len(owned) != 1:
            name = scheme.region_names[index]
            raise ValueError(
                f"label scheme {scheme.name!r}: region {name!r} owns codes {sorted(owned)}; "
                "region outputs can only be decoded for nested regions owning one code each"
            )
        order.append((len(codes), index, owned.pop()))
    return [(index, code) for _, index, code in sorted(order, key=lambda t: -t[0])]
