"""NIfTI loading: arrays as written, label mapping per scheme, every validation error's text."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.trainables.data.nifti_factory import (
    SHAPE,
    brats_case,
    ct_dataset,
    fingerprint,
    msd_dataset,
    save_nifti,
    truncate,
    write_dataset_json,
)
from trainables.data.labels import SCHEMES
from trainables.data.layouts import discover
from trainables.data.nifti import load_case, load_label
from trainables.errors import CaseError, InputError

BRATS = ("t1", "t1ce", "t2", "flair")

# Internal codes of the factory's nested label: ED shell, NCR core, ET centre.
ED, NCR, ET = 2, 1, 3


def expected_internal(label_codes: tuple[int, int, int], source: np.ndarray) -> np.ndarray:
    """Internal label of the factory's label written with (NCR, ED, ET) source codes."""
    out = np.zeros(source.shape, np.uint8)
    for code, internal in zip(label_codes, (NCR, ED, ET), strict=True):
        out[source == code] = internal
    return out


def one_case(root, **kwargs):
    """Write one BraTS case and return (record, written)."""
    written = brats_case(root, "c0", **kwargs)
    return discover(root).cases[0], written


@pytest.mark.parametrize("seg_dtype", [np.uint8, np.int16, np.float32])
@pytest.mark.parametrize(("layout", "codes"), [("brats2021", (1, 2, 4)), ("brats2023", (1, 2, 3))])
def test_brats_case_loads_as_written(tmp_path, layout, codes, seg_dtype):
    record, written = one_case(tmp_path, layout=layout, seg_dtype=seg_dtype)
    case = load_case(record)
    assert case.case_id == "c0"
    assert case.modalities == BRATS
    assert case.image.dtype == np.float32 and case.image.shape == (4, *SHAPE)
    for i, mod in enumerate(BRATS):
        np.testing.assert_array_equal(case.image[i], written.images[mod])
    assert case.label is not None and case.label.dtype == np.uint8
    np.testing.assert_array_equal(case.label, expected_internal(codes, written.label))
    assert set(np.unique(case.label)) == {0, 1, 2, 3}


def test_requested_modality_order_spacing_and_affine(tmp_path):
    record, written = one_case(tmp_path, spacing=(1.0, 1.5, 2.0))
    case = load_case(record, ["flair", "t1"])
    assert case.modalities == ("flair", "t1")
    np.testing.assert_array_equal(case.image[0], written.images["flair"])
    np.testing.assert_array_equal(case.image[1], written.images["t1"])
    assert case.spacing == (1.0, 1.5, 2.0)
    np.testing.assert_allclose(case.affine, np.diag([1.0, 1.5, 2.0, 1.0]))


def test_msd_channels_are_split_into_canonical_modalities(tmp_path):
    written = msd_dataset(tmp_path, ["BRATS_001"])[0]
    case = load_case(discover(tmp_path).cases[0], ["t1", "t1ce", "t2", "flair"])
    for i, mod in enumerate(("t1", "t1ce", "t2", "flair")):
        np.testing.assert_array_equal(case.image[i], written.images[mod])
    assert written.label is not None
    np.testing.assert_array_equal(case.label, expected_internal((2, 1, 3), written.label))


def test_ct_case(tmp_path):
    written = ct_dataset(tmp_path, ["ct_001"])[0]
    case = load_case(discover(tmp_path).cases[0], require_label=True)
    assert case.modalities == ("ct",)
    np.testing.assert_array_equal(case.image[0], written.images["ct"])
    assert case.spacing == (0.5, 0.5, 5.0)
    assert set(np.unique(case.label)) == {0, 1}


