"""Dataset discovery: every layout, label-scheme defaults, per-case problems, directory errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.trainables.data.nifti_factory import (
    brats_case,
    ct_dataset,
    msd_dataset,
    save_nifti,
    write_dataset_json,
)
from trainables.data.labels import SCHEMES
from trainables.data.layouts import discover
from trainables.data.nifti import load_label
from trainables.errors import InputError


def test_brats2021_cases_sorted_with_files_and_scheme(tmp_path):
    brats_case(tmp_path, "case_b")
    written = brats_case(tmp_path, "case_a", seg=False)
    (tmp_path / "name_mapping.csv").write_text("BraTS20,BraTS21\n")  # real releases ship CSVs

    index = discover(tmp_path)

    assert index.layout == "brats2021"
    assert index.case_ids == ["case_a", "case_b"]
    assert index.problems == []
    first = index.cases[0]
    assert first.images == {m: written.files[m] for m in ("t1", "t1ce", "t2", "flair")}
    assert first.label is None  # unlabelled cases are allowed
    assert index.cases[1].label == tmp_path / "case_b" / "case_b_seg.nii.gz"
    assert {c.label_scheme for c in index.cases} == {"brats2021"}


def test_uncompressed_nii_files(tmp_path):
    brats_case(tmp_path, "c0", ext=".nii")
    record = discover(tmp_path).cases[0]
    assert record.images["t1"].name == "c0_t1.nii"
    assert record.label is not None and record.label.name == "c0_seg.nii"


def test_brats2023_names_map_to_canonical_modalities(tmp_path):
    brats_case(tmp_path, "BraTS-GLI-00001-000", layout="brats2023")
    index = discover(tmp_path)
    record = index.cases[0]
    assert index.layout == "brats2023"
    assert record.label_scheme == "brats2023"
    names = {m: p.name for m, p in record.images.items()}
    assert names == {
        "t1": "BraTS-GLI-00001-000-t1n.nii.gz",
        "t1ce": "BraTS-GLI-00001-000-t1c.nii.gz",
        "t2": "BraTS-GLI-00001-000-t2w.nii.gz",
        "flair": "BraTS-GLI-00001-000-t2f.nii.gz",
    }


def test_msd_task01_with_dataset_json(tmp_path):
    msd_dataset(tmp_path, ["BRATS_002", "BRATS_001"])
    (tmp_path / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"macOS resource fork")
    index = discover(tmp_path)
    assert index.layout == "msd"
    assert index.case_ids == ["BRATS_001", "BRATS_002"]
    record = index.cases[0]
    assert record.channels == {"flair": 0, "t1": 1, "t1ce": 2, "t2": 3}
    assert set(record.images.values()) == {tmp_path / "imagesTr" / "BRATS_001.nii.gz"}
    assert record.label == tmp_path / "labelsTr" / "BRATS_001.nii.gz"
    assert record.label_scheme == "msd_brats"


@pytest.mark.parametrize("labels", [True, False])
def test_4d_msd_images_without_dataset_json_are_refused(tmp_path, labels):
    """Task01's channel order was assumed: a stack in BraTS order (T1, T1ce, T2, FLAIR) then
    trained and predicted with every modality under another's name, silently."""
    msd_dataset(tmp_path, ["BRATS_001"], dataset_json=False, labels=labels)
    with pytest.raises(InputError) as err:
        discover(tmp_path, partial=not labels)
    assert str(err.value) == (
        f"{tmp_path / 'dataset.json'}: missing: the images are 4-D, so which channel is which "
        'modality must be written there as "modality" (MSD) or "channel_names" (nnU-Net v2), '
        'e.g. {"0": "CT"} or {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}'
    )


