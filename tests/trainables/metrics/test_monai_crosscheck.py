"""Our BraTS metrics against MONAI's (``monai.metrics``) as an independent reference.

What agrees, and how closely (tolerances stated per test):

* Dice: identical up to float32 rounding (MONAI computes in float32) on any masks; with
  ``ignore_empty=False`` MONAI also follows the BraTS empty-mask conventions.
* Directed surface distances, HD95 and surface Dice: identical (up to float32) where both
  implementations find the same surface, e.g. on single boxes (tested with anisotropic spacing),
  once HD95 is combined with MONAI's percentile rule.

Where the definitions differ by design (asserted below, so a change on either side shows up):

* Surface: ours is ``mask XOR erode(mask)`` with *full* connectivity (3x3x3); MONAI erodes with
  scipy's default cross (6-connectivity), a thinner surface. On real tumour masks our surface
  Dice is therefore higher (a thicker shell has more voxels within the tolerance).
* HD95: ours is the 95th percentile of the union of both directed distance sets (MedPy's
  ``hd95``); MONAI's is the larger of the two directed 95th percentiles, so ours is never larger
  on the same surfaces (a mixture's quantile lies between its parts'); on the real masks it is
  0.6-1.0 x MONAI's.
* Empty masks: BraTS gives Dice 1 / HD95 0 / surface Dice 1 when both are empty and Dice 0 /
  HD95 = volume diagonal / surface Dice 0 when exactly one is; MONAI gives NaN for Dice with
  ``ignore_empty=True`` when the reference is empty, NaN for HD95 whenever a mask is empty, and
  NaN for surface Dice when both are empty.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice
from scipy.ndimage import binary_dilation, gaussian_filter

from trainables.metrics import dice, hd95, surface_dice, surface_distances, worst_case_distance

SHAPE = (40, 36, 28)
SPACING = (1.0, 1.2, 2.5)


def _t(mask: np.ndarray) -> torch.Tensor:
    """(*S) bool -> (1, 1, *S), MONAI's one-hot batch layout with one channel."""
    return torch.as_tensor(mask)[None, None]


