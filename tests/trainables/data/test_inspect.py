"""``inspect_dataset``: good and bad cases side by side, JSON and table output, progress."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.trainables.data.nifti_factory import (
    brats_case,
    ct_dataset,
    fingerprint,
    msd_dataset,
    save_nifti,
    truncate,
    write_dataset_json,
)
from trainables.data.inspect import inspect_dataset


@pytest.fixture
def mixed_dir(tmp_path):
    """Two good BraTS 2021 cases (one unlabelled), a truncated one, one missing a modality."""
    brats_case(tmp_path, "good_a", seg_dtype=np.int16)
    brats_case(tmp_path, "good_b", seg=False, spacing=(1.0, 1.0, 2.0))
    truncate(brats_case(tmp_path, "broken").files["t2"])
    brats_case(tmp_path, "partial", skip=("flair",))
    return tmp_path


def test_good_and_bad_cases_are_all_listed(mixed_dir):
    calls = []
    report = inspect_dataset(mixed_dir, progress=lambda *a: calls.append(a))
    assert [c.case_id for c in report.cases] == ["broken", "good_a", "good_b", "partial"]
    rows = {c.case_id: c for c in report.cases}
    good = rows["good_a"]
    assert good.ok and good.has_label
    assert good.modalities == ("t1", "t1ce", "t2", "flair")
    assert (good.shape, good.spacing, good.labels) == ((8, 8, 6), (1.0, 1.0, 1.0), (0, 1, 2, 4))
    assert rows["good_b"].ok and rows["good_b"].labels is None
    assert rows["good_b"].spacing == (1.0, 1.0, 2.0)
    assert rows["broken"].problem is not None
    assert rows["broken"].problem.startswith("corrupt or truncated NIfTI file (EOFError")
    assert rows["broken"].problem_file == str(mixed_dir / "broken" / "broken_t2.nii.gz")
    assert rows["partial"].problem == "missing modality file(s): partial_flair.nii.gz"
    assert (report.num_ok, report.num_problems) == (2, 2)
    assert [c.case_id for c in report.problems] == ["broken", "partial"]
    # progress counts the cases that discovery accepted and loading tried
    assert calls == [(1, 3, "broken"), (2, 3, "good_a"), (3, 3, "good_b")]


def test_to_dict_is_json_ready(mixed_dir):
    data = json.loads(json.dumps(inspect_dataset(mixed_dir).to_dict()))
    assert data["layout"] == "brats2021" and data["label_scheme"] == "brats2021"
    assert (data["num_cases"], data["num_ok"], data["num_problems"]) == (4, 2, 2)
    first_good = data["cases"][1]
    assert first_good["case_id"] == "good_a"
    assert first_good["shape"] == [8, 8, 6]
    assert first_good["labels"] == [0, 1, 2, 4]
    assert first_good["problem"] is None
    assert data["cases"][3]["ok"] is False
    assert data["target_spacing"] == [1.0, 1.0, 1.0]


def test_format_table_one_line_per_case(mixed_dir):
    lines = inspect_dataset(mixed_dir).format_table().splitlines()
    assert lines[0] == (
        f"{mixed_dir} (layout brats2021, labels brats2021): 4 cases, 2 usable, 2 with problems"
    )
    # the labelled case's grid is the target (the unlabelled 2 mm one is not counted)
    assert lines[1] == (
        "spacing: 1.00x1.00x1.00 to 1.00x1.00x2.00 mm over 2 distinct grids; "
        "data.preprocess.resample {kind: target_spacing} would resample to 1.00x1.00x1.00 mm"
    )
    lines = lines[:1] + lines[2:]
    assert lines[1].split() == [
        "case",
        "modalities",
        "shape",
        "spacing",
        "(mm)",
        "labels",
        "status",
    ]
    assert lines[2].startswith("broken ")
    assert "ERROR broken/broken_t2.nii.gz: corrupt or truncated NIfTI file" in lines[2]
    assert lines[3].split() == [
        "good_a",
        "t1,t1ce,t2,flair",
        "8x8x6",
        "1.00x1.00x1.00",
        "0,1,2,4",
        "ok",
    ]
    assert lines[4].split() == [
        "good_b",
        "t1,t1ce,t2,flair",
        "8x8x6",
        "1.00x1.00x2.00",
        "none",
        "ok",
    ]
    assert lines[5].split()[:3] == ["partial", "-", "-"]
    assert "ERROR partial: missing modality file(s): partial_flair.nii.gz" in lines[5]
    assert len(lines) == 6


def test_msd_and_ct_show_source_label_values(tmp_path):
    msd_dataset(tmp_path / "msd", ["BRATS_001"])
    cases = ct_dataset(tmp_path / "ct", ["ct_001", "ct_002"])
    # a CT label with several haemorrhage codes: binary keeps them apart in the report only
    # (dataset.json lists no labels here: listed ones hold the files to them)
    write_dataset_json(tmp_path / "ct", {"modality": {"0": "CT"}})
    save_nifti(cases[1].files["seg"], np.array(cases[1].label) * 3, spacing=(0.5, 0.5, 5.0))
    msd = inspect_dataset(tmp_path / "msd")
    assert (msd.layout, msd.label_scheme, msd.cases[0].labels) == ("msd", "msd_brats", (0, 1, 2, 3))
    ct = inspect_dataset(tmp_path / "ct")
    assert ct.label_scheme == "binary"
    assert [c.labels for c in ct.cases] == [(0, 1), (0, 3)]
    assert ct.cases[0].modalities == ("ct",) and ct.cases[0].spacing == (0.5, 0.5, 5.0)
    assert ct.format_table().splitlines()[1] == (
        "spacing: 0.50x0.50x5.00 mm in every case (resampling would change nothing)"
    )


def test_inspect_never_writes(mixed_dir):
    before = fingerprint(mixed_dir)
    inspect_dataset(mixed_dir)
    assert fingerprint(mixed_dir) == before


@pytest.mark.realdata
def test_real_case(brats_sample_dir, tmp_path):
    # One real case through a symlink keeps the test fast; test_layouts checks all three.
    (tmp_path / "BraTS2021_00006").symlink_to(brats_sample_dir / "BraTS2021_00006")
    report = inspect_dataset(tmp_path)
    assert (report.num_ok, report.num_problems) == (1, 0) and report.problems == []
    row = report.cases[0]
    assert row.shape == (240, 240, 155) and row.spacing == (1.0, 1.0, 1.0)
    assert row.modalities == ("t1", "t1ce", "t2", "flair")
    assert row.labels == (0, 1, 2, 4)


def test_crop_shape_is_the_box_of_non_zero_voxels(tmp_path):
    ct_dataset(tmp_path, ["a"], shape=(10, 12, 8))
    image = np.zeros((10, 12, 8), dtype=np.float32)
    image[2:7, 1:12, 3:5] = 40.0  # 5 x 11 x 2 voxels of body, air (0) around it
    save_nifti(tmp_path / "imagesTr" / "a.nii.gz", image, (0.5, 0.5, 5.0))
    label = np.zeros((10, 12, 8), dtype=np.uint8)
    label[3, 4, 3] = 1
    save_nifti(tmp_path / "labelsTr" / "a.nii.gz", label, (0.5, 0.5, 5.0))
    case = inspect_dataset(tmp_path).cases[0]
    assert (case.shape, case.crop_shape) == ((10, 12, 8), (5, 11, 2))
    assert json.loads(json.dumps(inspect_dataset(tmp_path).to_dict()))["cases"][0][
        "crop_shape"
    ] == [5, 11, 2]


def test_two_workers_report_what_one_does(mixed_dir):
    calls = []
    pooled = inspect_dataset(mixed_dir, progress=lambda *a: calls.append(a), workers=2)
    assert pooled.to_dict() == inspect_dataset(mixed_dir).to_dict()
    assert sorted(c[0] for c in calls) == [1, 2, 3]  # the loadable-by-discovery cases, counted