def test_labelled_msd_mri_without_label_names_is_refused(tmp_path):
    """Without "labels" Task01's codes were assumed: BraTS 2023's 1 (necrosis) became oedema."""
    msd_dataset(tmp_path, ["BRATS_001"])
    write_dataset_json(tmp_path, {"modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}})
    with pytest.raises(InputError) as err:
        discover(tmp_path)
    assert str(err.value) == (
        f'{tmp_path / "dataset.json"}: no "labels" entry: dataset.json must say what each label '
        'value means, e.g. {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": '
        '"enhancing tumour"} (MSD Task01), or give the scheme: data.label_scheme in the trial '
        "config, --label-scheme of ablate data prepare, predict and evaluate"
    )
    assert discover(tmp_path, label_scheme="brats2023").label_scheme == "brats2023"


def test_msd_channel_order_read_from_dataset_json(tmp_path):
    msd_dataset(tmp_path, ["BRATS_001"])
    order = {"0": "T1w", "1": "t1gd", "2": "T2w", "3": "FLAIR"}
    labels = {"0": "background", "1": "edema", "2": "non-enhancing", "3": "enhancing"}
    write_dataset_json(tmp_path, {"modality": order, "labels": labels})
    record = discover(tmp_path).cases[0]
    assert record.channels == {"t1": 0, "t1ce": 1, "t2": 2, "flair": 3}


def test_ct_folder_is_single_channel_binary(tmp_path):
    ct_dataset(tmp_path, ["ct_002", "ct_001"])
    index = discover(tmp_path)
    record = index.cases[0]
    assert index.case_ids == ["ct_001", "ct_002"]
    assert record.modalities == ("ct",)
    assert record.channels == {}  # a plain 3-D file
    assert record.label_scheme == "binary"


def test_3d_images_without_dataset_json_are_ct_only_when_unlabelled(tmp_path):
    """New scans for ``ablate predict`` may come without it; a labelled folder may not: an MRI
    volume read as CT would train on CT's normalisation and binary labels, silently."""
    ct_dataset(tmp_path, ["ct_001"], dataset_json=False)
    with pytest.raises(InputError) as err:
        discover(tmp_path)
    assert str(err.value).startswith(
        f"{tmp_path / 'dataset.json'}: missing: training normalises CT and MRI differently, so "
        'what the images are must be written there as "modality" (MSD)'
    )
    assert discover(tmp_path, partial=True).cases[0].modalities == ("ct",)  # predict: images
    (tmp_path / "imagesTr").rename(tmp_path / "imagesTs")
    shutil.rmtree(tmp_path / "labelsTr")
    index = discover(tmp_path, partial=True)
    assert index.cases[0].modalities == ("ct",) and index.label_scheme == "binary"


def test_nnunet_channel_suffix_is_dropped(tmp_path):
    cases = ct_dataset(tmp_path, ["hem_001"])
    image = cases[0].files["image"]
    image.rename(image.with_name("hem_001_0000.nii.gz"))
    record = discover(tmp_path).cases[0]
    assert record.case_id == "hem_001"
    assert record.label == tmp_path / "labelsTr" / "hem_001.nii.gz"


def test_a_case_id_ending_in_0000_keeps_it_when_its_label_does(tmp_path):
    """One MSD case named ``x_0000`` (``ablate data synth --modality ct --cases 1``): image and
    label share the name, so ``_0000`` is part of the id, not nnU-Net's channel suffix."""
    ct_dataset(tmp_path, ["SynthCT_0000"])
    index = discover(tmp_path)
    assert index.case_ids == ["SynthCT_0000"] and index.problems == []
    assert index.cases[0].label == tmp_path / "labelsTr" / "SynthCT_0000.nii.gz"


def test_label_scheme_override_and_bad_name(tmp_path):
    brats_case(tmp_path, "c0")
    assert discover(tmp_path, "brats2023").cases[0].label_scheme == "brats2023"
    with pytest.raises(InputError) as err:
        discover(tmp_path, "brats2022")
    assert "data.label_scheme: 'brats2022' is not one of" in str(err.value)


def test_per_case_problems_keep_the_good_cases(tmp_path):
    brats_case(tmp_path, "good")
    brats_case(tmp_path, "no_t1ce", skip=("t1ce",))
    brats_case(tmp_path, "dup")
    save_nifti(tmp_path / "dup" / "dup_t1.nii", np.zeros((8, 8, 6), np.int16))
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "notes.txt").write_text("x")

    index = discover(tmp_path)

    assert index.case_ids == ["good"]
    problems = {p.case_id: p for p in index.problems}
    assert sorted(problems) == ["dup", "no_t1ce", "stray"]
    assert problems["no_t1ce"].message == "missing modality file(s): no_t1ce_t1ce.nii.gz"
    assert problems["no_t1ce"].path == str(tmp_path / "no_t1ce")
    assert problems["dup"].message == (
        "duplicate files (t1: dup_t1.nii, dup_t1.nii.gz); keep one of each"
    )
    assert "no files named like stray_{t1,t1ce,t2,flair,seg}.nii.gz" in str(problems["stray"])


def deny(monkeypatch, folder) -> None:
    """Listing ``folder`` fails as a folder without read permission does (tests run as root,
    for whom chmod 000 denies nothing)."""
    listing = Path.iterdir

    def iterdir(self):
        if self == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)


