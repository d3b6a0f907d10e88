"""The margin cut around samples that are rotated or scaled (nnU-Net's initial patch size):
its size against nnU-Net's ``get_patch_size``, the exact centre crop, corners that show image
instead of zeros, and the loader batch's path through ``augment_sources``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.data.augment import (
    AugmentConfig,
    augment_sources,
    decision_columns,
    needs_margin,
    source_shape,
    spatial_transform,
)
from trainables.data.augment_rows import TRANSFORMS
from trainables.data.sources import SampleDraws, SourceBatch, collate_sources
from trainables.errors import InputError

ROTATE_ONLY = {f"{name}_prob": 0.0 for name in TRANSFORMS} | {"flip_prob": 0.0}


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        # nnU-Net 2.8.1's get_patch_size gives 205 (30 degrees, / 0.85); even margin: 206
        ((128, 128, 128), (206, 206, 206)),
        # 30 degrees: X 128 cos30 + 160 sin30 = 190.9 / 0.85 = 224 (nnU-Net 224 too);
        # Y 160 cos30 + 128 sin30 = 202.6 -> 238; Z 112 cos30 + 160 sin30 = 177.0 -> 208
        ((128, 160, 112), (224, 238, 208)),
        # dummy 2-D (160 / 40 > 3): 180 degrees in-plane, slice axis kept (nnU-Net: 40 too);
        # the in-plane diagonal 226.3 / 0.85 = 266 (nnU-Net's 90-degree cap gives 188)
        ((160, 160, 40), (266, 266, 40)),
        # 2-D, 180 degrees (aspect 1.17 < 1.5): the diagonal 295.0 / 0.85 = 347 -> 348
        ((224, 192), (348, 348)),
        # 2-D with a long side (> 1.5 x): 15 degrees; 200 cos15 + 64 sin15 = 209.8 -> 246,
        # 64 cos15 + 200 sin15 = 113.6 -> 133, even: 134
        ((200, 64), (246, 134)),
    ],
)
def test_source_shape_is_nnunets_initial_patch_size(
    patch: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    assert source_shape(AugmentConfig(), patch) == expected


def test_source_shape_is_the_patch_when_nothing_needs_a_margin() -> None:
    patch = (32, 32, 32)
    assert source_shape(AugmentConfig(crop_margin=False), patch) == patch
    assert source_shape(AugmentConfig(enabled=False), patch) == patch
    assert source_shape(AugmentConfig(rotation_prob=0.0, scale_prob=0.0), patch) == patch
    # scale alone: the zoom's 1 / 0.85, no rotation (32 / 0.85 = 37.6 -> 37, even: 38)
    assert source_shape(AugmentConfig(rotation_prob=0.0), patch) == (38, 38, 38)


def test_identity_into_the_patch_is_the_exact_centre_crop() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 14, 12, 10, generator=g)
    label = torch.randint(0, 4, (2, 14, 12, 10), generator=g)
    eye = torch.eye(3).expand(2, 3, 3)
    out_image, out_label = spatial_transform(image, label, eye, 4, out_shape=(8, 8, 6))
    torch.testing.assert_close(out_image, image[:, :, 3:11, 2:10, 2:8], rtol=0, atol=1e-6)
    assert torch.equal(out_label, label[:, 3:11, 2:10, 2:8])


def test_a_quarter_turn_into_the_patch_turns_the_centre_crop() -> None:
    """A 90-degree rotation in the (0, 1) plane of the wide region equals rot90 of its centre
    crop: the patch's content comes from inside the margin, voxel for voxel."""
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 1, 12, 12, 6, generator=g)
    label = torch.randint(0, 4, (1, 12, 12, 6), generator=g)
    quarter = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    out_image, out_label = spatial_transform(image, label, quarter, 4, out_shape=(8, 8, 6))
    crop_image, crop_label = image[:, :, 2:10, 2:10], label[:, 2:10, 2:10]
    turned = [torch.rot90(crop_image, k, (2, 3)) for k in (1, -1)]
    match = [
        k for k, t in zip((1, -1), turned, strict=True) if torch.allclose(out_image, t, atol=1e-5)
    ]
    assert len(match) == 1
    assert torch.equal(out_label, torch.rot90(crop_label, match[0], (1, 2)))


