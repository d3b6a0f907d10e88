"""Preprocessing: crop box, each normalisation against hand-computed values, fingerprints."""

from __future__ import annotations

import numpy as np
import pytest

from trainables.config import Frozen, validate_config
from trainables.data.preprocess import (
    CTWindowNormalization,
    ForegroundIntensity,
    ForegroundNormalization,
    NoNormalization,
    PreprocessConfig,
    ZScoreNormalization,
    nonzero_bbox,
    normalize,
    preprocess,
)
from trainables.data.types import LoadedCase
from trainables.errors import CaseError, InputError


def make_case(image: np.ndarray, label: np.ndarray | None = None, bbox=None) -> LoadedCase:
    """A case around a (C, X, Y, Z) array with identity geometry."""
    return LoadedCase(
        case_id="c0",
        image=image,
        label=label,
        modalities=tuple(f"m{i}" for i in range(image.shape[0])),
        spacing=(1.0, 1.0, 1.0),
        affine=np.eye(4),
        bbox=bbox,
    )


def run(image, cfg_norm, label=None, crop=False) -> np.ndarray:
    cfg = PreprocessConfig(crop_to_nonzero=crop, normalization=cfg_norm)
    return preprocess(make_case(np.asarray(image, dtype=np.float32), label), cfg).image


# ---- cropping ---------------------------------------------------------------------------------


def test_crop_bbox_covers_nonzero_voxels_of_any_modality() -> None:
    image = np.zeros((2, 6, 7, 8), dtype=np.float32)
    image[0, 1, 2, 3] = 5.0  # modality 0 sets the low corner
    image[1, 4, 5, 6] = -2.0  # a negative voxel of modality 1 sets the high corner
    label = np.zeros((6, 7, 8), dtype=np.uint8)
    label[4, 5, 6] = 3
    cfg = PreprocessConfig(normalization=NoNormalization())
    out = preprocess(make_case(image, label), cfg)
    assert out.bbox == ((1, 5), (2, 6), (3, 7))
    assert out.image.shape == (2, 4, 4, 4)
    assert out.label.shape == (4, 4, 4)
    assert out.image[0, 0, 0, 0] == 5.0 and out.image[1, 3, 3, 3] == -2.0
    assert out.label[3, 3, 3] == 3
    assert out.image.dtype == np.float32


def test_label_foreground_outside_the_images_is_a_case_error() -> None:
    """A misregistered label's tumour outside the crop box vanished from training silently."""
    image = np.zeros((1, 6, 7, 8), dtype=np.float32)
    image[0, 2:5, 2:5, 2:5] = 1.0
    label = np.zeros((6, 7, 8), dtype=np.uint8)
    label[0, 0, 0:2] = 2  # where every image is 0
    label[3, 3, 3] = 1
    cfg = PreprocessConfig(normalization=NoNormalization())
    with pytest.raises(CaseError) as err:
        preprocess(make_case(image, label), cfg)
    assert str(err.value) == (
        "c0: the label has 2 foreground voxels where every image is 0 (outside the images' "
        "non-zero box): label and images do not match"
    )
    uncropped = PreprocessConfig(crop_to_nonzero=False, normalization=NoNormalization())
    assert preprocess(make_case(image, label), uncropped).label.sum() == 5


def test_crop_of_an_already_cropped_case_reports_source_grid_box() -> None:
    image = np.zeros((1, 4, 4, 4), dtype=np.float32)
    image[0, 2, 1, 3] = 1.0
    case = make_case(image, bbox=((10, 14), (20, 24), (30, 34)))
    out = preprocess(case, PreprocessConfig(normalization=NoNormalization()))
    assert out.bbox == ((12, 13), (21, 22), (33, 34))


def test_all_zero_image_keeps_full_extent_and_stays_finite() -> None:
    assert nonzero_bbox(np.zeros((2, 3, 4, 5))) == ((0, 3), (0, 4), (0, 5))
    stats = tuple(_stats(m, 0.0, 1.0, 0.0, 1.0) for m in ("m0", "m1"))
    norms = (
        ZScoreNormalization(),
        ZScoreNormalization(minmax=True),
        ForegroundNormalization(stats=stats),
    )
    for norm in norms:
        out = run(np.zeros((2, 3, 4, 5)), norm, crop=True)
        assert out.shape == (2, 3, 4, 5)
        assert np.all(out == 0)


def test_no_crop_keeps_shape_and_bbox() -> None:
    image = np.zeros((1, 3, 3, 3), dtype=np.float32)
    image[0, 1, 1, 1] = 1
    out = preprocess(make_case(image), PreprocessConfig(crop_to_nonzero=False))
    assert out.image.shape == (1, 3, 3, 3) and out.bbox is None