def test_binary_labels_merge_positive_values_and_refuse_negative_ones(tmp_path):
    """Subtypes (2, 255) are foreground; -1 read as foreground too, which no convention means.
    (The scheme given: a dataset.json that lists labels holds the files to them,
    test_msd_json.py.)"""
    written = ct_dataset(tmp_path, ["ct_001"], dataset_json=False)[0]
    write_dataset_json(tmp_path, {"modality": {"0": "CT"}})
    record = discover(tmp_path).cases[0]
    assert record.label is not None and written.label is not None
    label = written.label.astype(np.int16)
    label[0, 0, 0], label[0, 0, 1] = 2, 255
    save_nifti(record.label, label, (0.5, 0.5, 5.0))
    assert set(np.unique(load_case(record).label)) == {0, 1}
    label[0, 0, 2] = -1
    save_nifti(record.label, label, (0.5, 0.5, 5.0))
    assert load_error(record).message == (
        "labels [-1] are outside the binary scheme (0 background, any positive value foreground)"
    )


def test_header_scaling_is_applied(tmp_path):
    record, written = one_case(tmp_path)
    img = nib.load(record.images["t2"])
    img = nib.Nifti1Image(np.asanyarray(img.dataobj).astype(np.int16), img.affine)
    img.header.set_slope_inter(2.0, 10.0)
    nib.save(img, record.images["t2"])
    case = load_case(record, ["t2"])
    np.testing.assert_allclose(case.image[0], written.images["t2"] * 2.0 + 10.0)


def test_trailing_singleton_axis_is_accepted(tmp_path):
    record, written = one_case(tmp_path)
    save_nifti(record.images["t1"], written.images["t1"][..., None].astype(np.int16))
    np.testing.assert_array_equal(load_case(record, ["t1"]).image[0], written.images["t1"])


def test_unlabelled_case_and_require_label(tmp_path):
    record, _ = one_case(tmp_path, seg=False)
    assert load_case(record).label is None
    with pytest.raises(CaseError) as err:
        load_case(record, require_label=True)
    assert err.value.message == "no label (seg) file, but this use needs labelled cases"
    assert err.value.path == str(tmp_path / "c0")


def test_missing_requested_modality(tmp_path):
    ct_dataset(tmp_path, ["ct_001"])
    with pytest.raises(CaseError) as err:
        load_case(discover(tmp_path).cases[0], ["t1", "ct"])
    assert str(err.value) == f"{tmp_path / 'imagesTr'}: missing modality t1 (the case has ct)"
    assert err.value.case_id == "ct_001"


def test_unknown_modality_name(tmp_path):
    record, _ = one_case(tmp_path)
    with pytest.raises(InputError, match=r"data.modalities: 't1c' is not one of .*did you mean"):
        load_case(record, ["t1c"])


def load_error(record, **kwargs) -> CaseError:
    with pytest.raises(CaseError) as err:
        load_case(record, **kwargs)
    return err.value


def test_truncated_and_garbage_files_name_the_file(tmp_path):
    record, _ = one_case(tmp_path)
    truncate(record.images["t1ce"])
    err = load_error(record)
    assert err.path == str(record.images["t1ce"])
    assert err.message.startswith("corrupt or truncated NIfTI file (EOFError: Compressed file")
    truncate(record.images["t1"], keep_bytes=20)  # the header itself is cut
    err = load_error(record, modalities=["t1"])
    assert err.path == str(record.images["t1"])
    assert err.message.startswith("corrupt or truncated NIfTI file (EOFError: Compressed file")
    record.images["t2"].write_bytes(b"not a nifti at all" * 30)
    err = load_error(record, modalities=["t2"])
    assert err.path == str(record.images["t2"])
    assert (
        err.message == "corrupt or truncated NIfTI file (BadGzipFile: Not a gzipped file (b'no'))"
    )
    record.images["flair"].write_bytes(b"")
    assert load_error(record, modalities=["flair"]).message == "empty file (0 bytes)"
    record.images["flair"].write_bytes(gzip.compress(b"short"))  # a valid gzip of no NIfTI
    err = load_error(record, modalities=["flair"])
    assert err.message.startswith("corrupt or truncated NIfTI file (WrapStructError:")


