"""Per-case BraTS region metrics from internal label maps and their mean over cases."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from trainables.data.labels import INTERNAL_BINARY, get_scheme, regions_from_labels, to_internal
from trainables.metrics import (
    METRIC_NAMES,
    case_metrics,
    dice,
    hd95,
    mean_metrics,
    relative_volume_difference,
    sensitivity,
    specificity,
    surface_dice,
)

SHAPE = (12, 12, 10)
SPACING = (1.0, 1.0, 2.0)


def _nested_label_map() -> np.ndarray:
    """(12, 12, 10) internal labels: oedema 6x6x6 cube around a 4x4x4 core with a 2x2x2 ET."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[3:9, 3:9, 2:8] = 2
    labels[4:8, 4:8, 3:7] = 1
    labels[5:7, 5:7, 4:6] = 3
    return labels


def test_keys_cover_every_metric_and_region() -> None:
    labels = _nested_label_map()
    metrics = case_metrics(labels, labels, SPACING)
    expected = {f"{m}_{r}" for m in METRIC_NAMES for r in ("wt", "tc", "et")} | {"dice_mean"}
    assert set(metrics) == expected
    binary = case_metrics(labels > 0, labels > 0, SPACING, scheme=INTERNAL_BINARY)
    assert set(binary) == {f"{m}_fg" for m in METRIC_NAMES} | {"dice_mean"}


def test_perfect_prediction() -> None:
    labels = _nested_label_map()
    metrics = case_metrics(labels, labels, SPACING)
    for region in ("wt", "tc", "et"):
        assert metrics[f"dice_{region}"] == 1.0
        assert metrics[f"hd95_{region}"] == 0.0
        assert metrics[f"nsd_{region}"] == 1.0
        assert metrics[f"rvd_{region}"] == 0.0
        assert metrics[f"sensitivity_{region}"] == 1.0
        assert metrics[f"specificity_{region}"] == 1.0
    assert metrics["dice_mean"] == 1.0


def test_missed_enhancing_tumour_takes_the_worst_case() -> None:
    ref = _nested_label_map()
    pred = ref.copy()
    pred[pred == 3] = 1  # ET called necrosis: WT and TC unchanged, ET empty
    metrics = case_metrics(pred, ref, SPACING)
    assert metrics["dice_wt"] == metrics["dice_tc"] == 1.0
    assert metrics["dice_et"] == 0.0
    assert metrics["nsd_et"] == 0.0
    assert metrics["hd95_et"] == pytest.approx(math.sqrt(12**2 + 12**2 + 20**2))
    assert metrics["rvd_et"] == 1.0
    assert metrics["sensitivity_et"] == 0.0
    assert metrics["dice_mean"] == pytest.approx(2 / 3)


def test_case_without_enhancing_tumour_in_either_map_is_perfect_for_et() -> None:
    ref = _nested_label_map()
    ref[ref == 3] = 1
    metrics = case_metrics(ref, ref, SPACING)
    assert (metrics["dice_et"], metrics["hd95_et"], metrics["nsd_et"]) == (1.0, 0.0, 1.0)
    assert metrics["sensitivity_et"] == 1.0


def test_region_values_equal_the_binary_metrics() -> None:
    rng = np.random.default_rng(3)
    ref = _nested_label_map()
    pred = np.where(rng.random(SHAPE) < 0.1, rng.integers(0, 4, SHAPE), ref).astype(np.uint8)
    metrics = case_metrics(pred, ref, SPACING, tolerance_mm=1.5)
    pred_regions, ref_regions = regions_from_labels(pred), regions_from_labels(ref)
    for index, region in enumerate(("wt", "tc", "et")):
        p, r = pred_regions[index], ref_regions[index]
        assert metrics[f"dice_{region}"] == dice(p, r)
        assert metrics[f"hd95_{region}"] == hd95(p, r, SPACING)
        assert metrics[f"nsd_{region}"] == surface_dice(p, r, SPACING, 1.5)
        assert metrics[f"rvd_{region}"] == relative_volume_difference(p, r)
        assert metrics[f"sensitivity_{region}"] == sensitivity(p, r)
        assert metrics[f"specificity_{region}"] == specificity(p, r)
    dices = [metrics[f"dice_{r}"] for r in ("wt", "tc", "et")]
    assert metrics["dice_mean"] == pytest.approx(sum(dices) / 3)
    assert 0.0 < metrics["dice_mean"] < 1.0


def test_shape_mismatch_raises_value_error_with_both_shapes() -> None:
    with pytest.raises(
        ValueError, match=r"pred shape \(4, 4, 4\) differs from ref shape \(4, 4, 5\)"
    ):
        case_metrics(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8), SPACING)


def test_spacing_must_match_the_axes() -> None:
    labels = _nested_label_map()
    with pytest.raises(ValueError, match=r"spacing: got 2 values for a 3-D mask"):
        case_metrics(labels, labels, (1.0, 1.0))  # type: ignore[arg-type]


def test_mean_metrics_skips_nan() -> None:
    cases = [
        {"dice_wt": 1.0, "rvd_wt": math.nan, "rvd_et": math.nan},
        {"dice_wt": 0.5, "rvd_wt": 0.2, "rvd_et": math.nan},
        {"dice_wt": 0.0, "rvd_wt": 0.4, "rvd_et": math.nan},
    ]
    means = mean_metrics(cases)
    assert list(means) == ["dice_wt", "rvd_wt", "rvd_et"]
    assert means["dice_wt"] == pytest.approx(0.5)
    assert means["rvd_wt"] == pytest.approx(0.3)
    assert math.isnan(means["rvd_et"])
    assert mean_metrics([]) == {}


@pytest.mark.realdata
def test_real_case_with_enhancing_tumour_relabelled(brats_sample_dir: Path) -> None:
    seg_path = sorted(brats_sample_dir.glob("*/*_seg.nii*"))[0]
    image = nib.load(seg_path)
    ref = to_internal(np.asarray(image.dataobj), get_scheme("brats2021"))
    sx, sy, sz = (float(s) for s in image.header.get_zooms()[:3])
    assert ref.shape == (240, 240, 155) and (sx, sy, sz) == (1.0, 1.0, 1.0)
    assert np.any(ref == 3)  # the case has enhancing tumour to miss
    pred = ref.copy()
    pred[pred == 3] = 1  # a model that never predicts enhancement
    metrics = case_metrics(pred, ref, (sx, sy, sz))
    assert metrics["dice_wt"] == metrics["dice_tc"] == 1.0
    assert metrics["hd95_wt"] == metrics["hd95_tc"] == 0.0
    assert metrics["dice_et"] == 0.0
    assert metrics["hd95_et"] == pytest.approx(373.13, abs=5e-3)  # the BraTS worst case
    assert metrics["dice_mean"] == pytest.approx(2 / 3)
    assert metrics["specificity_et"] == 1.0 and metrics["sensitivity_et"] == 0.0
