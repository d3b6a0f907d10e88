"""Patch and slice sampling: shapes, padding, foreground forcing, empty-slice drop, memmaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainables.config import validate_config
from trainables.data.sampling import (
    SamplingConfig,
    center_crop,
    sample_patch,
    sample_slice,
    validation_view,
)
from trainables.errors import InputError


def _case(shape: tuple[int, ...], channels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Image whose voxel values encode their flat index (so crops can be checked), empty label."""
    count = int(np.prod(shape))
    image = np.stack(
        [np.arange(count, dtype=np.float32).reshape(shape) + c for c in range(channels)]
    )
    return image, np.zeros(shape, dtype=np.uint8)


def _small_fg_case() -> tuple[np.ndarray, np.ndarray]:
    """32^3 case with a 2^3 foreground block in a corner: random 8^3 patches rarely hit it."""
    image, label = _case((32, 32, 32), channels=1)
    label[:2, :2, :2] = 3
    return image, label


def test_config_defaults_and_validation() -> None:
    cfg = SamplingConfig()
    assert cfg.patch_size == (128, 128, 128) and cfg.crop_size == (128, 128, 128)
    assert SamplingConfig(patch_size=(64, 64)).is_2d
    with pytest.raises(InputError, match=r"patch_size: sizes must be positive"):
        validate_config(SamplingConfig, {"patch_size": [0, 8, 8]})
    with pytest.raises(InputError, match=r"patch_size: needs 2 \(2-D\) or 3 \(3-D\) sizes"):
        validate_config(SamplingConfig, {"patch_size": [8]})
    with pytest.raises(InputError, match=r"val_crop_size \[8, 8\] must have as many sizes"):
        validate_config(SamplingConfig, {"patch_size": [8, 8, 8], "val_crop_size": [8, 8]})
    with pytest.raises(InputError, match=r"foreground_fraction"):
        validate_config(SamplingConfig, {"foreground_fraction": 1.5})


def test_patch_shape_dtype_and_content() -> None:
    image, label = _case((20, 18, 16))
    img, lab = sample_patch(image, label, (8, 8, 8), np.random.default_rng(0), False)
    assert img.shape == (2, 8, 8, 8) and img.dtype == np.float32
    assert lab.shape == (8, 8, 8) and lab.dtype == np.uint8
    # A patch inside the volume is a contiguous window of the image.
    x, y, z = np.unravel_index(int(img[0, 0, 0, 0]), (20, 18, 16))
    np.testing.assert_array_equal(img, image[:, x : x + 8, y : y + 8, z : z + 8])


def test_patch_larger_than_volume_is_padded_symmetrically() -> None:
    image, label = _case((4, 10, 6))
    image += 1.0  # so that padding (0) is distinguishable from content
    label[:] = 1
    img, lab = sample_patch(image, label, (9, 8, 6), np.random.default_rng(1), False)
    assert img.shape == (2, 9, 8, 6) and lab.shape == (9, 8, 6)
    # Axis 0: 5 voxels of padding, split 2 before / 3 after as in nnU-Net.
    assert (lab[:2] == 0).all() and (lab[6:] == 0).all() and (lab[2:6] == 1).all()
    assert (img[:, :2] == 0).all() and (img[:, 2:6] > 0).all()


def test_2d_slice_shapes_including_small_slices() -> None:
    image, label = _case((6, 12, 5))
    img, lab = sample_slice(image, label, (8, 8), np.random.default_rng(2), False, 0.0)
    assert img.shape == (2, 8, 8) and img.dtype == np.float32
    assert lab.shape == (8, 8) and lab.dtype == np.uint8
    with pytest.raises(InputError, match=r"patch_size: needs a 2-D patch size"):
        sample_slice(image, label, (8, 8, 8), np.random.default_rng(2), False, 0.0)


def test_shape_mismatch_names_the_problem() -> None:
    image, label = _case((8, 8, 8))
    with pytest.raises(InputError, match=r"image shape \(2, 8, 8, 8\) does not match label"):
        sample_patch(image, label[:4], (4, 4, 4), np.random.default_rng(0), False)
    with pytest.raises(InputError, match=r"patch_size: \[4, 4\] needs 3 positive sizes"):
        sample_patch(image, label, (4, 4), np.random.default_rng(0), False)


