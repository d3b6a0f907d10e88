"""Resampling to a target spacing (``data.preprocess.resample``): nnU-Net's rules for the target
and the anisotropic axis, the resampling itself, and the cache it makes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from tests.trainables.data.nifti_factory import save_nifti, write_dataset_json
from trainables.data.cache import PreparedDataset, prepare
from trainables.data.fingerprint import with_dataset_spacing
from trainables.data.layouts import discover
from trainables.data.preprocess import PREPROCESS_VERSION, PreprocessConfig
from trainables.data.resample import (
    TargetSpacing,
    coarse_axis,
    dataset_target_spacing,
    resample_case,
    resample_image,
    resample_label,
    resampled_shape,
)
from trainables.data.types import LoadedCase
from trainables.errors import InputError

# ---- nnU-Net's rules ---------------------------------------------------------------------------


def test_the_target_is_the_median_spacing_of_an_isotropic_dataset() -> None:
    spacings = [(1.0, 1.0, 1.0), (0.8, 0.9, 1.2), (1.2, 1.1, 1.4)]
    shapes = [(100, 100, 100)] * 3
    assert dataset_target_spacing(spacings, shapes) == (1.0, 1.0, 1.2)


def test_thick_slices_take_the_10th_percentile_of_their_spacing() -> None:
    # median (0.45, 0.45, 5.0) is anisotropic and has few slices (32 * 3 < 512)
    spacings = [(0.45, 0.45, 5.0), (0.5, 0.5, 5.0), (0.42, 0.42, 1.0), (0.45, 0.45, 5.0)]
    shapes = [(512, 512, 30), (512, 512, 32), (512, 512, 150), (512, 512, 32)]
    target = dataset_target_spacing(spacings, shapes)
    assert target[:2] == (0.45, 0.45)
    assert target[2] == pytest.approx(np.percentile([5.0, 5.0, 1.0, 5.0], 10))  # 2.2


def test_the_coarse_axis_is_never_finer_than_the_others() -> None:
    spacings = [(1.0, 1.0, 5.0)] * 5 + [(1.0, 1.0, 0.5)] * 2  # 10th percentile 0.5 mm
    shapes = [(300, 300, 20)] * 7
    assert dataset_target_spacing(spacings, shapes) == pytest.approx((1.0, 1.0, 1.00001))


def test_anisotropic_spacing_with_many_slices_keeps_the_median() -> None:
    spacings = [(0.5, 0.5, 2.0), (0.5, 0.5, 0.5), (0.5, 0.5, 2.0)]
    shapes = [(100, 100, 100)] * 3  # not few voxels along the coarse axis
    assert dataset_target_spacing(spacings, shapes) == (0.5, 0.5, 2.0)


def test_the_coarse_axis_needs_anisotropy_and_one_coarsest_axis() -> None:
    assert coarse_axis((1.0, 1.0, 3.5), (1.0, 1.0, 1.0)) == 2  # the source decides first
    assert coarse_axis((1.0, 1.0, 1.0), (4.0, 1.0, 1.0)) == 0  # else the target
    assert coarse_axis((1.0, 1.0, 3.0), (1.0, 1.0, 1.0)) is None  # 3 is not > 3
    assert coarse_axis((1.0, 4.0, 4.0), (1.0, 1.0, 1.0)) is None  # two coarsest axes
    assert resampled_shape((10, 11, 12), (1.0, 1.0, 5.0), (2.0, 0.5, 2.5)) == (5, 22, 24)


# ---- the resampling ----------------------------------------------------------------------------


def test_images_map_voxel_centres_onto_voxel_centres() -> None:
    """Agrees with map_coordinates at ``(i + 0.5) * in / out - 0.5`` (skimage's resize, which
    nnU-Net calls) and reproduces a linear ramp inside the volume."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 9, 7, 6)).astype(np.float32)
    out = resample_image(image, (14, 5, 6), axis=None, order=3)
    grid = np.meshgrid(
        *[(np.arange(n) + 0.5) * (m / n) - 0.5 for n, m in zip((14, 5, 6), (9, 7, 6), strict=True)],
        indexing="ij",
    )
    reference = ndimage.map_coordinates(image[0], grid, order=3, mode="nearest")
    np.testing.assert_allclose(out[0], np.clip(reference, image.min(), image.max()), atol=1e-4)
    ramp = np.broadcast_to(np.arange(12, dtype=np.float32)[:, None, None], (12, 4, 4))[None]
    up = resample_image(ramp, (24, 4, 4), axis=None, order=3)[0, 8:-8, 0, 0]  # away from edges
    np.testing.assert_allclose(up, (np.arange(24)[8:-8] + 0.5) / 2 - 0.5, atol=1e-3)


