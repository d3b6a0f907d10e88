"""``ablate data synth | inspect | plan | prepare`` and ``ablate evaluate`` through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from orchestrator.cli import main
from tests.trainables.data.nifti_factory import (
    MSD_MODALITY_JSON,
    brats_case,
    ct_dataset,
    msd_dataset,
    save_nifti,
    truncate,
    write_dataset_json,
)


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """Two good BraTS-2021 cases, one missing its T2, one with a truncated FLAIR."""
    root = tmp_path / "mixed"
    brats_case(root, "good_1", seed=1)
    brats_case(root, "good_2", seed=2)
    brats_case(root, "no_t2", skip=("t2",), seed=3)
    truncate(brats_case(root, "broken", seed=4).files["flair"])
    return root


def test_synth_then_inspect_and_prepare_a_clean_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "synth"
    assert (
        main(["data", "synth", "--out", str(out), "--cases", "3", "--shape", "20", "20", "16"]) == 0
    )
    assert "wrote 3 MRI cases" in capsys.readouterr().out
    assert main(["data", "inspect", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["case_id"] for c in report["cases"]] == ["Synth_0000", "Synth_0001", "Synth_0002"]
    assert main(["data", "prepare", str(out), "--out", str(tmp_path / "cache")]) == 0
    assert "prepared 3 cases" in capsys.readouterr().out


def test_synth_ct_writes_an_msd_ct_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ct"
    args = ["data", "synth", "--modality", "ct", "--out", str(out), "--cases", "2"]
    assert main([*args, "--shape", "20", "20", "16"]) == 0
    assert main(["data", "inspect", str(out)]) == 0
    table = capsys.readouterr().out
    assert "layout msd" in table and "SynthCT_0000" in table and " ct " in table


def test_inspect_lists_good_and_bad_cases_and_exits_2(
    mixed: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["data", "inspect", str(mixed)]) == 2
    out = capsys.readouterr().out
    assert "good_1" in out and "good_2" in out
    assert "no_t2" in out and "missing" in out and "t2" in out
    assert "broken" in out and "broken_flair.nii.gz" in out


def test_prepare_keeps_the_good_cases_of_a_mixed_directory(
    mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    before = sorted(p.stat().st_mtime_ns for p in mixed.rglob("*"))
    assert main(["data", "prepare", str(mixed), "--out", str(tmp_path / "cache")]) == 2
    captured = capsys.readouterr()
    assert "prepared 2 cases" in captured.out
    assert "skipped:" in captured.err and "no_t2" in captured.err and "broken" in captured.err
    assert sorted(p.stat().st_mtime_ns for p in mixed.rglob("*")) == before  # source untouched


def test_evaluate_scores_predictions_and_flags_a_wrong_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    refs = tmp_path / "refs"
    ok, other = brats_case(refs, "c1", seed=1), brats_case(refs, "c2", seed=2)
    preds = tmp_path / "preds"
    preds.mkdir()
    shutil.copy(ok.files["seg"], preds / "c1.nii.gz")
    shutil.copy(
        brats_case(tmp_path / "big", "x", shape=(9, 8, 6)).files["seg"], preds / "c2.nii.gz"
    )
    assert other.label is not None
    assert main(["evaluate", str(preds), str(refs), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["cases"][0]["dice_wt"] == 1.0
    problems = " ".join(str(p) for p in report["problems"])
    assert "c2.nii.gz" in problems and "(9, 8, 6)" in problems and "(8, 8, 6)" in problems


def test_evaluate_takes_the_label_scheme_dataset_json_does_not_name(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An MSD folder whose dataset.json lists no labels is refused with ``auto`` (Task01's and
    BraTS 2023's codes differ); the message's ``--label-scheme`` exists on evaluate too."""
    refs, preds = tmp_path / "refs", tmp_path / "preds"
    (case,) = msd_dataset(refs, ["BRATS_001"])
    write_dataset_json(refs, {"modality": MSD_MODALITY_JSON})
    preds.mkdir()
    shutil.copy(case.files["seg"], preds / "BRATS_001.nii.gz")
    assert main(["evaluate", str(preds), str(refs)]) == 2
    assert "--label-scheme of ablate data prepare, predict and evaluate" in capsys.readouterr().err
    args = ["evaluate", str(preds), str(refs), "--label-scheme", "msd_brats", "--json"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)  # the progress went to stderr
    assert report["label_scheme"] == "msd_brats" and report["cases"][0]["dice_et"] == 1.0
    assert "evaluate 1/1 BRATS_001" in err  # was silent until the table


