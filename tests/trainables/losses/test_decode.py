"""Decoding logits / probabilities into internal label maps."""

from __future__ import annotations

import pytest
import torch

from trainables.data.labels import INTERNAL_BINARY, INTERNAL_BRATS, LabelScheme
from trainables.losses import (
    BCEConfig,
    DiceCEConfig,
    RegionDiceConfig,
    logits_to_labels,
    logits_to_probabilities,
    probabilities_to_labels,
)
from trainables.losses.decode import nesting_order

# One voxel per (WT, TC, ET) combination, 1 = predicted. Nested decoding paints WT -> 2,
# then TC -> 1, then ET -> 3, so the innermost predicted region wins.
REGION_CASES = [
    ((0, 0, 0), 0),
    ((1, 0, 0), 2),  # oedema only
    ((1, 1, 0), 1),  # core without enhancing -> necrosis
    ((1, 1, 1), 3),
    ((0, 0, 1), 3),  # ET outside WT still decodes to ET
    ((1, 0, 1), 3),
    ((0, 1, 0), 1),  # TC outside WT -> necrosis
]


def _region_logits() -> torch.Tensor:
    """(1, 3, 1, 7) logits, ±5 by REGION_CASES."""
    bits = torch.tensor([flags for flags, _ in REGION_CASES], dtype=torch.float32)  # (7, 3)
    return (bits.T * 10 - 5).reshape(1, 3, 1, len(REGION_CASES))


def test_nested_region_decoding_by_hand() -> None:
    labels = logits_to_labels(_region_logits(), RegionDiceConfig(), INTERNAL_BRATS)
    assert labels.dtype == torch.int64
    assert labels.tolist() == [[[code for _, code in REGION_CASES]]]


def test_probabilities_threshold_is_strictly_above_half() -> None:
    probs = torch.tensor([0.2, 0.5, 0.51, 0.9]).reshape(1, 1, 2, 2)
    labels = probabilities_to_labels(probs, BCEConfig(), INTERNAL_BINARY)
    assert labels.tolist() == [[[0, 0], [1, 1]]]


def test_binary_fg_decodes_to_one_in_3d() -> None:
    logits = torch.tensor([-1.0, 2.0, 0.0, 3.0]).reshape(1, 1, 2, 1, 2)
    labels = logits_to_labels(logits, RegionDiceConfig(), INTERNAL_BINARY)
    assert labels.shape == (1, 2, 1, 2)
    assert labels.flatten().tolist() == [0, 1, 0, 1]


def test_classes_decode_by_argmax_of_logits_and_probabilities() -> None:
    logits = torch.tensor([[3.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 2.0], [0.0, 5.0, 4.0, 0.0]])
    logits = logits.T.reshape(1, 4, 1, 3)  # voxel v has class scores logits[v]
    cfg = DiceCEConfig()
    assert logits_to_labels(logits, cfg, INTERNAL_BRATS).tolist() == [[[0, 3, 1]]]
    probs = logits_to_probabilities(logits, cfg)
    assert probs.sum(1).allclose(torch.ones(1, 1, 3))
    assert probabilities_to_labels(probs, cfg, INTERNAL_BRATS).tolist() == [[[0, 3, 1]]]


def test_region_probabilities_agree_with_logit_decoding() -> None:
    logits = _region_logits()
    probs = logits_to_probabilities(logits.half(), RegionDiceConfig())
    assert probs.dtype == torch.float32
    assert probs.allclose(torch.sigmoid(logits), atol=1e-3)
    assert torch.equal(
        probabilities_to_labels(probs, RegionDiceConfig(), INTERNAL_BRATS),
        logits_to_labels(logits, RegionDiceConfig(), INTERNAL_BRATS),
    )


def test_nesting_order_and_non_nested_scheme() -> None:
    assert nesting_order(INTERNAL_BRATS) == [(0, 2), (1, 1), (2, 3)]
    assert nesting_order(INTERNAL_BINARY) == [(0, 1)]
    flat = LabelScheme("flat", {0: 0, 1: 1, 2: 2}, {"a": (1, 2)})
    with pytest.raises(ValueError, match=r"region 'a' owns codes \[1, 2\]"):
        nesting_order(flat)


def test_wrong_region_count_is_named() -> None:
    with pytest.raises(ValueError, match=r"expected 3 region channels \(wt, tc, et\), got 1"):
        logits_to_labels(torch.zeros(1, 1, 2, 2), RegionDiceConfig(), INTERNAL_BRATS)