@pytest.mark.parametrize("use_locations", [True, False])
def test_forced_patches_always_contain_foreground(use_locations: bool) -> None:
    image, label = _small_fg_case()
    locations = np.argwhere(label > 0) if use_locations else None
    rng = np.random.default_rng(3)
    for _ in range(200):
        _, lab = sample_patch(image, label, (8, 8, 8), rng, True, locations)
        assert lab.any()


def test_forced_slices_always_contain_foreground_and_no_fg_falls_back() -> None:
    image, label = _case((16, 16, 12), channels=1)
    label[15, 0, 7] = 2  # a single voxel at the border of one slice
    rng = np.random.default_rng(4)
    for _ in range(100):
        _, lab = sample_slice(image, label, (6, 6), rng, True, 0.0)
        assert lab.sum() == 2
    empty = np.zeros_like(label)
    _, lab = sample_patch(image, empty, (6, 6, 6), rng, True)  # no foreground: random patch
    assert lab.shape == (6, 6, 6) and not lab.any()


def test_empty_slice_drop_reduces_empty_share_as_expected() -> None:
    image, label = _case((8, 8, 40), channels=1)
    label[..., :10] = 1  # 30 of 40 slices empty: e = 0.75
    rng = np.random.default_rng(5)

    def empty_share(drop: float, draws: int = 2000) -> float:
        empties = [not sample_slice(image, label, (8, 8), rng, False, drop)[1].any()]
        empties += [
            not sample_slice(image, label, (8, 8), rng, False, drop)[1].any()
            for _ in range(draws - 1)
        ]
        return float(np.mean(empties))

    # Rejection with probability p: e(1-p) / (e(1-p) + 1 - e) = 0.375 / 0.625 = 0.6.
    assert empty_share(0.0) == pytest.approx(0.75, abs=0.04)
    assert empty_share(0.5) == pytest.approx(0.6, abs=0.04)
    assert empty_share(1.0, draws=200) == 0.0


def test_empty_slice_drop_terminates_without_foreground() -> None:
    image, label = _case((4, 4, 3), channels=1)
    _, lab = sample_slice(image, label, (4, 4), np.random.default_rng(6), False, 1.0)
    assert lab.shape == (4, 4) and not lab.any()


def test_same_seed_same_patch() -> None:
    image, label = _small_fg_case()
    first = sample_patch(image, label, (8, 8, 8), np.random.default_rng(7), True)
    second = sample_patch(image, label, (8, 8, 8), np.random.default_rng(7), True)
    other = sample_patch(image, label, (8, 8, 8), np.random.default_rng(8), False)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], other[0])


def test_float16_memmap_input(tmp_path: Path) -> None:
    image, label = _case((12, 10, 8))
    image = image / image.max()
    mm = np.memmap(tmp_path / "img.npy", dtype=np.float16, mode="w+", shape=image.shape)
    mm[:] = image
    mm.flush()
    mm = np.memmap(tmp_path / "img.npy", dtype=np.float16, mode="r", shape=image.shape)
    img, _ = sample_patch(mm, label, (6, 6, 6), np.random.default_rng(9), False)
    assert img.dtype == np.float32
    x, y, z = (int(v) for v in np.argwhere(np.isclose(mm[0], img[0, 0, 0, 0], atol=0))[0])
    np.testing.assert_array_equal(
        img, np.asarray(mm[:, x : x + 6, y : y + 6, z : z + 6], np.float32)
    )
    sl, _ = sample_slice(mm, label, (6, 6), np.random.default_rng(9), False, 0.0)
    assert sl.dtype == np.float32 and sl.shape == (2, 6, 6)


def test_center_crop_and_validation_view() -> None:
    image, label = _case((10, 8, 6))
    img, lab = center_crop(image, label, (4, 8, 9))
    assert img.shape == (2, 4, 8, 9) and lab.shape == (4, 8, 9)
    np.testing.assert_array_equal(img[:, :, :, 1:7], image[:, 3:7, :, :])
    assert (img[:, :, :, 0] == 0).all() and (img[:, :, :, 7:] == 0).all()
    crop = SamplingConfig(patch_size=(4, 4, 4), validation="center_crop")
    assert validation_view(image, label, crop)[0].shape == (2, 4, 4, 4)
    crop_2d = SamplingConfig(patch_size=(4, 4), validation="center_crop", val_crop_size=(6, 6))
    assert validation_view(image, label, crop_2d)[1].shape == (6, 6, 6)
    whole = validation_view(image, label, SamplingConfig())
    assert whole[0].shape == image.shape and whole[0].dtype == np.float32