def _rotated(patch: tuple[int, ...], margin: bool, **cfg: object) -> tuple[torch.Tensor, ...]:
    """Eight samples of a constant image (1) and label (2) cut around ``patch``, every one
    rotated (nothing else), through the loader's batch and ``augment_sources``."""
    config = AugmentConfig(**(ROTATE_ONLY | {"rotation_prob": 1.0, "crop_margin": margin} | cfg))
    shape = source_shape(config, patch)
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(8):
        draws = SampleDraws(rng.random(decision_columns(len(patch))), rng.random((2, 2)))
        assert needs_margin(config, draws.decisions)
        image = torch.ones(2, *shape, dtype=torch.float16)
        samples.append((image, torch.full(shape, 2, dtype=torch.uint8), draws))
    batch = collate_sources(samples, patch)
    return augment_sources(batch, config, patch, torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("patch", "cfg"),
    [((24, 24), {}), ((24, 24, 6), {"dummy_2d": True}), ((20, 20, 20), {"rotation_deg": 20.0})],
)
def test_rotated_patches_show_the_image_around_them(
    patch: tuple[int, ...], cfg: dict[str, object]
) -> None:
    """Cut with the margin, a rotated patch of a constant image is that constant everywhere
    (any angle up to 180 in-plane in 2-D and dummy 2-D; 3-D: single-axis turns up to the
    bound, here 20 degrees about each of three axes, which stays inside); cut without it,
    its corners are zeros and background, as before this margin existed."""
    image, label = _rotated(patch, margin=True, **cfg)
    assert image.shape == (8, 2, *patch) and image.dtype == torch.float32
    torch.testing.assert_close(image, torch.ones_like(image), rtol=0, atol=1e-5)
    assert bool((label == 2).all())
    bare_image, bare_label = _rotated(patch, margin=False, **cfg)
    assert bare_image.shape == image.shape
    assert (bare_image < 0.5).float().mean() > 0.01 and bool((bare_label == 0).any())


def test_sources_without_draws_are_the_patches_as_float32() -> None:
    image = torch.rand(3, 2, 8, 8, 8).half()
    label = torch.randint(0, 4, (3, 8, 8, 8))
    batch = SourceBatch(image, label, None, None, None, None)
    out_image, out_label = augment_sources(batch, AugmentConfig(), (8, 8, 8), torch.Generator())
    assert out_image.dtype == torch.float32 and torch.equal(out_image, image.float())
    assert out_label is label


def test_mixed_batches_keep_plain_rows_then_wide_rows() -> None:
    """A batch with both groups: the plain rows come out as they went in (nothing drawn), the
    wide ones resampled into the patch; the row order is plain first."""
    config = AugmentConfig(**(ROTATE_ONLY | {"rotation_prob": 0.5}))
    patch = (8, 8, 8)
    wide = source_shape(config, patch)
    rng = np.random.default_rng(3)
    samples, spatial = [], []
    while len(samples) < 6:
        draws = SampleDraws(rng.random(decision_columns(3)), rng.random((1, 2)))
        shape = wide if needs_margin(config, draws.decisions) else patch
        spatial.append(shape == wide)
        value = float(len(samples))
        samples.append(
            (torch.full((1, *shape), value), torch.zeros(shape, dtype=torch.uint8), draws)
        )
    assert 0 < sum(spatial) < 6
    batch = collate_sources(samples, patch)
    assert batch.rows == 6 and batch.wide_image is not None and batch.plain_image is not None
    image, _ = augment_sources(batch, config, patch, torch.Generator().manual_seed(0))
    order = [i for i, s in enumerate(spatial) if not s] + [i for i, s in enumerate(spatial) if s]
    middle = image[:, 0, 4, 4, 4]
    torch.testing.assert_close(middle, torch.tensor(order, dtype=torch.float32))


def test_collate_refuses_a_batch_with_and_without_draws() -> None:
    draws = SampleDraws(np.zeros(decision_columns(2)), np.zeros((1, 2)))
    samples = [
        (torch.zeros(1, 4, 4), torch.zeros(4, 4), draws),
        (torch.zeros(1, 4, 4), torch.zeros(4, 4), None),
    ]
    with pytest.raises(ValueError, match="every sample of a batch needs its augmentation draws"):
        collate_sources(samples, (4, 4))


def test_sampling_margin_is_validated() -> None:
    from trainables.data.sampling import sample_patch

    image, label = np.zeros((1, 6, 6, 6), np.float32), np.zeros((6, 6, 6), np.uint8)
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match=r"margin: \[1, 1\] needs 3 sizes >= 0"):
        sample_patch(image, label, (4, 4, 4), rng, False, margin=(1, 1))


@pytest.mark.cuda
def test_gpu_sources_never_sync_the_host() -> None:
    """A loader batch with plain and wide rows (float16, as the cache gives them) goes through
    every transform on CUDA under ``set_sync_debug_mode("error")``."""
    device = torch.device("cuda")
    config = AugmentConfig(**dict.fromkeys(ROTATE_ONLY, 0.5))
    patch = (16, 16, 16)
    wide = source_shape(config, patch)
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(4):
        draws = SampleDraws(rng.random(decision_columns(3)), rng.random((2, 2)))
        shape = wide if needs_margin(config, draws.decisions) else patch
        image = torch.rand(2, *shape, generator=torch.Generator().manual_seed(len(samples)))
        samples.append((image.half(), torch.randint(0, 4, shape, dtype=torch.uint8), draws))
    batch = collate_sources(samples, patch)
    on_gpu = SourceBatch(*(t.to(device) if torch.is_tensor(t) else t for t in batch))
    augment_sources(on_gpu, config, patch, torch.Generator(device).manual_seed(0))  # warm-up
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        image, label = augment_sources(
            on_gpu, config, patch, torch.Generator(device).manual_seed(1)
        )
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    assert image.shape == (4, 2, *patch) and torch.isfinite(image).all()
    assert label.dtype == torch.uint8 and label.shape == (4, *patch)
