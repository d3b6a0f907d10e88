"""``evaluate_predictions``: hand-made predictions against references in every layout."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.trainables.data.nifti_factory import (
    brats_case,
    ct_dataset,
    fingerprint,
    msd_dataset,
    save_nifti,
)
from trainables.data.evaluate import evaluate_predictions
from trainables.errors import InputError


def perfect_predictions(written_cases, pred_dir) -> None:
    """Copy each case's reference label to ``pred_dir/<case_id>.nii.gz``."""
    pred_dir.mkdir(exist_ok=True)
    for case in written_cases:
        shutil.copy(case.files["seg"], pred_dir / f"{case.case_id}.nii.gz")


@pytest.mark.parametrize("layout", ["brats2021", "brats2023"])
def test_perfect_brats_predictions(tmp_path, layout):
    ref = tmp_path / "ref"
    cases = [brats_case(ref, f"c{i}", layout=layout, seed=i) for i in range(2)]
    perfect_predictions(cases, tmp_path / "pred")
    report = evaluate_predictions(tmp_path / "pred", ref)
    assert report.label_scheme == layout
    assert report.problems == []
    assert [c["case_id"] for c in report.cases] == ["c0", "c1"]
    for case in report.cases:
        for region in ("wt", "tc", "et"):
            assert case[f"dice_{region}"] == 1.0
            assert case[f"hd95_{region}"] == 0.0
            assert case[f"nsd_{region}"] == 1.0
    assert report.mean["dice_mean"] == 1.0
    # 8x8x6 factory tumour: WT 144 voxels is one lesion, scored perfect; TC (32) and ET (8) are
    # at most 50 mm³, ignored, and nothing is left to score: lesion Dice 1, HD95 0 all the same.
    for region in ("wt", "tc", "et"):
        assert report.mean[f"lesion_dice_{region}"] == 1.0
        assert report.mean[f"lesion_hd95_{region}"] == 0.0


def test_lesion_metrics_can_be_skipped(tmp_path):
    perfect_predictions([brats_case(tmp_path / "ref", "c0")], tmp_path / "pred")
    report = evaluate_predictions(tmp_path / "pred", tmp_path / "ref", lesion_wise=False)
    assert not report.lesion_wise and report.to_dict()["lesion_wise"] is False
    assert not [key for key in report.cases[0] if key.startswith("lesion_")]
    assert "lesion_dice" not in report.format_table()


def test_perfect_msd_and_ct_predictions(tmp_path):
    msd = msd_dataset(tmp_path / "msd", ["BRATS_001"])
    perfect_predictions(msd, tmp_path / "pred_msd")
    report = evaluate_predictions(tmp_path / "pred_msd", tmp_path / "msd")
    assert report.label_scheme == "msd_brats" and report.regions == ("wt", "tc", "et")
    assert report.cases[0]["dice_et"] == 1.0
    ct = ct_dataset(tmp_path / "ct", ["ct_001"])
    perfect_predictions(ct, tmp_path / "pred_ct")
    report = evaluate_predictions(tmp_path / "pred_ct", tmp_path / "ct")
    assert report.label_scheme == "binary" and report.regions == ("fg",)
    assert report.cases[0]["dice_fg"] == 1.0 and "dice_wt" not in report.cases[0]


def test_imperfect_prediction_scores_by_hand(tmp_path):
    ref = tmp_path / "ref"
    case = brats_case(ref, "c0")
    assert case.label is not None
    pred = case.label.copy()
    pred[pred == 4] = 0  # miss the enhancing tumour (8 voxels)
    save_nifti(tmp_path / "pred" / "c0.nii.gz", pred)
    scores = evaluate_predictions(tmp_path / "pred", ref).cases[0]
    # reference: WT 6*6*4 = 144 voxels, TC 4*4*2 = 32 (ET 2*2*2 = 8 inside); prediction lacks ET
    assert scores["dice_wt"] == pytest.approx(2 * 136 / (136 + 144))
    assert scores["dice_tc"] == pytest.approx(2 * 24 / (24 + 32))
    assert scores["dice_et"] == 0.0
    assert scores["sensitivity_wt"] == pytest.approx(136 / 144)