def test_the_coarse_axis_is_resampled_by_nearest_neighbour_and_never_overshoots() -> None:
    slices = np.broadcast_to(np.arange(5, dtype=np.float32)[None, None, :] * 10, (6, 6, 5))
    out = resample_image(slices[None], (12, 12, 10), axis=2, order=3)[0]
    assert set(np.unique(np.round(out, 4))) == {0, 10, 20, 30, 40}  # copies of slices, no blend
    blended = resample_image(slices[None], (12, 12, 10), axis=None, order=3)[0]
    assert len(np.unique(np.round(blended, 3))) > 5
    step = np.zeros((1, 16, 4, 4), np.float32)
    step[0, 8:] = 100.0
    cubic = resample_image(step, (40, 4, 4), axis=None, order=3)
    assert cubic.min() == 0.0 and cubic.max() == 100.0  # spline overshoot clipped


def test_labels_are_resampled_class_by_class_without_inventing_codes() -> None:
    label = np.zeros((20, 20, 8), np.uint8)
    label[4:16, 4:16, 2:6] = 2
    label[8:12, 8:12, 3:5] = 3
    up = resample_label(label, (40, 40, 16), axis=None)
    assert set(np.unique(up)) == {0, 2, 3}
    # each block's volume x 8, less its 8 corner voxels, where the trilinear mask is
    # 0.75 ** 3 < 0.5 (nnU-Net's rule rounds corners); code 3 is written over code 2
    code3 = 4 * 4 * 2 * 8 - 8
    assert np.bincount(up.ravel(), minlength=4)[1:].tolist() == [0, 576 * 8 - 8 - code3, code3]
    down_up = resample_label(resample_label(label, (10, 10, 4), None), (20, 20, 8), None)
    assert np.mean(down_up == label) > 0.95


def _case(spacing: tuple[float, float, float], shape=(12, 10, 4)) -> LoadedCase:
    image = np.random.default_rng(1).normal(size=(1, *shape)).astype(np.float32)
    label = (image[0] > 1.0).astype(np.uint8)
    return LoadedCase("c", image, label, ("ct",), spacing, np.eye(4))


def test_a_case_keeps_its_grid_unless_the_target_changes_its_shape() -> None:
    case = _case((0.5, 0.5, 5.0))
    assert resample_case(case, PreprocessConfig().resample) is case
    same = resample_case(case, TargetSpacing(spacing=(0.51, 0.5, 5.0)))  # rounds to (12, 10, 4)
    assert same is case and same.source_spacing is None
    moved = resample_case(case, TargetSpacing(spacing=(1.0, 1.0, 2.5)))
    assert moved.image.shape == (1, 6, 5, 8) and moved.label.shape == (6, 5, 8)
    assert moved.spacing == (1.0, 1.0, 2.5) and moved.source_spacing == (0.5, 0.5, 5.0)


def test_in_plane_only_keeps_each_cases_slice_spacing() -> None:
    case = _case((0.5, 0.5, 5.0))
    moved = resample_case(case, TargetSpacing(spacing=(1.0, 1.0, 1.0), in_plane_only=True))
    assert moved.spacing == (1.0, 1.0, 5.0) and moved.image.shape == (1, 6, 5, 4)
    thin = resample_case(_case((0.5, 0.5, 2.0)), TargetSpacing(spacing=(1.0, 1.0, 5.0),
                                                                in_plane_only=True))  # fmt: skip
    assert thin.spacing == (1.0, 1.0, 2.0) and thin.image.shape == (1, 6, 5, 4)


