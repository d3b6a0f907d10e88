"""MSD-style folders stored nnU-Net v2's way: one 3-D file per channel (``<case>_0000`` ...),
dataset.json's channel names saying which modality each is, labels in its region form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.trainables.data.nifti_factory import (
    LABEL_CODES,
    SHAPE,
    image_volume,
    save_nifti,
    tumour_label,
    write_dataset_json,
)
from trainables.data.layouts import discover
from trainables.data.nifti import load_case
from trainables.errors import InputError

# nnU-Net's Dataset137_BraTS2021: T1, T1ce, T2, FLAIR (not Task01's order), regions as labels
CHANNEL_NAMES = {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
REGION_LABELS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                 "enhancing tumor": [3]}  # fmt: skip
ORDER = ("t1", "t1ce", "t2", "flair")


def nnunet_dataset(root: Path, case_ids: list[str], meta: bool = True) -> dict[str, np.ndarray]:
    """imagesTr/<case>_000{0..3}.nii.gz + labelsTr/<case>.nii.gz; the volumes by file stem."""
    if meta:
        write_dataset_json(root, {"channel_names": CHANNEL_NAMES, "labels": REGION_LABELS})
    volumes = {}
    for n, case_id in enumerate(case_ids):
        for channel in range(4):
            volume = image_volume(SHAPE, seed=10 * n + channel)
            save_nifti(root / "imagesTr" / f"{case_id}_{channel:04d}.nii.gz", volume)
            volumes[f"{case_id}_{channel:04d}"] = volume
        label = tumour_label(SHAPE, LABEL_CODES["msd"])  # nnU-Net's 1 ED, 2 NCR, 3 ET
        save_nifti(root / "labelsTr" / f"{case_id}.nii.gz", label)
    return volumes


def test_one_file_per_channel_loads_each_modality_from_its_file(tmp_path: Path) -> None:
    volumes = nnunet_dataset(tmp_path, ["BraTS2021_00000", "BraTS2021_00002"])
    index = discover(tmp_path)
    assert (index.layout, index.case_ids, index.problems) == (
        "msd",
        ["BraTS2021_00000", "BraTS2021_00002"],
        [],
    )
    record = index.cases[0]
    assert record.label_scheme == "msd_brats"  # ED = whole tumour - core = 1
    assert record.images["flair"] == tmp_path / "imagesTr" / "BraTS2021_00000_0003.nii.gz"
    case = load_case(record, list(ORDER))
    for i, _ in enumerate(ORDER):
        np.testing.assert_array_equal(case.image[i], volumes[f"BraTS2021_00000_{i:04d}"])
    assert set(np.unique(case.label)) == {0, 1, 2, 3}


def test_missing_extra_and_broken_channel_files_are_case_problems(tmp_path: Path) -> None:
    nnunet_dataset(tmp_path, ["a", "b", "c", "d"])
    images = tmp_path / "imagesTr"
    (images / "a_0002.nii.gz").unlink()
    save_nifti(images / "b_0004.nii.gz", image_volume(SHAPE))
    (images / "c_0001.nii.gz").unlink()
    (images / "c_0001.nii.gz").symlink_to("/nonexistent/c_0001.nii.gz")
    index = discover(tmp_path)
    assert index.case_ids == ["d"]
    assert [(p.case_id, p.message) for p in index.problems] == [
        ("a", "missing channel file(s): a_0002.nii.gz"),
        ("b", "b_0004.nii.gz: beyond dataset.json's 4 channels"),
        ("c", "c_0001.nii.gz is a symbolic link to /nonexistent/c_0001.nii.gz, which cannot "
              "be read (No such file or directory)"),
    ]  # fmt: skip


def test_one_file_per_channel_needs_the_channel_names(tmp_path: Path) -> None:
    nnunet_dataset(tmp_path, ["a"], meta=False)
    with pytest.raises(InputError) as err:
        discover(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'dataset.json'}: imagesTr/ holds one file per channel (<case>_0000, "
        '<case>_0001, ...): dataset.json needs "channel_names" (nnU-Net v2) or "modality" '
        '(MSD) to say which modality each channel is, e.g. {"0": "T1", "1": "T1ce", "2": "T2", '
        '"3": "FLAIR"}'
    )


def test_case_ids_ending_in_four_digits_are_cases_not_channels(tmp_path: Path) -> None:
    """``SynthCT_0000``, ``SynthCT_0001``: cases when a label has the stem, or dataset.json
    lists one channel (unlabelled imagesTs/, as ablate predict reads it)."""
    write_dataset_json(tmp_path, {"modality": {"0": "CT"}, "labels": {"0": "bg", "1": "blood"}})
    for n in range(3):
        save_nifti(tmp_path / "imagesTs" / f"SynthCT_{n:04d}.nii.gz", image_volume(SHAPE, n))
    assert discover(tmp_path, partial=True).case_ids == [f"SynthCT_{n:04d}" for n in range(3)]
