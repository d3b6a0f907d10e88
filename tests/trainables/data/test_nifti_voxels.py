"""Voxel checks on real files: images finite after the header's scaling, labels of a real
integer-valued dtype in range, the header's shape backed by the file's bytes, no empty axis."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from tests.trainables.data.nifti_factory import SHAPE, brats_case, save_nifti
from trainables.data.labels import SCHEMES
from trainables.data.layouts import discover
from trainables.data.nifti import load_case, load_label
from trainables.errors import CaseError


def _case(tmp_path):
    written = brats_case(tmp_path, "c0")
    return discover(tmp_path).cases[0], written


def _error(record) -> CaseError:
    with pytest.raises(CaseError) as err:
        load_case(record)
    return err.value


def test_an_integer_image_whose_scaling_overflows_is_refused(tmp_path):
    """A huge scl_slope on int16 voxels makes inf in float32 (then NaN after normalisation):
    integer files are checked for finiteness after scaling too."""
    record, written = _case(tmp_path)
    save_nifti(record.images["t2"], written.images["t2"].astype(np.int16))
    raw = bytearray(gzip.decompress(record.images["t2"].read_bytes()))
    raw[112:116] = np.float32(1e37).tobytes()  # scl_slope (nibabel resets it on save)
    record.images["t2"].write_bytes(gzip.compress(bytes(raw)))
    err = _error(record)
    assert err.path == str(record.images["t2"])
    assert err.message.startswith("t2 has 0 NaN and ")
    assert err.message.endswith("infinite voxels after the header's scaling (scl_slope 1e+37)")


def test_a_float64_value_beyond_float32_is_said_so(tmp_path):
    record, written = _case(tmp_path)
    image = written.images["t1"].astype(np.float64)
    image[0, 0, 0] = 1e300
    save_nifti(record.images["t1"], image)
    assert _error(record).message == (
        "t1 has 0 NaN and 1 infinite voxels (values beyond float32's range, about 3.4e38, "
        "count as infinite)"
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.complex64, "label has complex64 voxels; ablate reads integer (or whole-number) labels"),
        ("rgb", "label has [('R', 'u1'), ('G', 'u1'), ('B', 'u1')] voxels; ablate reads"),
        (4.0000005, "label has 1 non-integer voxels (values 4.00000048)"),
        (1e20, "label has 1 voxels of values 1e+20"),
    ],
)
def test_labels_that_are_not_whole_numbers_in_range_are_refused(tmp_path, values, message):
    record, written = _case(tmp_path)
    assert record.label is not None
    label = written.label
    if values == "rgb":
        data = np.zeros(label.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        data["R"] = label
    elif values is np.complex64:
        data = label.astype(np.complex64) + 0.5
    else:
        data = label.astype(np.float32 if values < 1e10 else np.float64)
        data[0, 0, 0] = values
    nib.save(nib.Nifti1Image(data, np.eye(4)), record.label)
    with pytest.raises(CaseError) as err:
        load_label(record.label, SCHEMES["brats2021"], "c0")
    assert err.value.message.startswith(message)
    assert _error(record).message.startswith(message)


def test_a_header_promising_more_voxels_than_the_file_holds_is_named(tmp_path):
    """A wrong header shape read as 'out of memory' (the array was allocated first)."""
    record, _ = _case(tmp_path)
    path = record.images["flair"]
    img = nib.load(path)
    img.header.set_data_shape((4000, 4000, 4000))
    raw = img.header.binaryblock + b"\0" * 4 + gzip.decompress(path.read_bytes())[352:]
    path.write_bytes(gzip.compress(raw))
    err = _error(record)
    assert err.path == str(path)
    assert err.message.startswith(f"the header promises 4000x4000x4000 {img.get_data_dtype()} ")
    assert err.message.endswith(f"but the file holds {len(raw):,}: truncated, or a wrong header")


def test_a_zero_length_axis_is_refused_not_scored(tmp_path):
    """An empty volume crashed min() (losing every other case) or scored Dice 1 in evaluate."""
    record, _ = _case(tmp_path)
    save_nifti(record.images["t1"], np.zeros((*SHAPE[:2], 0), np.float32))
    assert _error(record).message.startswith("has a zero-length axis (shape")
    assert record.label is not None
    save_nifti(record.label, np.zeros((*SHAPE[:2], 0), np.uint8))
    with pytest.raises(CaseError, match=r"has a zero-length axis \(shape \(\d+, \d+, 0\)\)"):
        load_label(record.label, SCHEMES["brats2021"], "c0")