def test_slices_resampled_apart_keep_their_own_range() -> None:
    """nnU-Net resizes slice by slice with skimage's clip: a faint slice beside a bright one
    is clipped to its own range, not to the volume's."""
    image = np.zeros((1, 8, 8, 2), np.float32)
    image[0, 4:, :, 0] = 1.0  # a faint step
    image[0, 4:, :, 1] = 100.0  # a bright one
    out = resample_image(image, (20, 8, 2), axis=2, order=3)
    assert out[0, :, :, 0].min() == 0.0 and out[0, :, :, 0].max() == 1.0
    unclipped = ndimage.zoom(
        image[0, :, :, 0], (20 / 8, 1), order=3, mode="nearest", grid_mode=True
    )
    assert unclipped.max() > 1.0  # the cubic spline overshoots, so the clip did the work


def test_an_unset_target_names_the_field() -> None:
    with pytest.raises(InputError) as err:
        resample_case(_case((1.0, 1.0, 1.0)), TargetSpacing())
    assert str(err.value).startswith("data.preprocess.resample.spacing: 'target_spacing' resam")
    assert "computed when a dataset is prepared" in str(err.value)


def test_caches_made_before_resampling_existed_keep_their_fingerprint() -> None:
    import hashlib
    import json

    plain = PreprocessConfig()
    old = {"version": PREPROCESS_VERSION, "config": plain.model_dump(mode="json")}
    del old["config"]["resample"]
    canonical = json.dumps(old, sort_keys=True, separators=(",", ":"))
    assert plain.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    resampled = PreprocessConfig(resample={"kind": "target_spacing"})
    assert resampled.fingerprint() != plain.fingerprint()


# ---- the dataset's target, and the cache ------------------------------------------------------


def _ct_folder(root: Path, spacings: list[tuple[float, float, float]], labelled=True) -> Path:
    """MSD CT cases of shape (16, 16, 6) with a bright block inside a zero border, labelled
    where the block is; one case per spacing."""
    write_dataset_json(root, {"modality": {"0": "CT"}, "labels": {"0": "bg", "1": "blood"}})
    for n, spacing in enumerate(spacings):
        hu = np.zeros((16, 16, 6), np.int16)
        hu[2:14, 2:14, 1:5] = 40 + n
        hu[5:10, 6:11, 2:4] = 80
        save_nifti(root / "imagesTr" / f"case{n}.nii.gz", hu, spacing)
        if labelled:
            label = (hu == 80).astype(np.uint8)
            save_nifti(root / "labelsTr" / f"case{n}.nii.gz", label, spacing)
    return root


def test_the_dataset_target_comes_from_the_labelled_cases_headers(tmp_path: Path) -> None:
    root = _ct_folder(tmp_path / "ct", [(0.5, 0.5, 5.0), (0.7, 0.7, 5.0), (0.6, 0.6, 2.0)])
    save_nifti(root / "imagesTs" / "odd.nii.gz", np.ones((4, 4, 4), np.int16), (9.0, 9.0, 9.0))
    index = discover(root)
    cfg = with_dataset_spacing(PreprocessConfig(resample={"kind": "target_spacing"}), index.cases)
    assert cfg.resample.spacing == (0.6, 0.6, 5.0)  # the unlabelled 9 mm case is not counted
    written = PreprocessConfig(resample={"kind": "target_spacing", "spacing": [1, 1, 1]})
    assert with_dataset_spacing(written, index.cases) is written


