"""HD95 and surface Dice: hand-computed values, empty-mask conventions, brute force with cKDTree."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion, gaussian_filter
from scipy.ndimage import generate_binary_structure as full_structure
from scipy.spatial import cKDTree

from trainables.data.labels import get_scheme, regions_from_labels, to_internal
from trainables.errors import InputError
from trainables.metrics import (
    hd95,
    surface_dice,
    surface_distances,
    surface_scores,
    worst_case_distance,
)

ANISOTROPIC = (0.8, 1.2, 2.0)
TOLERANCES_MM = (1.0, 1.5, 2.5)  # chosen so no tolerance equals a possible distance ± rounding


def _brute_force(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], tolerance_mm: float
) -> tuple[float, float]:
    """(HD95, surface Dice) from full-volume surfaces and nearest neighbours in a k-d tree."""
    structure = full_structure(pred.ndim, pred.ndim)
    scale = np.asarray(spacing)
    pred_points = np.argwhere(pred & ~binary_erosion(pred, structure)) * scale
    ref_points = np.argwhere(ref & ~binary_erosion(ref, structure)) * scale
    pred_to_ref = cKDTree(ref_points).query(pred_points)[0]
    ref_to_pred = cKDTree(pred_points).query(ref_points)[0]
    both = np.concatenate([pred_to_ref, ref_to_pred])
    return float(np.percentile(both, 95)), float(np.mean(both <= tolerance_mm))


def _line(shape: tuple[int, int, int], x: int, y: int) -> np.ndarray:
    """A one-voxel-thick line along z: every voxel is a surface voxel."""
    mask = np.zeros(shape, dtype=bool)
    mask[x, y, 2:-2] = True
    return mask


def _random_mask(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """Salt-and-pepper noise, smooth blobs, or a small blob touching a corner of the volume."""
    if kind == "noise":
        return rng.random(shape) < 0.2
    blobs = gaussian_filter(rng.standard_normal(shape), sigma=2.0) > 0.15
    if kind == "blobs":
        return blobs
    corner = np.zeros(shape, dtype=bool)
    corner[:6, :5, :4] = blobs[:6, :5, :4] | (rng.random((6, 5, 4)) < 0.5)
    return corner


@pytest.mark.parametrize(
    ("axis", "spacing", "expected_mm"),
    [(0, (1.0, 1.0, 1.0), 3.0), (0, (2.0, 1.0, 0.5), 6.0), (1, (2.0, 1.0, 0.5), 3.0)],
)
def test_hd95_of_shifted_lines_scales_with_spacing(
    axis: int, spacing: tuple[float, float, float], expected_mm: float
) -> None:
    # Lines 3 voxels apart: every surface distance is 3 voxels, i.e. 3 * spacing[axis] mm.
    ref = _line((10, 10, 12), 2, 2)
    pred = _line((10, 10, 12), 5, 2) if axis == 0 else _line((10, 10, 12), 2, 5)
    assert hd95(pred, ref, spacing) == pytest.approx(expected_mm, abs=1e-12)
    assert surface_dice(pred, ref, spacing, expected_mm) == 1.0
    assert surface_dice(pred, ref, spacing, expected_mm - 0.01) == 0.0


def test_hd95_of_single_voxels_is_their_distance_in_mm() -> None:
    ref = np.zeros((8, 8, 8), dtype=bool)
    pred = np.zeros_like(ref)
    ref[1, 1, 1] = True
    pred[4, 5, 1] = True  # offset (3, 4, 0) voxels
    assert hd95(pred, ref, (1.0, 1.0, 1.0)) == pytest.approx(5.0, abs=1e-12)
    assert hd95(pred, ref, (2.0, 1.0, 0.5)) == pytest.approx(np.sqrt(6**2 + 4**2), abs=1e-12)


def test_hd95_is_the_percentile_of_the_union_of_both_directions() -> None:
    # pred = ref + one far voxel: distances pred->ref [0, 6], ref->pred [0]. Union [0, 0, 6]:
    # linear 95th percentile at index 1.9 is 0.9 * 6 = 5.4 (max of directed percentiles: 5.7).
    ref = np.zeros((10, 4, 4), dtype=bool)
    ref[1, 1, 1] = True
    pred = ref.copy()
    pred[7, 1, 1] = True
    assert hd95(pred, ref, (1.0, 1.0, 1.0)) == pytest.approx(5.4, abs=1e-12)
    assert surface_dice(pred, ref, (1.0, 1.0, 1.0), 1.0) == pytest.approx(2 / 3)
    pred_to_ref, ref_to_pred = surface_distances(pred, ref, (1.0, 1.0, 1.0))
    assert sorted(pred_to_ref.tolist()) == [0.0, 6.0]
    assert ref_to_pred.tolist() == [0.0]


def test_surface_metrics_of_identical_masks() -> None:
    mask = np.zeros((12, 12, 12), dtype=bool)
    mask[3:9, 2:10, 4:8] = True
    assert surface_scores(mask, mask, ANISOTROPIC, 0.0) == (0.0, 1.0)


def test_brats_worst_case_is_373_13_mm() -> None:
    assert worst_case_distance((240, 240, 155), (1.0, 1.0, 1.0)) == pytest.approx(373.13, abs=5e-3)
    assert worst_case_distance((10, 20, 30), (2.0, 1.0, 0.5)) == pytest.approx(np.sqrt(1025))


def test_empty_mask_conventions() -> None:
    empty = np.zeros((240, 240, 155), dtype=bool)
    one_voxel = empty.copy()
    one_voxel[120, 120, 77] = True
    spacing = (1.0, 1.0, 1.0)
    assert hd95(empty, empty, spacing) == 0.0
    assert surface_dice(empty, empty, spacing, 1.0) == 1.0
    assert hd95(empty, one_voxel, spacing) == pytest.approx(373.13, abs=5e-3)
    assert hd95(one_voxel, empty, spacing) == pytest.approx(373.13, abs=5e-3)
    assert surface_dice(one_voxel, empty, spacing, 1.0) == 0.0
    assert surface_dice(empty, one_voxel, spacing, 1.0) == 0.0


@pytest.mark.parametrize("kind", ["noise", "blobs", "corner"])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), ANISOTROPIC])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_masks_match_brute_force(
    kind: str, spacing: tuple[float, float, float], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    pred = _random_mask(rng, (20, 20, 16), kind)
    ref = _random_mask(rng, (20, 20, 16), kind)
    for tolerance in TOLERANCES_MM:
        expected_hd95, expected_nsd = _brute_force(pred, ref, spacing, tolerance)
        assert hd95(pred, ref, spacing) == pytest.approx(expected_hd95, abs=1e-6)
        assert surface_dice(pred, ref, spacing, tolerance) == pytest.approx(expected_nsd, abs=1e-6)


def test_2d_masks_match_brute_force() -> None:
    rng = np.random.default_rng(7)
    pred = gaussian_filter(rng.standard_normal((32, 24)), 2.0) > 0.1
    ref = gaussian_filter(rng.standard_normal((32, 24)), 2.0) > 0.1
    expected_hd95, expected_nsd = _brute_force(pred, ref, (0.5, 1.5), 1.6)
    assert hd95(pred, ref, (0.5, 1.5)) == pytest.approx(expected_hd95, abs=1e-6)
    assert surface_dice(pred, ref, (0.5, 1.5), 1.6) == pytest.approx(expected_nsd, abs=1e-6)


def test_bad_spacing_and_tolerance_are_named() -> None:
    mask = np.ones((3, 3, 3), dtype=bool)
    with pytest.raises(InputError, match=r"spacing: got 2 values for a 3-D mask"):
        hd95(mask, mask, (1.0, 1.0))
    with pytest.raises(InputError, match=r"spacing: values must be finite and > 0 mm"):
        hd95(mask, mask, (1.0, 0.0, 1.0))
    with pytest.raises(InputError, match=r"tolerance_mm: must be finite and >= 0 mm, got -1.0"):
        surface_dice(mask, mask, (1.0, 1.0, 1.0), -1.0)
    with pytest.raises(InputError, match=r"surface distances need two non-empty masks"):
        surface_distances(mask, np.zeros_like(mask), (1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def real_whole_tumour(brats_sample_dir: Path) -> np.ndarray:
    """(240, 240, 155) bool WT mask of the first real BraTS case."""
    seg_path = sorted(brats_sample_dir.glob("*/*_seg.nii*"))[0]
    labels = to_internal(np.asarray(nib.load(seg_path).dataobj), get_scheme("brats2021"))
    return regions_from_labels(labels)[0]


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("change", "spacing"),
    [("dilate", (1.0, 1.0, 1.0)), ("erode", (0.8, 0.8, 2.5)), ("shift", (0.8, 0.8, 2.5))],
)
def test_real_whole_tumour_matches_brute_force(
    real_whole_tumour: np.ndarray, change: str, spacing: tuple[float, float, float]
) -> None:
    ref = real_whole_tumour
    if change == "shift":
        pred = np.roll(ref, (3, -2, 1), axis=(0, 1, 2))
    else:
        morph = binary_dilation if change == "dilate" else binary_erosion
        pred = morph(ref, full_structure(3, 1), iterations=2)
    tolerance = 1.7
    expected_hd95, expected_nsd = _brute_force(pred, ref, spacing, tolerance)
    hd95_mm, nsd = surface_scores(pred, ref, spacing, tolerance)
    assert hd95_mm == pytest.approx(expected_hd95, abs=1e-6)
    assert nsd == pytest.approx(expected_nsd, abs=1e-6)
    assert 0.0 < nsd < 1.0 and hd95_mm > 0.0  # the change is visible, so the check has teeth