def _monai(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    with warnings.catch_warnings():  # MONAI warns about empty masks; the values are asserted
        warnings.simplefilter("ignore")
        return {
            "dice": compute_dice(_t(pred), _t(ref), ignore_empty=False).item(),
            "dice_ignore_empty": compute_dice(_t(pred), _t(ref)).item(),
            "hd95": compute_hausdorff_distance(
                _t(pred), _t(ref), include_background=True, percentile=95, spacing=list(spacing)
            ).item(),
            "nsd": compute_surface_dice(
                _t(pred), _t(ref), [1.0], include_background=True, spacing=list(spacing)
            ).item(),
        }


def _blob(rng: np.random.Generator, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A random smooth blob (thresholded smoothed noise), like a tumour region."""
    field = gaussian_filter(rng.standard_normal(shape), sigma=3.0)
    return field > np.quantile(field, 0.85)


def _box(rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    lo = [int(rng.integers(1, s // 2)) for s in SHAPE]
    hi = [int(rng.integers(a + 2, s)) for a, s in zip(lo, SHAPE, strict=True)]
    mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return mask


@pytest.mark.parametrize("seed", range(4))
def test_dice_matches_monai_on_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    noise_pred, noise_ref = rng.random(SHAPE) < 0.3, rng.random(SHAPE) < 0.3
    for pred, ref in ((noise_pred, noise_ref), (_blob(rng), _blob(rng))):
        assert dice(pred, ref) == pytest.approx(_monai(pred, ref, SPACING)["dice"], abs=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_surface_metrics_match_monai_exactly_where_the_surfaces_coincide(seed: int) -> None:
    # A box's surface is the same under 6- and 26-connectivity erosion, so only the HD95
    # percentile rule differs: MONAI's HD95 is the larger directed 95th percentile.
    rng = np.random.default_rng(seed)
    pred, ref = _box(rng), _box(rng)
    theirs = _monai(pred, ref, SPACING)
    to_ref, to_pred = surface_distances(pred, ref, SPACING)
    directed = max(np.percentile(to_ref, 95), np.percentile(to_pred, 95))
    assert directed == pytest.approx(theirs["hd95"], rel=1e-5, abs=1e-4)
    assert hd95(pred, ref, SPACING) <= theirs["hd95"] + 1e-4
    assert surface_dice(pred, ref, SPACING, 1.0) == pytest.approx(theirs["nsd"], abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_surface_metrics_on_random_blobs_differ_only_as_documented(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = _blob(rng)
    pred = binary_dilation(ref, iterations=1) ^ (_blob(rng) & ref)
    theirs = _monai(pred, ref, SPACING)
    ours = hd95(pred, ref, SPACING)
    assert 0.5 * theirs["hd95"] <= ours <= theirs["hd95"] + 1e-4
    assert surface_dice(pred, ref, SPACING, 1.0) >= theirs["nsd"] - 0.02


def test_empty_mask_conventions_brats_vs_monai() -> None:
    empty, some = np.zeros(SHAPE, dtype=bool), np.zeros(SHAPE, dtype=bool)
    some[5:15, 5:15, 5:10] = True
    worst = worst_case_distance(SHAPE, SPACING)
    both, pred_empty, ref_empty = (
        _monai(empty, empty, SPACING),
        _monai(empty, some, SPACING),
        _monai(some, empty, SPACING),
    )
    # Both empty: BraTS calls it perfect; MONAI leaves Dice (ignore_empty), HD95, NSD undefined.
    assert (dice(empty, empty), hd95(empty, empty, SPACING)) == (1.0, 0.0)
    assert surface_dice(empty, empty, SPACING, 1.0) == 1.0
    assert both["dice"] == 1.0 and math.isnan(both["dice_ignore_empty"])
    assert math.isnan(both["hd95"]) and math.isnan(both["nsd"])
    # Exactly one empty: BraTS gives the worst case; MONAI gives no distance at all.
    for theirs, (p, r) in ((pred_empty, (empty, some)), (ref_empty, (some, empty))):
        assert dice(p, r) == theirs["dice"] == 0.0
        assert hd95(p, r, SPACING) == pytest.approx(worst) and not math.isfinite(theirs["hd95"])
        assert surface_dice(p, r, SPACING, 1.0) == theirs["nsd"] == 0.0
    assert pred_empty["dice_ignore_empty"] == 0.0 and math.isnan(ref_empty["dice_ignore_empty"])


def _real_pairs(sample: Path) -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]]:
    """(name, pred, ref, spacing): realistic disagreements built from each real label map."""
    pairs = []
    for seg in sorted(sample.glob("*/*_seg.nii*")):
        image = nib.load(seg)
        labels = np.asarray(image.dataobj).astype(np.uint8)
        spacing = tuple(float(v) for v in image.header.get_zooms()[:3])
        wt, tc = labels > 0, np.isin(labels, (1, 4))
        grown = binary_dilation(labels == 2, iterations=2) | (labels == 4)
        pairs += [(f"{seg.parent.name}/tc-vs-wt", tc, wt, spacing)]
        pairs += [(f"{seg.parent.name}/grown-vs-wt", grown, wt, spacing)]
    return pairs


@pytest.mark.realdata
def test_metrics_on_the_real_brats_masks(brats_sample_dir: Path) -> None:
    for name, pred, ref, spacing in _real_pairs(brats_sample_dir):
        theirs = _monai(pred, ref, spacing)
        assert dice(pred, ref) == pytest.approx(theirs["dice"], abs=1e-6), name
        ours = hd95(pred, ref, spacing)
        assert 0.6 * theirs["hd95"] <= ours <= theirs["hd95"] + 1e-4, (name, ours, theirs)
        assert surface_dice(pred, ref, spacing, 1.0) >= theirs["nsd"] - 0.02, (name, theirs)