# ---- normalisations ---------------------------------------------------------------------------


def test_zscore_uses_brain_voxels_of_all_modalities_and_zeroes_background() -> None:
    # Spatial 1x1x4: voxel 3 is background (zero in both modalities); voxel 0 is zero in
    # modality 0 only, so it is brain and counts for modality 0's statistics.
    image = np.array([[[[0.0, 2.0, 4.0, 0.0]]], [[[1.0, 1.0, 4.0, 0.0]]]])
    out = run(image, ZScoreNormalization(clip=None))
    # modality 0 brain values [0, 2, 4]: mean 2, std sqrt(8/3)
    s0 = np.sqrt(8 / 3)
    np.testing.assert_allclose(out[0, 0, 0], [-2 / s0, 0.0, 2 / s0, 0.0], rtol=1e-6)
    # modality 1 brain values [1, 1, 4]: mean 2, std sqrt(2)
    s1 = np.sqrt(2.0)
    np.testing.assert_allclose(out[1, 0, 0], [-1 / s1, -1 / s1, 2 / s1, 0.0], rtol=1e-6)


def test_zscore_clips_to_clip_std() -> None:
    # nine 1s and one outlier: mean 10.9, std 29.7, outlier z = 3.0 -> clipped to 1.5
    values = np.array([1.0] * 9 + [100.0])
    image = values.reshape(1, 1, 1, 10)
    out = run(image, ZScoreNormalization(clip=1.5))
    expected = np.clip((values - 10.9) / values.std(), -1.5, 1.5)
    np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-5)
    assert out.max() == pytest.approx(1.5)


def test_zscore_minmax_rescales_brain_to_unit_range_background_zero() -> None:
    image = np.array([[[[1.0, 2.0, 3.0, 0.0]]]])
    out = run(image, ZScoreNormalization(clip=None, minmax=True))
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 0.5, 1.0, 0.0], atol=1e-6)


def test_zscore_constant_modality_gives_zeros_not_nan() -> None:
    image = np.stack([np.full((2, 2, 2), 7.0), np.arange(8.0).reshape(2, 2, 2) + 1])
    for norm in (ZScoreNormalization(), ZScoreNormalization(minmax=True)):
        out = run(image, norm)
        assert np.isfinite(out).all()
        np.testing.assert_array_equal(out[0], 0.0)


def _stats(modality: str, lower: float, upper: float, mean: float, std: float):
    return ForegroundIntensity(modality=modality, lower=lower, upper=upper, mean=mean, std=std)


def test_foreground_clips_and_zscores_with_the_given_dataset_stats() -> None:
    image = np.array([[[[-1000.0, 10.0, 20.0, 30.0, 40.0, 500.0]]], [[[1.0, 2, 3, 4, 5, 6]]]])
    stats = (_stats("m1", 2.0, 5.0, 3.0, 2.0), _stats("m0", 10.0, 40.0, 25.0, 5.0))
    out = run(image, ForegroundNormalization(stats=stats))
    # looked up by modality name, not by position
    np.testing.assert_allclose(out[0, 0, 0], (np.array([10.0, 10, 20, 30, 40, 40]) - 25) / 5)
    np.testing.assert_allclose(out[1, 0, 0], (np.array([2.0, 2, 3, 4, 5, 5]) - 3) / 2)


def test_foreground_never_reads_the_cases_label() -> None:
    """The leak this guards against: clip range and z-score taken from the case's own mask."""
    image = np.array([[[[-1000.0, 10.0, 20.0, 30.0, 40.0, 500.0]]]])
    norm = ForegroundNormalization(stats=(_stats("m0", 0.0, 100.0, 50.0, 10.0),))
    masks = [None, [0, 1, 1, 1, 1, 0], [1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]]
    outs = [run(image, norm, None if m is None else np.array([[m]], dtype=np.uint8)) for m in masks]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    np.testing.assert_allclose(outs[0][0, 0, 0], [-5.0, -4.0, -3.0, -2.0, -1.0, 5.0])


def test_foreground_without_stats_or_a_modalitys_stats_names_the_field() -> None:
    image = np.ones((1, 1, 1, 3), dtype=np.float32)
    with pytest.raises(
        InputError, match=r"normalization\.stats: 'foreground' normalisation has no"
    ):
        run(image, ForegroundNormalization())
    norm = ForegroundNormalization(stats=(_stats("ct", 0.0, 1.0, 0.0, 1.0),))
    with pytest.raises(InputError, match=r"no statistics for modality 'm0' \(have: ct\)"):
        run(image, norm)