def test_evaluate_reports_lesion_wise_scores(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    refs, preds = tmp_path / "refs", tmp_path / "preds"
    case = brats_case(refs, "c1", shape=(40, 16, 12))
    label = np.zeros((40, 16, 12), np.uint8)  # BraTS 2021 codes: 2 oedema, 4 enhancing
    for x in (2, 28):  # two lesions far apart: 6x6x6 oedema (WT 216) around a 4x4x4 ET core (64)
        label[x : x + 6, 2:8, 2:8] = 2
        label[x + 1 : x + 5, 3:7, 3:7] = 4
    save_nifti(case.files["seg"], label)
    label[20:] = 0  # the prediction misses the second lesion
    save_nifti(preds / "c1.nii.gz", label)

    assert main(["evaluate", str(preds), str(refs), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)["cases"][0]
    assert scores["dice_wt"] == pytest.approx(2 / 3)  # 2*216 / (216 + 432)
    for region in ("wt", "tc", "et"):  # every region: one lesion found, one missed
        assert scores[f"lesion_dice_{region}"] == 0.5  # (1 + 0) / 2
        assert scores[f"lesion_hd95_{region}"] == 187.0  # (0 + 374) / 2 mm
    assert main(["evaluate", str(preds), str(refs)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].split()[-3:] == ["lesion_dice_wt", "lesion_dice_tc", "lesion_dice_et"]
    assert table[3].split()[-3:] == ["0.500", "0.500", "0.500"]
    assert main(["evaluate", str(preds), str(refs), "--json", "--no-lesion-wise"]) == 0
    assert "lesion_dice_wt" not in json.loads(capsys.readouterr().out)["cases"][0]


def test_a_directory_that_is_no_dataset_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["data", "inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"ablate: error: {tmp_path}" in err and "brats2021" in err


def _thick_ct(root: Path, count: int = 4) -> Path:
    ct_dataset(root, [f"ct_{i}" for i in range(count)], shape=(48, 40, 12))
    return root


def test_plan_prints_settings_a_trial_takes_and_the_planned_trial_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from trainables.config.trial import load_trial_config

    data = _thick_ct(tmp_path / "ct")
    assert main(["data", "plan", str(data)]) == 0
    captured = capsys.readouterr()
    assert "plan: read 4/4 ct_3" in captured.err  # progress per case, on stderr
    settings = yaml.safe_load(captured.out)
    assert settings["model"]["kind"] == "plain_unet"
    assert settings["model"]["kernel_sizes"][0] == [3, 3, 1]  # 5 mm slices: no Z context yet
    base = Path(__file__).resolve().parents[2] / "search_spaces" / "base" / "nnunet_ct.yaml"
    out = tmp_path / "planned.yaml"
    args = ["data", "plan", str(data), "--base", str(base), "--out", str(out)]
    assert main(args) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    cfg = load_trial_config(out)
    assert cfg.model.strides == tuple(tuple(s) for s in settings["model"]["strides"])
    assert main(["train", str(out), "--data", str(data), "--smoke"]) == 0
    slices = tmp_path / "planned_2d.yaml"
    args = ["data", "plan", str(data), "--configuration", "2d", "--base", str(base)]
    assert main([*args, "--out", str(slices)]) == 0
    assert load_trial_config(slices).model.spatial_dims == 2
    assert main(["train", str(slices), "--data", str(data), "--smoke"]) == 0


def test_plan_skips_a_broken_case_names_it_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = _thick_ct(tmp_path / "ct", count=3)
    truncate(data / "imagesTr" / "ct_1.nii.gz")
    assert main(["data", "plan", str(data), "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["num_cases"] == 2
    assert "skipped ct_1: " in captured.err and "ct_1.nii.gz" in captured.err


def test_plan_of_a_3d_lowres_nnunet_would_not_make_exits_2_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = _thick_ct(tmp_path / "ct", count=2)
    assert main(["data", "plan", str(data), "--configuration", "3d_lowres"]) == 2
    assert "nnU-Net makes no 3d_lowres for this dataset" in capsys.readouterr().err


def test_plan_of_unlabelled_images_exits_2_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    msd_dataset(tmp_path / "msd", ["a", "b"], labels=False)
    assert main(["data", "plan", str(tmp_path / "msd")]) == 2
    assert "no usable labelled case to plan from" in capsys.readouterr().err


def test_plan_refuses_a_gpu_memory_that_is_no_positive_number(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "plan", str(tmp_path), "--gpu-memory-gb", "0"])
    assert exit_info.value.code == 2
    assert "--gpu-memory-gb: must be a number > 0, got 0" in capsys.readouterr().err
