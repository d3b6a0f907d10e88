"""Batched torch augmentation: exactness of flips and rotations, identity, determinism, ranges."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.config import validate_config
from trainables.data.augment import (
    AugmentConfig,
    augment_batch,
    gaussian_blur,
    rotation_matrices,
    spatial_transform,
)
from trainables.errors import InputError

PROBS = [name for name in AugmentConfig.model_fields if name.endswith("_prob")]


def _config(**probs: float) -> AugmentConfig:
    """Every probability 0 except the ones given."""
    return AugmentConfig(**{**dict.fromkeys(PROBS, 0.0), **probs})


def _batch(spatial: tuple[int, ...] = (16, 16, 16), seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(2, 3, *spatial, generator=g)
    label = torch.randint(0, 4, (2, *spatial), generator=g)
    return image, label


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_config_validation_names_field() -> None:
    with pytest.raises(InputError, match=r"flip_prob: .*less than or equal to 1"):
        validate_config(AugmentConfig, {"flip_prob": 1.5})
    with pytest.raises(InputError, match=r"scale_range: .*low 1.4 is greater than high 0.7"):
        validate_config(AugmentConfig, {"scale_range": [1.4, 0.7]})
    with pytest.raises(InputError, match=r"gamma_range: .*low 0.0 must be > 0"):
        validate_config(AugmentConfig, {"gamma_range": [0.0, 1.0]})
    with pytest.raises(InputError, match=r"noise_std: .*low -0.1 must be >= 0"):
        validate_config(AugmentConfig, {"noise_std": [-0.1, 0.1]})


@pytest.mark.parametrize("spatial", [(16, 16, 16), (12, 20)])
def test_shapes_dtypes_and_label_set_preserved(spatial: tuple[int, ...]) -> None:
    image, label = _batch(spatial)
    cfg = AugmentConfig(**dict.fromkeys(PROBS, 1.0))
    out_image, out_label = augment_batch(image, label, cfg, _gen())
    assert out_image.shape == image.shape and out_image.dtype == image.dtype
    assert out_label.shape == label.shape and out_label.dtype == torch.int64
    assert set(out_label.unique().tolist()) <= set(label.unique().tolist())
    assert torch.isfinite(out_image).all()


def test_all_probabilities_zero_is_exact_identity() -> None:
    image, label = _batch()
    for cfg in (_config(), AugmentConfig(enabled=False)):
        out_image, out_label = augment_batch(image, label, cfg, _gen())
        assert torch.equal(out_image, image) and torch.equal(out_label, label)


def test_flips_match_torch_flip_and_invert() -> None:
    image, label = _batch()
    cfg = _config(flip_prob=1.0)
    once = augment_batch(image, label, cfg, _gen(1))
    assert torch.equal(once[0], image.flip(2, 3, 4)) and torch.equal(once[1], label.flip(1, 2, 3))
    twice = augment_batch(*once, cfg, _gen(2))
    assert torch.equal(twice[0], image) and torch.equal(twice[1], label)


def test_partial_flip_touches_only_selected_samples() -> None:
    image, label = _batch()
    out, _ = augment_batch(image, label, _config(flip_prob=0.5), _gen(3))
    for b in range(2):
        candidates = [image[b].flip(dims) for dims in _subsets((1, 2, 3))]
        assert any(torch.equal(out[b], c) for c in candidates)


def _subsets(dims: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [tuple(d for j, d in enumerate(dims) if mask >> j & 1) for mask in range(2 ** len(dims))]


def test_seeded_generator_reproduces_output() -> None:
    image, label = _batch()
    cfg = AugmentConfig(**dict.fromkeys(PROBS, 0.7))
    a = augment_batch(image, label, cfg, _gen(5))
    b = augment_batch(image, label, cfg, _gen(5))
    c = augment_batch(image, label, cfg, _gen(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_rotation_by_90_degrees_matches_rot90(axis: int) -> None:
    image, label = _batch()
    angles = torch.zeros(2, 3)
    angles[:, axis] = -math.pi / 2
    out_image, out_label = spatial_transform(image, label, rotation_matrices(angles))
    a, b = [d for d in range(3) if d != axis]
    inner = (slice(None), slice(2, -2), slice(2, -2), slice(2, -2))
    assert torch.equal(out_label[inner], torch.rot90(label, 1, (a + 1, b + 1))[inner])
    expected = torch.rot90(image, 1, (a + 2, b + 2))
    torch.testing.assert_close(out_image[(slice(None), *inner)], expected[(slice(None), *inner)])


def test_rotation_is_about_the_centre_for_non_square_images() -> None:
    label = torch.zeros(1, 16, 32, dtype=torch.int64)
    label[0, 8, 20] = 1  # offset (+0.5, +4.5) voxels from the centre (7.5, 15.5)
    image = label.unsqueeze(1).float()
    # Output offset o samples input offset M o; M o = (0.5, 4.5) for o = (-4.5, 0.5).
    matrix = rotation_matrices(torch.tensor([[-math.pi / 2]]))
    out_image, out_label = spatial_transform(image, label, matrix)
    assert out_label.nonzero().tolist() == [[0, 3, 16]]
    assert out_image[0, 0, 3, 16] == pytest.approx(1.0, abs=1e-5)


def test_identity_matrix_changes_nothing_but_rounding() -> None:
    image, label = _batch((12, 10, 8))
    eye = torch.eye(3).expand(2, 3, 3)
    out_image, out_label = spatial_transform(image, label, eye)
    assert torch.equal(out_label, label)
    torch.testing.assert_close(out_image, image)


def test_spatial_augmentation_only_resamples_drawn_samples() -> None:
    image, label = _batch()
    cfg = _config(rotation_prob=0.5, scale_prob=0.5)
    out_image, out_label = augment_batch(image, label, cfg, _gen(7))
    changed = [not torch.equal(out_image[b], image[b]) for b in range(2)]
    unchanged_labels = [torch.equal(out_label[b], label[b]) for b in range(2)]
    assert changed.count(True) == 1  # this seed draws the transform for exactly one sample
    assert unchanged_labels[changed.index(False)]


def test_intensity_transforms_keep_values_finite_and_in_range() -> None:
    image, label = _batch()
    for name in ("contrast_prob", "gamma_prob"):
        out, _ = augment_batch(image, label, _config(**{name: 1.0}), _gen(8))
        assert torch.isfinite(out).all() and not torch.equal(out, image)
        low, high = image.amin((2, 3, 4)), image.amax((2, 3, 4))
        assert (out.amin((2, 3, 4)) >= low - 1e-6).all() and (
            out.amax((2, 3, 4)) <= high + 1e-6
        ).all()
    for name in ("noise_prob", "blur_prob", "brightness_prob"):
        out, _ = augment_batch(image, label, _config(**{name: 1.0}), _gen(9))
        assert torch.isfinite(out).all() and not torch.equal(out, image)
    flat = torch.full((2, 3, 16, 16, 16), 0.25)
    out, _ = augment_batch(flat, label, _config(gamma_prob=1.0, contrast_prob=1.0), _gen(10))
    assert torch.equal(out, flat)  # constant channels have no contrast or gamma to change


def test_gaussian_blur_preserves_constants_and_mass() -> None:
    flat = torch.full((2, 2, 10, 10, 10), 3.0)
    sigma = torch.tensor([[0.5, 1.0], [0.7, 0.9]])
    torch.testing.assert_close(gaussian_blur(flat, sigma), flat)
    spike = torch.zeros(1, 1, 15, 15)
    spike[0, 0, 7, 7] = 1.0
    blurred = gaussian_blur(spike, torch.tensor([[1.0]]))
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert blurred[0, 0, 7, 7] < 0.2 and blurred[0, 0, 7, 8] == blurred[0, 0, 8, 7]


def test_bad_batch_raises() -> None:
    image, label = _batch()
    with pytest.raises(InputError, match=r"augment_batch: expected image \(B, C, \*S\)"):
        augment_batch(image, label[:, :4], AugmentConfig(), _gen())
    with pytest.raises(InputError, match=r"expected a float image and an int64 or uint8 label"):
        augment_batch(image, label.to(torch.int32), AugmentConfig(), _gen())