def test_problems_are_listed_and_good_cases_still_scored(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    cases = [brats_case(ref, f"c{i}", seed=i) for i in range(4)]
    perfect_predictions(cases[:1], pred)  # c0 good; c1 wrong shape; c2 bad labels; c3 missing
    save_nifti(pred / "c1.nii.gz", np.zeros((8, 8, 5), np.uint8))
    bad = np.array(cases[2].label)
    bad[0, 0, 0] = 3
    save_nifti(pred / "c2.nii.gz", bad)
    save_nifti(pred / "extra.nii.gz", np.zeros((8, 8, 6), np.uint8))
    brats_case(ref, "unlabelled", seg=False)
    save_nifti(pred / "unlabelled.nii.gz", np.zeros((8, 8, 6, 2), np.uint8))

    report = evaluate_predictions(pred, ref)

    assert [c["case_id"] for c in report.cases] == ["c0"]
    problems = {p.case_id: p for p in report.problems}
    assert sorted(problems) == ["c1", "c2", "c3", "extra", "unlabelled"]
    assert (problems["unlabelled"].path, problems["unlabelled"].message) == (
        str(ref / "unlabelled"),
        "reference case has no label file",
    )
    assert problems["c1"].path == str(pred / "c1.nii.gz")
    assert problems["c1"].message == (
        "prediction shape (8, 8, 5) does not match the reference shape (8, 8, 6) "
        f"of {ref / 'c1' / 'c1_seg.nii.gz'}"
    )
    assert problems["c2"].path == str(pred / "c2.nii.gz")
    assert problems["c2"].message == (
        "labels [3] are outside the brats2021 scheme (allowed: [0, 1, 2, 4])"
    )
    assert (problems["c3"].path, problems["c3"].message) == (
        str(pred / "c3.nii.gz"),
        "missing prediction for this reference case",
    )
    assert problems["extra"].message == f"prediction has no reference case in {ref}"
    assert report.mean["dice_wt"] == 1.0  # over the one scored case


def test_a_prediction_on_another_voxel_grid_is_a_problem(tmp_path):
    """Same shape, other grid (shifted 40 mm, voxels twice as large): scoring voxel by voxel
    would compare different places, so the case is named instead; a float-rounding gap is
    not a different grid."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    cases = [brats_case(ref, f"c{i}", seed=i) for i in range(3)]
    shifted, coarse, rounded = np.eye(4), np.diag([2.0, 2.0, 2.0, 1.0]), np.eye(4)
    shifted[0, 3], rounded[0, 3] = 40.0, 1e-5
    for case, affine in zip(cases, (shifted, coarse, rounded), strict=True):
        spacing = tuple(np.diag(affine)[:3])  # pixdim as the affine says
        save_nifti(pred / f"{case.case_id}.nii.gz", np.asarray(case.label), spacing, affine)
    report = evaluate_predictions(pred, ref)
    assert [c["case_id"] for c in report.cases] == ["c2"]
    problems = {p.case_id: p.message for p in report.problems}
    assert problems == {
        f"c{i}": f"affines of prediction and reference differ by up to {gap} (tolerance 0.001): "
        "the files are not on one voxel grid"
        for i, gap in ((0, 40), (1, 1))
    }


def test_a_reference_value_dataset_json_does_not_list_is_a_problem(tmp_path):
    """A stray 255 in a binary reference counted as foreground; its dataset.json lists 0 and
    1. Predictions are held to the scheme only: ablate predict writes binary foreground as 1
    even where the dataset codes it 2 (holding them to dataset.json refused every case)."""
    cases = ct_dataset(tmp_path / "ct", ["ct_001", "ct_002"])
    perfect_predictions(cases, tmp_path / "pred")
    stray = np.array(cases[0].label)
    stray[0, 0, 0] = 255
    save_nifti(cases[0].files["seg"], stray, (0.5, 0.5, 5.0))
    report = evaluate_predictions(tmp_path / "pred", tmp_path / "ct")
    assert [c["case_id"] for c in report.cases] == ["ct_002"]
    assert [p.message for p in report.problems] == [
        "label has values 255 that dataset.json does not list (it lists 0, 1)"
    ]
    coded = tmp_path / "coded"  # foreground coded 2, predictions coded 1
    for case in ct_dataset(coded, ["ct_001"]):
        save_nifti(case.files["seg"], np.array(case.label) * 2, (0.5, 0.5, 5.0))
    meta = json.loads((coded / "dataset.json").read_text())
    (coded / "dataset.json").write_text(json.dumps({**meta, "labels": {"0": "bg", "2": "bleed"}}))
    report = evaluate_predictions(tmp_path / "pred", coded)
    assert [c["case_id"] for c in report.cases] == ["ct_001"]  # ct_002: no reference there
    assert report.cases[0]["dice_fg"] == 1.0


def test_to_dict_and_table(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    cases = [brats_case(ref, f"c{i}", seed=i) for i in range(2)]
    perfect_predictions(cases[:1], pred)
    empty_et = np.array(cases[0].label)
    save_nifti(ref / "c0" / "c0_seg.nii.gz", np.where(empty_et == 4, 1, empty_et).astype(np.uint8))
    report = evaluate_predictions(pred, ref)  # ET predicted where the reference has none

    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["num_cases"] == 1 and data["cases"][0]["rvd_et"] is None  # NaN -> null
    assert data["problems"] == [
        {
            "case_id": "c1",
            "file": str(pred / "c1.nii.gz"),
            "problem": "missing prediction for this reference case",
        }
    ]
    text = report.format_table()
    lines = text.splitlines()
    assert lines[0].endswith("(labels brats2021, NSD tolerance 1 mm): 1 cases scored, 1 problems")
    assert lines[2].split()[:4] == ["case", "dice_wt", "dice_tc", "dice_et"]
    assert lines[3].split()[:4] == ["c0", "1.000", "1.000", "0.000"]
    # Lesion-wise Dice closes the row; ET: an 8-voxel false positive, no reference -> 0.
    assert lines[2].split()[-3:] == ["lesion_dice_wt", "lesion_dice_tc", "lesion_dice_et"]
    assert lines[3].split()[-3:] == ["1.000", "1.000", "0.000"]
    assert data["cases"][0]["lesion_hd95_et"] == 374.0
    assert "lesion_hd95 (mm)" in text
    assert "mean over 1 cases" in text and "rvd" in text and "nan" in text
    assert text.endswith(
        f"problems:\n  c1: {pred / 'c1.nii.gz'}: missing prediction for this reference case"
    )


def test_a_mean_over_fewer_cases_says_how_many(tmp_path):
    """An RVD undefined for one case (empty reference ET) was left out of a mean headed 'mean
    over 2 cases' without a word."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    cases = [brats_case(ref, f"c{i}", seed=i) for i in range(2)]
    perfect_predictions(cases, pred)
    empty_et = np.array(cases[0].label)
    save_nifti(ref / "c0" / "c0_seg.nii.gz", np.where(empty_et == 4, 1, empty_et).astype(np.uint8))
    report = evaluate_predictions(pred, ref, lesion_wise=False)
    assert report.to_dict()["mean_cases"] == {"rvd_et": 1}
    (row,) = [line for line in report.format_table().splitlines() if line.startswith("rvd ")]
    assert row.split()[-3:] == ["0.000", "(1", "case)"]


def test_a_prediction_named_with_a_suffix_says_the_name_to_use(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    case = brats_case(ref, "c0")
    save_nifti(pred / "c0_0000.nii.gz", np.asarray(case.label))
    report = evaluate_predictions(pred, ref)
    messages = {p.case_id: p.message for p in report.problems}
    assert messages["c0_0000"] == (
        f"prediction has no reference case in {ref}; for case c0 name it c0.nii.gz (without "
        "'_0000')"
    )
    assert messages["c0"] == "missing prediction for this reference case"


def test_directory_errors(tmp_path):
    brats_case(tmp_path / "ref", "c0")
    with pytest.raises(InputError) as err:
        evaluate_predictions(tmp_path / "nope", tmp_path / "ref")
    assert str(err.value) == f"{tmp_path / 'nope'}: prediction directory does not exist"
    (tmp_path / "pred").mkdir()
    with pytest.raises(InputError, match=r"no <case_id>\.nii\.gz predictions"):
        evaluate_predictions(tmp_path / "pred", tmp_path / "ref")
    save_nifti(tmp_path / "pred" / "c0.nii.gz", np.zeros((8, 8, 6), np.uint8))
    with pytest.raises(InputError, match="dataset directory does not exist"):
        evaluate_predictions(tmp_path / "pred", tmp_path / "missing_ref")


def test_evaluation_never_writes(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    perfect_predictions([brats_case(ref, "c0")], pred)
    before = fingerprint(tmp_path)
    evaluate_predictions(pred, ref)
    assert fingerprint(tmp_path) == before


@pytest.mark.realdata
def test_real_reference_against_itself(brats_sample_dir, tmp_path):
    # One real case (int16 seg) through symlinks: nothing is copied, and the test stays fast.
    case_id = "Brats18_2013_3_1"
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / case_id).symlink_to(brats_sample_dir / case_id)
    (tmp_path / "pred").mkdir()
    seg = brats_sample_dir / case_id / f"{case_id}_seg.nii.gz"
    (tmp_path / "pred" / f"{case_id}.nii.gz").symlink_to(seg)
    report = evaluate_predictions(tmp_path / "pred", tmp_path / "ref")
    assert report.problems == []
    assert [report.cases[0][f"dice_{r}"] for r in ("wt", "tc", "et")] == [1.0, 1.0, 1.0]


def test_a_brats_reference_case_lacking_an_image_modality_is_still_scored(tmp_path):
    """Evaluation reads the reference's labels only: a case without its T2 was refused as
    "missing modality file(s)" (audit)."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    cases = [brats_case(ref, "full", seed=1), brats_case(ref, "no_t2", skip=("t2",), seed=2)]
    perfect_predictions(cases, pred)
    report = evaluate_predictions(pred, ref)
    assert not report.problems
    assert [c["case_id"] for c in report.cases] == ["full", "no_t2"]
    assert report.mean["dice_wt"] == 1.0