def test_an_unreadable_case_folder_is_named_and_the_others_kept(tmp_path, monkeypatch):
    brats_case(tmp_path, "good")
    brats_case(tmp_path, "locked")
    deny(monkeypatch, tmp_path / "locked")
    index = discover(tmp_path)
    assert index.case_ids == ["good"]
    assert [(p.case_id, p.message) for p in index.problems] == [
        ("locked", "cannot read the folder: Permission denied")
    ]
    deny(monkeypatch, tmp_path)
    with pytest.raises(InputError, match="cannot read the dataset directory: Permission denied"):
        discover(tmp_path)


def test_msd_label_without_image_and_duplicate_image(tmp_path):
    msd_dataset(tmp_path, ["BRATS_001", "BRATS_002"])
    (tmp_path / "labelsTr" / "BRATS_009.nii.gz").write_bytes(b"")
    src = tmp_path / "imagesTr" / "BRATS_002.nii.gz"
    save_nifti(src.with_name("BRATS_002.nii"), np.zeros((8, 8, 6, 4), np.int16))
    index = discover(tmp_path)
    assert index.case_ids == ["BRATS_001"]
    messages = {p.case_id: p.message for p in index.problems}
    assert messages["BRATS_009"] == "label has no image in imagesTr/"
    assert messages["BRATS_002"].startswith("duplicate files (image: BRATS_002.nii, BRATS_002")


def test_msd_test_images_are_read_for_prediction_only(tmp_path):
    msd_dataset(tmp_path, ["BRATS_001", "BRATS_002"])
    (tmp_path / "imagesTs").mkdir()
    for case_id in ("BRATS_485", "BRATS_001"):  # BRATS_001 is in both: a duplicate
        src = tmp_path / "imagesTr" / "BRATS_002.nii.gz"
        (tmp_path / "imagesTs" / f"{case_id}.nii.gz").write_bytes(src.read_bytes())
    assert discover(tmp_path).case_ids == ["BRATS_001", "BRATS_002"]  # training: imagesTr/
    index = discover(tmp_path, partial=True)
    assert index.case_ids == ["BRATS_002", "BRATS_485"]
    assert index.cases[1].images["flair"] == tmp_path / "imagesTs" / "BRATS_485.nii.gz"
    (problem,) = index.problems
    assert problem.case_id == "BRATS_001" and problem.message.startswith("duplicate files")


def test_bad_dataset_json(tmp_path):
    msd_dataset(tmp_path, ["BRATS_001"])
    write_dataset_json(tmp_path, {"modality": {"0": "PET"}})
    with pytest.raises(InputError) as err:
        discover(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'dataset.json'}: modality 'PET' is not one of")
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(InputError, match=r"cannot read dataset\.json"):
        discover(tmp_path)


def test_missing_and_non_directory_root(tmp_path):
    with pytest.raises(InputError) as err:
        discover(tmp_path / "nope")
    assert str(err.value) == (
        f"{tmp_path / 'nope'}: dataset directory does not exist; layouts understood:\n"
        "  brats2021: BraTS 2018-2021: <case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz\n"
        "  brats2023: BraTS 2023+: <case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz\n"
        "  msd: Medical Segmentation Decathlon: imagesTr/<case>.nii.gz, labelsTr/, dataset.json"
    )
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match="is not a directory"):
        discover(tmp_path / "file.txt")


def test_empty_and_unknown_layouts_list_what_is_understood(tmp_path):
    with pytest.raises(InputError) as err:
        discover(tmp_path)
    assert str(err.value).startswith(f"{tmp_path}: dataset directory is empty; layouts understood:")
    (tmp_path / "patient1").mkdir()
    save_nifti(tmp_path / "patient1" / "scan.nii.gz", np.zeros((4, 4, 4), np.float32))
    with pytest.raises(InputError) as err:
        discover(tmp_path)
    text = str(err.value)
    assert text.startswith(f"{tmp_path}: no known dataset layout found; layouts understood:")
    for name in ("brats2021: BraTS 2018-2021", "brats2023: BraTS 2023+", "msd: Medical"):
        assert name in text


