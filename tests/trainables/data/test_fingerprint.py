"""Dataset-level foreground statistics (nnU-Net's fingerprint) and their use by the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.trainables.data.nifti_factory import save_nifti, write_dataset_json
from trainables.data.cache import PreparedDataset, prepare
from trainables.data.fingerprint import foreground_intensities, pooled_stats
from trainables.data.preprocess import (
    ForegroundIntensity,
    ForegroundNormalization,
    PreprocessConfig,
)
from trainables.data.types import LoadedCase
from trainables.errors import InputError

SHAPE = (2, 2, 2)


def write_ct(root: Path, case_id: str, hu: list[float], mask: list[int] | None) -> None:
    """One 2x2x2 MSD CT case (``hu`` in voxel order); ``mask`` None writes no label file."""
    save_nifti(root / "imagesTr" / f"{case_id}.nii.gz", np.reshape(hu, SHAPE).astype(np.int16))
    if mask is not None:
        label = np.reshape(mask, SHAPE).astype(np.uint8)
        save_nifti(root / "labelsTr" / f"{case_id}.nii.gz", label)


@pytest.fixture
def ct(tmp_path: Path) -> Path:
    """Two labelled cases (foreground HU 10, 20 and 30, 40, 50) and one unlabelled case whose
    bright voxels would move every statistic if it were read."""
    root = tmp_path / "ct"
    write_dataset_json(root, {"modality": {"0": "CT"}, "labels": {"0": "bg", "1": "blood"}})
    write_ct(root, "a", [-900, 10, 20, -900, -900, -900, -900, -900], [0, 1, 1, 0, 0, 0, 0, 0])
    write_ct(root, "b", [30, 40, 50, 5, 5, 5, 5, 900], [1, 1, 1, 0, 0, 0, 0, 0])
    write_ct(root, "u", [900 + i for i in range(8)], None)
    return root


def test_stats_are_pooled_over_the_labelled_foreground_of_the_dataset(ct, tmp_path) -> None:
    manifest = prepare(
        ct, tmp_path / "cache", PreprocessConfig(normalization={"kind": "foreground"})
    )
    # pooled foreground [10, 20, 30, 40, 50]: mean 30, population std sqrt(200); percentiles
    # by linear interpolation over 4 gaps: 0.5 % -> 10 + 0.02 * 10, 99.5 % -> 50 - 0.2
    (stats,) = manifest.preprocess.normalization.stats
    assert stats.modality == "ct"
    assert stats.lower == pytest.approx(10.2) and stats.upper == pytest.approx(49.8)
    assert stats.mean == pytest.approx(30.0) and stats.std == pytest.approx(np.sqrt(200.0))
    assert (
        manifest.fingerprint == PreprocessConfig(normalization={"kind": "foreground"}).fingerprint()
    )
    cache = PreparedDataset(tmp_path / "cache")
    expected = (np.clip([30.0, 40, 50, 5, 5, 5, 5, 900], 10.2, 49.8) - 30) / np.sqrt(200.0)
    got = cache.load("b", mmap=False).image[0].astype(np.float32).ravel()
    np.testing.assert_allclose(got, expected, atol=2e-3)  # float16 storage
    unlabelled = cache.load("u", mmap=False).image[0].astype(np.float32)
    np.testing.assert_allclose(unlabelled, (49.8 - 30) / np.sqrt(200.0), atol=2e-3)


def test_a_cases_label_does_not_change_its_normalised_image(ct, tmp_path) -> None:
    """With the dataset's numbers fixed (a trained model's config), relabelling a case (as if
    it were a validation case with another reference) leaves its cached image identical."""
    applied = prepare(ct, tmp_path / "c1", PreprocessConfig(normalization={"kind": "foreground"}))
    before = PreparedDataset(tmp_path / "c1").load("b", mmap=False).image
    write_ct(ct, "b", [30, 40, 50, 5, 5, 5, 5, 900], [0, 0, 0, 0, 1, 1, 1, 1])
    prepare(ct, tmp_path / "c2", applied.preprocess)
    after = PreparedDataset(tmp_path / "c2").load("b", mmap=False)
    np.testing.assert_array_equal(after.image, before)
    assert after.label.ravel().tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_explicit_stats_are_applied_as_given(ct, tmp_path) -> None:
    given = ForegroundIntensity(modality="ct", lower=0.0, upper=100.0, mean=50.0, std=25.0)
    cfg = PreprocessConfig(normalization=ForegroundNormalization(stats=(given,)))
    manifest = prepare(ct, tmp_path / "cache", cfg)
    assert manifest.preprocess == cfg
    image = PreparedDataset(tmp_path / "cache").load("a", mmap=False).image[0].ravel()
    np.testing.assert_allclose(image[:3].astype(np.float32), [-2.0, -1.6, -1.2], atol=1e-3)


def test_a_dataset_without_labelled_foreground_is_refused(tmp_path) -> None:
    root = tmp_path / "ct"
    write_dataset_json(root, {"modality": {"0": "CT"}, "labels": {"0": "bg", "1": "blood"}})
    write_ct(root, "a", [1, 2, 3, 4, 5, 6, 7, 8], [0] * 8)
    write_ct(root, "u", [1, 2, 3, 4, 5, 6, 7, 8], None)
    cfg = PreprocessConfig(normalization={"kind": "foreground"})
    with pytest.raises(InputError, match=r"none of its 1 labelled cases has a foreground voxel"):
        prepare(root, tmp_path / "cache", cfg)
    assert not (tmp_path / "cache").exists()


def test_large_foregrounds_are_subsampled_the_same_way_every_time() -> None:
    image = np.arange(2 * 1000, dtype=np.float32).reshape(2, 10, 10, 10)
    case = LoadedCase("big", image, np.ones((10, 10, 10), np.uint8), ("t1", "t2"), (1,) * 3,
                      np.eye(4))  # fmt: skip
    one = foreground_intensities(case, per_case=100)
    two = foreground_intensities(case, per_case=100)
    assert one is not None and two is not None and one["t1"].shape == (100,)
    np.testing.assert_array_equal(one["t1"], two["t1"])
    np.testing.assert_array_equal(one["t2"], one["t1"] + 1000)  # same voxels in every modality
    (t1, t2) = pooled_stats([one], 0, 100)
    assert (t1.modality, t2.modality) == ("t1", "t2") and t1.lower == one["t1"].min()