def test_an_unreadable_file_is_named_as_unreadable_not_corrupt(tmp_path, monkeypatch):
    record, _ = one_case(tmp_path)
    locked = record.images["t2"]
    read_bytes = Path.read_bytes

    def deny(self):  # as a file without read permission (tests run as root)
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    err = load_error(record)
    assert (err.path, err.message) == (str(locked), "cannot read the file: Permission denied")


def test_truncated_label_names_the_label_file(tmp_path):
    record, _ = one_case(tmp_path, ext=".nii")
    assert record.label is not None
    truncate(record.label)
    err = load_error(record)
    assert err.path == str(record.label)
    assert err.message.startswith("corrupt or truncated NIfTI file (OSError: Expected 384 bytes")


def test_four_d_brats_image_is_rejected(tmp_path):
    record, _ = one_case(tmp_path)
    save_nifti(record.images["t2"], np.zeros((*SHAPE, 2), np.int16))
    err = load_error(record)
    assert (err.path, err.message) == (
        str(record.images["t2"]),
        "expected a 3-D image, got shape (8, 8, 6, 2)",
    )


def test_msd_wrong_channel_count(tmp_path):
    msd_dataset(tmp_path, ["BRATS_001"])
    path = tmp_path / "imagesTr" / "BRATS_001.nii.gz"
    save_nifti(path, np.zeros((*SHAPE, 3), np.int16))
    err = load_error(discover(tmp_path).cases[0])
    assert (err.path, err.message) == (
        str(path),
        "expected a 4-D image with 4 channels, got shape (8, 8, 6, 3)",
    )


def test_modalities_with_different_shapes(tmp_path):
    record, _ = one_case(tmp_path)
    save_nifti(record.images["flair"], np.zeros((8, 8, 5), np.int16))
    err = load_error(record)
    assert (err.path, err.message) == (
        str(record.images["flair"]),
        "flair has shape (8, 8, 5) but t1, t1ce and t2 have (8, 8, 6)",
    )


def test_the_odd_file_out_is_named_not_the_first_one_checked(tmp_path):
    """t1 is checked first; when it is the one on another grid, the message must name it."""
    record, written = one_case(tmp_path)
    save_nifti(record.images["t1"], np.zeros((8, 8, 5), np.int16))
    err = load_error(record)
    assert (err.path, err.message) == (
        str(record.images["t1"]),
        "t1 has shape (8, 8, 5) but t1ce, t2 and flair have (8, 8, 6)",
    )
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    save_nifti(record.images["t1"], written.images["t1"].astype(np.int16), affine=shifted)
    err = load_error(record)
    assert err.path == str(record.images["t1"])
    assert err.message.startswith("affines of t1 and t1ce differ by up to 5 ")


def test_a_gzip_block_corrupted_in_place_fails_its_crc(tmp_path):
    """Bytes overwritten inside the stream still inflate (to garbage voxels); only the gzip
    trailer's CRC tells, and nibabel alone never reads that far."""
    record, _ = one_case(tmp_path)
    big = np.random.default_rng(0).integers(0, 3000, (64, 64, 48)).astype(np.int16)
    path = record.images["t2"]
    save_nifti(path, big)
    for name in ("t1", "t1ce", "flair"):
        save_nifti(record.images[name], big)
    assert record.label is not None
    save_nifti(record.label, np.zeros(big.shape, np.uint8))
    data = bytearray(path.read_bytes())
    data[5000:5100] = bytes(100)  # deep inside the deflate stream, past the header
    path.write_bytes(bytes(data))
    err = load_error(record)
    assert err.path == str(path)
    assert "corrupt or truncated NIfTI file (BadGzipFile: CRC check failed)" in err.message


@pytest.mark.parametrize("value", [0, 250])
def test_a_constant_scan_is_refused(tmp_path, value):
    record, _ = one_case(tmp_path)
    save_nifti(record.images["flair"], np.full(SHAPE, value, np.int16))
    err = load_error(record)
    assert (err.path, err.message) == (
        str(record.images["flair"]),
        f"flair is constant (every voxel is {value}): an empty or broken file",
    )