def test_no_readable_header_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    root = _ct_folder(tmp_path / "ct", [(0.5, 0.5, 5.0)])
    (root / "imagesTr" / "case0.nii.gz").write_bytes(b"not a nifti")
    cfg = PreprocessConfig(resample={"kind": "target_spacing"})
    with pytest.raises(InputError) as err:
        with_dataset_spacing(cfg, discover(root).cases)
    assert str(err.value).startswith("data.preprocess.resample: 'target_spacing' resampling")
    assert "none of its 1 cases has a readable one; write data.preprocess.resample" in str(
        err.value
    )


def test_the_cache_holds_the_resampled_case_and_its_source_grid_label(tmp_path: Path) -> None:
    root = _ct_folder(tmp_path / "ct", [(0.5, 0.5, 5.0), (0.5, 0.5, 5.0), (1.0, 1.0, 5.0)])
    cfg = PreprocessConfig(
        normalization={"kind": "ct_window", "center": 60.0, "width": 80.0},
        resample={"kind": "target_spacing"},
    )
    manifest = prepare(root, tmp_path / "cache", cfg)
    assert manifest.preprocess.resample.spacing == (0.5, 0.5, 5.0)
    assert manifest.fingerprint == cfg.fingerprint()  # the request's, as for foreground stats
    cache = PreparedDataset(tmp_path / "cache")
    same, moved = cache.entry("case0"), cache.entry("case2")
    assert same.source_spacing is None and same.spacing == (0.5, 0.5, 5.0)
    assert moved.source_spacing == (1.0, 1.0, 5.0) and moved.spacing == (0.5, 0.5, 5.0)
    assert moved.crop_shape == (12, 12, 4) and moved.shape == (24, 24, 4)
    case = cache.load("case2", mmap=False)
    assert case.image.shape == (1, 24, 24, 4) and case.label.shape == (24, 24, 4)
    assert case.source_spacing == (1.0, 1.0, 5.0)
    source = np.asarray(cache.source_label("case2"))
    expected = np.zeros((12, 12, 4), np.uint8)
    expected[3:8, 4:9, 1:3] = 1  # the label file cropped to the non-zero box
    np.testing.assert_array_equal(source, expected)
    np.testing.assert_array_equal(case.label, resample_label(expected, (24, 24, 4), axis=2))
    assert int(case.label.sum()) == 4 * int(expected.sum())
    fg = cache.foreground_locations("case2")
    assert fg.max(axis=0).tolist() < [24, 24, 4] and case.label[tuple(fg.T)].all()
    np.testing.assert_array_equal(cache.source_label("case0"), cache.load("case0").label)


def test_a_models_filled_in_config_reuses_the_cache_its_numbers_came_from(tmp_path: Path) -> None:
    """A trained model's config carries the computed spacing and statistics; testing it on its
    own dataset must not prepare a twin of the training cache (other numbers still do)."""
    from trainables.data.cache import ensure_prepared

    root = _ct_folder(tmp_path / "ct", [(0.5, 0.5, 5.0), (0.5, 0.5, 5.0), (1.0, 1.0, 5.0)])
    request = PreprocessConfig(
        normalization={"kind": "foreground"}, resample={"kind": "target_spacing"}
    )
    trained = ensure_prepared(root, tmp_path / "caches", request)
    filled = trained.manifest.preprocess
    assert filled.resample.spacing is not None and filled.normalization.stats is not None
    assert filled.requests()[0] == request and len(filled.requests()) == 3
    again = ensure_prepared(root, tmp_path / "caches", filled)
    assert again.root == trained.root
    assert len(list((tmp_path / "caches").glob("ct-*"))) == 1
    other = filled.model_copy(update={"resample": TargetSpacing(spacing=(1.0, 1.0, 5.0))})
    assert ensure_prepared(root, tmp_path / "caches", other).root != trained.root
    # a spacing written out in the trial, the statistics computed: the same reuse
    written = request.model_copy(update={"resample": TargetSpacing(spacing=(0.5, 0.5, 2.5))})
    trained = ensure_prepared(root, tmp_path / "written", written)
    again = ensure_prepared(root, tmp_path / "written", trained.manifest.preprocess)
    assert again.root == trained.root and len(list((tmp_path / "written").glob("ct-*"))) == 1