def test_foreground_stats_are_validated() -> None:
    twice = [{"modality": "ct", "lower": 0, "upper": 1, "mean": 0, "std": 1}] * 2
    with pytest.raises(InputError, match="stats name a modality more than once"):
        validate_config(PreprocessConfig, {"normalization": {"kind": "foreground", "stats": twice}})
    flat = {"modality": "ct", "lower": 0, "upper": 1, "mean": 0, "std": 0}
    with pytest.raises(InputError, match=r"normalization\.stats\.0\.std"):
        validate_config(
            PreprocessConfig, {"normalization": {"kind": "foreground", "stats": [flat]}}
        )
    upside = {"modality": "ct", "lower": 2, "upper": 1, "mean": 0, "std": 1}
    with pytest.raises(InputError, match=r"lower \(2.0\) must not be above upper \(1.0\)"):
        validate_config(
            PreprocessConfig, {"normalization": {"kind": "foreground", "stats": [upside]}}
        )


def test_ct_window_default_is_haemorrhage_window() -> None:
    # window [66.5, 125.5] HU
    image = np.array([[[[-1000.0, 66.5, 96.0, 125.5, 3000.0]]]])
    out = run(image, CTWindowNormalization())
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    custom = run(np.array([[[[0.0, 25.0, 100.0]]]]), CTWindowNormalization(center=50, width=100))
    np.testing.assert_allclose(custom[0, 0, 0], [0.0, 0.25, 1.0], atol=1e-6)


def test_none_only_casts_and_does_not_touch_input() -> None:
    raw = np.array([[[[3, 0, 7]]]], dtype=np.int16)
    case = make_case(raw)
    out = preprocess(case, PreprocessConfig(crop_to_nonzero=False, normalization={"kind": "none"}))
    assert out.image.dtype == np.float32
    np.testing.assert_array_equal(out.image, raw)
    zs = preprocess(case, PreprocessConfig(crop_to_nonzero=False))
    assert zs.image is not case.image
    np.testing.assert_array_equal(case.image, raw)  # the input case is not modified in place


# ---- config and fingerprint -------------------------------------------------------------------


def test_fingerprint_is_stable_and_differs_between_configs() -> None:
    default = PreprocessConfig()
    explicit = PreprocessConfig.model_validate(
        {"crop_to_nonzero": True, "normalization": {"kind": "zscore", "clip": 5.0}}
    )
    assert default.fingerprint() == explicit.fingerprint()
    assert len(default.fingerprint()) == 16
    # Pinned across processes and runs (no salted hash()): update only together with a config
    # schema change or a PREPROCESS_VERSION bump.
    assert default.fingerprint() == "da4b2a7b0bff9c45"
    others = [
        PreprocessConfig(crop_to_nonzero=False),
        PreprocessConfig(normalization=ZScoreNormalization(clip=3.0)),
        PreprocessConfig(normalization=ZScoreNormalization(clip=None)),
        PreprocessConfig(normalization=ZScoreNormalization(minmax=True)),
        PreprocessConfig(normalization=ForegroundNormalization()),
        PreprocessConfig(normalization=ForegroundNormalization(upper_percentile=99.0)),
        PreprocessConfig(normalization=CTWindowNormalization()),
        PreprocessConfig(normalization=CTWindowNormalization(width=80)),
        PreprocessConfig(normalization=NoNormalization()),
    ]
    prints = {cfg.fingerprint() for cfg in [default, *others]}
    assert len(prints) == len(others) + 1


def test_fingerprint_depends_on_preprocess_version(monkeypatch: pytest.MonkeyPatch) -> None:
    import trainables.data.preprocess as module

    before = PreprocessConfig().fingerprint()
    monkeypatch.setattr(module, "PREPROCESS_VERSION", module.PREPROCESS_VERSION + 1)
    assert PreprocessConfig().fingerprint() != before


def test_config_errors_name_the_field() -> None:
    with pytest.raises(InputError, match=r"normalization\.kind: 'zscor' is not one of"):
        validate_config(PreprocessConfig, {"normalization": {"kind": "zscor"}}, "prep.yaml")
    with pytest.raises(InputError, match=r"normalization\.width"):
        validate_config(
            PreprocessConfig, {"normalization": {"kind": "ct_window", "width": 0}}, "prep.yaml"
        )
    bad_percentiles = {"kind": "foreground", "lower_percentile": 90, "upper_percentile": 10}
    with pytest.raises(InputError, match=r"lower_percentile \(90.0\) must be below"):
        validate_config(PreprocessConfig, {"normalization": bad_percentiles})


def test_none_keeps_intensities_and_an_unhandled_kind_raises() -> None:
    image = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    np.testing.assert_array_equal(normalize(image, ("m0",), NoNormalization()), image)

    class _Histogram(Frozen):
        kind: str = "histogram"

    with pytest.raises(AssertionError, match=r"kind='histogram'"):
        normalize(image, ("m0",), _Histogram())