def test_single_case_folder_gets_a_hint(tmp_path):
    brats_case(tmp_path, "c0")
    with pytest.raises(InputError, match="looks like a single case folder"):
        discover(tmp_path / "c0")


@pytest.mark.realdata
def test_real_brats_sample_is_found(brats_sample_dir):
    index = discover(brats_sample_dir)
    assert index.layout == "brats2021"
    assert len(index.cases) == 3
    assert index.problems == []
    scheme = SCHEMES["brats2021"]
    for record in index.cases:
        assert record.modalities == ("t1", "t1ce", "t2", "flair")
        for path in record.images.values():
            assert nib.load(path).shape == (240, 240, 155)  # header only
        assert record.label is not None
        source = np.asanyarray(nib.load(record.label).dataobj)
        assert set(np.unique(source).tolist()) == {0, 1, 2, 4}
        label, spacing, _ = load_label(record.label, scheme, record.case_id)
        assert set(np.unique(label).tolist()) == {0, 1, 2, 3}
        assert spacing == (1.0, 1.0, 1.0)


def test_broken_links_are_case_problems_naming_the_target(tmp_path):
    """A case folder or file linked to storage that is gone (or to itself) is reported with
    its target; the other cases load. A broken label link does not leave an unlabelled case."""
    root = tmp_path / "brats"
    for case_id in ("c1", "c2"):
        brats_case(root, case_id)
    (root / "c3").symlink_to("/nonexistent/c3")
    (root / "c4").symlink_to(root / "c4")  # a loop
    t1 = root / "c2" / "c2_t1.nii.gz"
    t1.unlink()
    t1.symlink_to("/nonexistent/c2_t1.nii.gz")
    index = discover(root)
    assert index.case_ids == ["c1"]
    assert [str(p) for p in index.problems] == [
        f"{root / 'c2'}: c2_t1.nii.gz is a symbolic link to /nonexistent/c2_t1.nii.gz, which "
        "cannot be read (No such file or directory)",
        f"{root / 'c3'}: c3 is a symbolic link to /nonexistent/c3, which cannot be read (No "
        "such file or directory)",
        f"{root / 'c4'}: c4 is a symbolic link to {root / 'c4'}, which cannot be read (Too many "
        "levels of symbolic links)",
    ]
    msd = tmp_path / "msd"
    msd_dataset(msd, ["B1", "B2", "B3"])
    (msd / "imagesTr" / "B4.nii.gz").symlink_to("/nonexistent/B4.nii.gz")
    label = msd / "labelsTr" / "B2.nii.gz"
    label.unlink()
    label.symlink_to("/nonexistent/B2.nii.gz")
    index = discover(msd)
    assert index.case_ids == ["B1", "B3"]
    assert [(p.case_id, p.message.split(" is a ")[0]) for p in index.problems] == [
        ("B2", "B2.nii.gz"),
        ("B4", "B4.nii.gz"),
    ]


def test_a_file_of_another_case_in_a_case_folder_is_refused(tmp_path):
    """A label copied in from another case trained as this case's label without a word."""
    for case_id in ("c0", "c1", "c2"):
        brats_case(tmp_path, case_id)
    (tmp_path / "c0" / "c0_seg.nii.gz").unlink()
    (tmp_path / "c1" / "c1_seg.nii.gz").rename(tmp_path / "c0" / "c1_seg.nii.gz")
    index = discover(tmp_path)
    assert index.case_ids == ["c1", "c2"]  # c1 is unlabelled now, not refused
    assert [str(p) for p in index.problems] == [
        f"{tmp_path / 'c0'}: c1_seg.nii.gz: named for another case than c0 (two cases in one "
        "folder)"
    ]
    for path in (tmp_path / "c2").iterdir():  # a folder renamed, its files not: still one case
        path.rename(path.with_name(path.name.replace("c2_", "old_")))
    assert discover(tmp_path).case_ids == ["c1", "c2"]