def test_modalities_with_different_affines(tmp_path):
    record, written = one_case(tmp_path)
    shifted = np.diag([1.0, 1.0, 1.0, 1.0])
    shifted[0, 3] = 0.5
    save_nifti(record.images["t2"], written.images["t2"].astype(np.int16), affine=shifted)
    err = load_error(record)
    assert err.path == str(record.images["t2"])
    assert err.message == (
        "affines of t2 and t1 differ by up to 0.5 (tolerance 0.001): "
        "the files are not on one voxel grid"
    )
    shifted[0, 3] = 1e-4  # within tolerance: accepted
    save_nifti(record.images["t2"], written.images["t2"].astype(np.int16), affine=shifted)
    assert load_case(record).image.shape == (4, *SHAPE)


def set_pixdim(path, axis: int, value: float) -> None:
    """Write ``value`` into the header's pixdim[axis] in place (nibabel would recompute it
    from the affine on save, so the gzip stream is patched: pixdim starts at byte 76)."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[76 + 4 * axis : 80 + 4 * axis] = np.float32(value).tobytes()
    path.write_bytes(gzip.compress(bytes(raw)))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_header_spacing_that_is_not_a_positive_number_is_named(tmp_path, value):
    """A NaN pixdim passed the grid checks and reached the cache's manifest (nibabel itself
    turns a negative one positive and a zero one into 1, with a warning)."""
    record, _ = one_case(tmp_path)
    set_pixdim(record.images["t1ce"], 1, value)
    err = load_error(record)
    assert err.path == str(record.images["t1ce"])
    assert err.message == (
        f"t1ce has voxel spacing {value:g} x 1 x 1 mm in its header (pixdim): it must be > 0"
    )
    assert record.label is not None
    set_pixdim(record.label, 2, value)
    with pytest.raises(CaseError, match=f"label map has voxel spacing 1 x {value:g} x 1 mm"):
        load_label(record.label, SCHEMES["brats2021"], "c0")


def test_a_zero_header_spacing_is_refused_and_other_repairs_named(tmp_path, caplog):
    """nibabel reads a zero pixdim as 1 mm and a negative one as its absolute value, saying so
    on stderr without the file: a zero spacing is unknown (refused), a sign is named."""
    record, _ = one_case(tmp_path)
    set_pixdim(record.images["t2"], 2, 0.0)
    err = load_error(record)
    assert (err.path, err.message) == (
        str(record.images["t2"]),
        "the header's voxel spacing (pixdim[1..3]) holds 0, so the spacing is unknown "
        "(nibabel would read it as 1 mm): write the true spacing into the header",
    )
    set_pixdim(record.images["t2"], 2, -1.0)
    caplog.clear()
    assert load_case(record).spacing == (1.0, 1.0, 1.0)
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        (
            "nibabel.global",
            f"{record.images['t2']}: pixdim[1,2,3] should be positive; setting to abs of "
            "pixdim values",
        )
    ]


def test_complex_voxels_are_refused_not_cast(tmp_path):
    """A complex image cast to float32 loses its imaginary part (numpy only warns)."""
    record, written = one_case(tmp_path)
    save_nifti(record.images["flair"], written.images["flair"].astype(np.complex64))
    err = load_error(record)
    assert (err.path, err.message) == (
        str(record.images["flair"]),
        "flair has complex64 voxels; ablate reads real-valued images",
    )


def test_label_shape_mismatch(tmp_path):
    record, _ = one_case(tmp_path)
    assert record.label is not None
    save_nifti(record.label, np.zeros((8, 8, 5), np.uint8))
    err = load_error(record)
    assert (err.path, err.message) == (
        str(record.label),
        "label shape (8, 8, 5) does not match the image shape (8, 8, 6)",
    )


def test_nan_and_inf_voxels_are_counted(tmp_path):
    record, written = one_case(tmp_path)
    data = written.images["t1"].copy()
    data.flat[[0, 5, 9]] = np.nan
    data.flat[[1, 2]] = [np.inf, -np.inf]
    save_nifti(record.images["t1"], data)
    err = load_error(record)
    assert (err.path, err.message) == (
        str(record.images["t1"]),
        "t1 has 3 NaN and 2 infinite voxels",
    )


def test_labels_outside_the_scheme(tmp_path):
    record, written = one_case(tmp_path)
    assert record.label is not None and written.label is not None
    bad = written.label.copy()
    bad[0, 0, 0], bad[0, 0, 1] = 3, 7
    save_nifti(record.label, bad)
    err = load_error(record)
    assert (err.path, err.message) == (
        str(record.label),
        "labels [3, 7] are outside the brats2021 scheme (allowed: [0, 1, 2, 4])",
    )


def test_fractional_float_label(tmp_path):
    record, written = one_case(tmp_path, seg_dtype=np.float32)
    assert record.label is not None and written.label is not None
    bad = written.label.copy()
    bad[0, 0, :2] = 0.5
    save_nifti(record.label, bad)
    err = load_error(record)
    assert err.message == "label has 2 non-integer voxels (values 0.5)"
    assert err.path == str(record.label)


def test_load_label(tmp_path):
    written = brats_case(tmp_path, "c0", seg_dtype=np.int16, spacing=(1.0, 1.0, 2.5))
    label, spacing, affine = load_label(written.files["seg"], SCHEMES["brats2021"], "c0")
    assert label.dtype == np.uint8
    assert written.label is not None
    np.testing.assert_array_equal(label, expected_internal((1, 2, 4), written.label))
    assert spacing == (1.0, 1.0, 2.5)
    np.testing.assert_allclose(affine, np.diag([1.0, 1.0, 2.5, 1.0]))


def test_loading_never_writes_to_the_source(tmp_path):
    brats_case(tmp_path / "b21", "c0")
    brats_case(tmp_path / "b23", "c0", layout="brats2023")
    msd_dataset(tmp_path / "msd", ["BRATS_001"])
    ct_dataset(tmp_path / "ct", ["ct_001"])
    before = fingerprint(tmp_path)
    for sub in ("b21", "b23", "msd", "ct"):
        for record in discover(tmp_path / sub).cases:
            load_case(record, require_label=True)
    assert fingerprint(tmp_path) == before


@pytest.mark.realdata
def test_real_case_loads(brats_sample_dir):
    record = next(c for c in discover(brats_sample_dir).cases if c.case_id == "Brats18_2013_3_1")
    case = load_case(record, require_label=True)  # its seg is stored as int16
    assert case.image.shape == (4, 240, 240, 155)
    assert case.spacing == (1.0, 1.0, 1.0)
    assert set(np.unique(case.label)) == {0, 1, 2, 3}


def test_a_header_whose_pixdim_contradicts_its_affine_is_refused(tmp_path):
    """pixdim 1 mm under an sform of 3 mm voxels: distances (HD95, NSD) were measured in the
    pixdim while predictions were written with the affine."""
    record, written = one_case(tmp_path)
    save_nifti(record.images["t1"], written.images["t1"], (1.0, 1.0, 1.0), np.diag([3, 3, 3, 1.0]))
    err = load_error(record)
    assert (err.path, err.message) == (
        str(record.images["t1"]),
        "t1's header spacing (pixdim) 1 x 1 x 1 mm is not its affine's (sform) voxel size "
        "3 x 3 x 3 mm: the header contradicts itself; rewrite it with one spacing",
    )
    oblique = np.eye(4)
    oblique[:3, :3] = [[0.8, -0.6, 0], [0.6, 0.8, 0], [0, 0, 1]]  # rotated: column norms 1
    for mod in ("t1", "t1ce", "t2", "flair"):
        save_nifti(record.images[mod], written.images[mod], (1.0, 1.0, 1.0), oblique)
    assert record.label is not None
    save_nifti(record.label, written.label, (1.0, 1.0, 1.0), oblique)
    assert load_case(record).spacing == (1.0, 1.0, 1.0)
