"""``ablate predict`` end to end at toy size: geometry, label values, consistency with the
engine's own evaluation, TTA and ensembles, and every refusal."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from orchestrator.cli import main
from tests.trainables.data.nifti_factory import msd_dataset
from tests.trainables.engine.predict_helpers import ROTATED, random_checkpoint, write_image_case
from trainables.data.cache import PreparedDataset, prepare
from trainables.data.evaluate import evaluate_predictions
from trainables.data.labels import get_scheme
from trainables.data.restore import restore_geometry, to_source_labels
from trainables.data.synth import synthesize_dataset
from trainables.engine.checkpoint import load_checkpoint
from trainables.engine.held_out import TestCases, evaluate_cases
from trainables.engine.predict import build_predictor
from trainables.engine.predict_cases import predict_directory
from trainables.engine.tta import flip_axes
from trainables.errors import InputError


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / "ckpt" / "best.pt"
    return path, random_checkpoint(path)


def test_prediction_scores_exactly_as_the_engine_evaluates_it(tmp_path, checkpoint) -> None:
    """predict + ``ablate evaluate`` on the NIfTI == the held-out test evaluation of the same
    model on the cache, for every metric (specificity, an empty region's HD95 penalty and the
    lesion-wise scores included: both score the case in its source grid)."""
    _, ckpt = checkpoint
    data = tmp_path / "data"
    synthesize_dataset(data, 3, 7, (48, 48, 40), tumour_free_fraction=0.4)
    predictor = build_predictor([("ckpt", ckpt)], "cpu")
    cfg, member = predictor.cfg, predictor.members[0]
    prepare(data, tmp_path / "cache", cfg.data.preprocess)
    cache = PreparedDataset(tmp_path / "cache")
    cases = TestCases(cache, cache.case_ids, cache.scheme, cfg.data.modalities)
    for case_id in cache.case_ids:
        case = cache.load(case_id, modalities=cfg.data.modalities, mmap=True)
        assert case.bbox is not None and case.image.shape[1:] != (48, 48, 40)  # crop matters
    held_out = evaluate_cases(member.model, cfg, cases, torch.device("cpu"), _no_autocast)
    engine = {row["case"]: row for row in held_out.per_case}
    report = predict_directory(predictor, data, tmp_path / "out")
    assert len(report.written) == 3 and not report.problems
    evaluated = evaluate_predictions(tmp_path / "out", data, 1.0, lesion_wise=True)
    assert not evaluated.problems
    compared = 0
    assert any(0.0 < row["test/dice_wt"] < 1.0 for row in engine.values())  # non-trivial
    for row in evaluated.cases:
        mine = engine[row["case_id"]]
        for key, value in row.items():
            if key != "case_id":
                assert _same(value, mine[f"test/{key}"]), (row["case_id"], key, value, mine)
                compared += 1
    assert compared >= 3 * 20


def _no_autocast():
    from contextlib import nullcontext

    return nullcontext()


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-6


@pytest.mark.parametrize(
    "layout, values", [("brats2021", {0, 1, 2, 4}), ("brats2023", {0, 1, 2, 3})]
)
def test_outputs_keep_the_input_geometry_and_the_datasets_labels(
    tmp_path, checkpoint, layout, values
) -> None:
    _, ckpt = checkpoint
    for n in range(2):
        write_image_case(tmp_path / "in", f"case{n}", layout=layout, seed=n)
    report = predict_directory(
        build_predictor([("c", ckpt)], "cpu"), tmp_path / "in", tmp_path / "out"
    )
    assert [p.name for p in report.written] == ["case0.nii.gz", "case1.nii.gz"]
    for written in report.written:
        img = nib.load(written)
        source = nib.load(next((tmp_path / "in" / written.name[:-7]).iterdir()))
        assert img.shape == source.shape == (30, 26, 22)
        np.testing.assert_allclose(img.affine, ROTATED, atol=1e-5)
        assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
        assert img.get_data_dtype() == np.uint8
        label = np.asarray(img.dataobj)
        assert set(np.unique(label)) <= values and label.any()
        assert not label[:3].any() and not label[-5:].any()  # background outside the crop
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_msd_test_images_give_3d_maps_in_msd_codes(tmp_path, checkpoint) -> None:
    _, ckpt = checkpoint
    cases = msd_dataset(tmp_path / "Task01", ["BRATS_001"], shape=(20, 18, 16), labels=False)
    (tmp_path / "Task01" / "imagesTr").rename(tmp_path / "Task01" / "imagesTs")
    report = predict_directory(
        build_predictor([("c", ckpt)], "cpu"), tmp_path / "Task01", tmp_path / "o"
    )
    img = nib.load(report.written[0])
    assert report.label_scheme == "msd_brats" and img.shape == (20, 18, 16)
    assert set(np.unique(np.asarray(img.dataobj))) <= {0, 1, 2, 3}
    assert cases[0].case_id == "BRATS_001"


def test_tta_and_an_ensemble_average_probabilities(tmp_path, checkpoint) -> None:
    _, ckpt = checkpoint
    write_image_case(tmp_path / "in", "c0")
    single = build_predictor([("a", ckpt)], "cpu")
    twice = build_predictor([("a", ckpt), ("b", ckpt)], "cpu")
    image = np.random.default_rng(0).normal(size=(4, 20, 24, 18)).astype(np.float32)
    one = single.predict(image)
    np.testing.assert_array_equal(twice.predict(image), one)  # mean of equal probabilities
    mirrored = single.predict(image, tta=True)
    assert mirrored.shape == one.shape and mirrored.dtype == np.uint8
    assert (mirrored != one).any()  # the mirrored predictions count
    assert len(flip_axes(3)) == 8 and flip_axes(3)[0] == () and len(flip_axes(2)) == 4


@pytest.mark.parametrize(  # t1 is the model's first modality: its header gives the grid
    ("missing", "has"), [("flair", "t1, t1ce, t2"), ("t1", "t1ce, t2, flair")]
)
def test_a_case_missing_a_modality_is_named_and_the_others_are_written(
    tmp_path, checkpoint, capsys, missing: str, has: str
) -> None:
    path, _ = checkpoint
    write_image_case(tmp_path / "in", "good")
    write_image_case(tmp_path / "in", "bad", skip=(missing,))
    out = tmp_path / "out"
    assert main(["predict", str(path), str(tmp_path / "in"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        "not predicted: bad:" in err and f"missing modality {missing} (the case has {has})" in err
    )
    assert "predict 2/2 good: written" in err and "s left" in err
    assert sorted(p.name for p in out.iterdir()) == ["good.nii.gz"]


def test_refusals_name_the_problem(tmp_path, checkpoint, capsys) -> None:
    path, _ = checkpoint
    write_image_case(tmp_path / "in", "c0")
    out = tmp_path / "out"
    assert main(["predict", str(path), str(tmp_path / "in"), "--out", str(out)]) == 0
    before = (out / "c0.nii.gz").stat().st_mtime_ns
    assert main(["predict", str(path), str(tmp_path / "in"), "--out", str(out)]) == 2
    assert (
        "the output folder already holds 1 files (c0.nii.gz); pass --overwrite"
        in capsys.readouterr().err
    )
    assert (out / "c0.nii.gz").stat().st_mtime_ns == before
    assert main(["predict", str(path), str(tmp_path / "in"), "--out", str(out), "--overwrite"]) == 0
    ct = random_checkpoint(
        tmp_path / "ct.pt", data__modalities=["ct"], data__synthetic__modality="ct"
    )
    with pytest.raises(InputError, match="the model predicts binary"):
        predict_directory(build_predictor([("ct", ct)], "cpu"), tmp_path / "in", tmp_path / "o2")
    flair = random_checkpoint(tmp_path / "f.pt", data__modalities=["flair"])
    flair["model"] = random_checkpoint(tmp_path / "g.pt")["model"]  # 4-channel weights
    with pytest.raises(InputError, match="the weights do not fit the model its config describes"):
        build_predictor([("f.pt", flair)], "cpu")
    fresh = tmp_path / "o3"
    assert (
        main(["predict", str(tmp_path / "nope.pt"), str(tmp_path / "in"), "--out", str(fresh)]) == 2
    )
    assert "nope.pt: checkpoint not found" in capsys.readouterr().err
    args = ["predict", str(path), str(tmp_path / "in"), "--out", str(fresh)]
    assert main([*args, "--device", "foo"]) == 2
    assert (
        "device: unknown device 'foo': use auto, cpu, cuda or cuda:N (N a GPU index)"
        in capsys.readouterr().err
    )
    if not torch.cuda.is_available():
        assert main([*args, "--device", "cuda:1"]) == 2
        assert "CUDA was requested but no GPU is visible" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() and not fresh.exists()  # a refusal writes nothing


def test_a_model_reading_channels_the_input_lacks_is_refused(tmp_path) -> None:
    flair = random_checkpoint(tmp_path / "flair.pt", data__modalities=["t2", "flair"])
    write_image_case(tmp_path / "in", "c0", skip=("flair",))
    write_image_case(tmp_path / "in", "c1", skip=("flair", "t1"))
    with pytest.raises(InputError) as err:
        predict_directory(build_predictor([("f", flair)], "cpu"), tmp_path / "in", tmp_path / "o")
    expected = "the model reads t2, flair but no input case has flair (the cases have t1, t1ce, t2)"
    assert expected in str(err.value) and not (tmp_path / "o").exists()


def test_geometry_and_label_inverses() -> None:
    label = np.arange(6, dtype=np.uint8).reshape(1, 2, 3) % 4
    full = restore_geometry(label, (3, 4, 5), ((1, 2), (2, 4), (0, 3)))
    assert (
        full.shape == (3, 4, 5)
        and full.sum() == label.sum()
        and full[1, 2:4, 0:3].tolist() == label[0].tolist()
    )
    with pytest.raises(ValueError, match="does not fit the crop"):
        restore_geometry(label, (3, 4, 5), ((0, 2), (0, 2), (0, 3)))
    codes = np.array([0, 1, 2, 3])
    assert to_source_labels(codes, get_scheme("brats2021")).tolist() == [0, 1, 2, 4]
    assert to_source_labels(codes, get_scheme("msd_brats")).tolist() == [0, 2, 1, 3]
    assert to_source_labels(np.array([0, 1]), get_scheme("binary")).tolist() == [0, 1]


@pytest.mark.realdata
@pytest.mark.slow
def test_real_brats_cases_are_predicted_in_their_own_geometry(
    brats_sample_dir: Path, tmp_path: Path
) -> None:
    """A smoke-trained tiny model on the three real cases: shape, affine, BraTS 2021 values."""
    tiny = Path(__file__).resolve().parents[3] / "search_spaces" / "base" / "tiny.yaml"
    ckpt = tmp_path / "ckpt"
    assert (
        main(["train", str(tiny), "--smoke", "--device", "cpu", "--checkpoint-dir", str(ckpt)]) == 0
    )
    out = tmp_path / "out"
    assert main(["predict", str(ckpt / "best.pt"), str(brats_sample_dir), "--out", str(out)]) == 0
    for case_dir in sorted(p for p in brats_sample_dir.iterdir() if p.is_dir()):
        source = nib.load(case_dir / f"{case_dir.name}_flair.nii.gz")
        written = nib.load(out / f"{case_dir.name}.nii.gz")
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
        assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 4}
    # ... and ``ablate evaluate`` of those files gives the numbers the test evaluation of the
    # same model on the same (prepared) cases gives, every metric, lesion-wise included
    predictor = build_predictor([("ckpt", load_checkpoint(ckpt / "best.pt"))], "cpu")
    cfg, member = predictor.cfg, predictor.members[0]
    prepare(brats_sample_dir, tmp_path / "cache", cfg.data.preprocess)
    cache = PreparedDataset(tmp_path / "cache")
    cases = TestCases(cache, cache.case_ids, cache.scheme, cfg.data.modalities)
    held_out = evaluate_cases(member.model, cfg, cases, torch.device("cpu"), _no_autocast)
    engine = {row["case"]: row for row in held_out.per_case}
    evaluated = evaluate_predictions(out, brats_sample_dir, 1.0, lesion_wise=True)
    assert len(evaluated.cases) == 3 and not evaluated.problems
    for row in evaluated.cases:
        for key, value in row.items():
            if key != "case_id":
                mine = engine[row["case_id"]][f"test/{key}"]
                assert _same(value, mine), (row["case_id"], key, value, mine)


def test_inference_benchmark_reports_cases_per_minute(capsys) -> None:
    tiny = Path(__file__).resolve().parents[3] / "search_spaces" / "base" / "tiny.yaml"
    args = ["bench", str(tiny), "--inference", "--device", "cpu", "--shape", "40", "36", "32"]
    assert main([*args, "--tta", "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert result["windows_per_case"] == 2 * 2 * 1 * 8 and result["windows_per_pass"] == 4
    assert result["cases_per_minute"] == pytest.approx(60 / result["seconds_per_case"], rel=0.01)
    assert result["precision"] == "fp32" and result["shape"] == [40, 36, 32]


def test_foreground_normalisation_of_a_prediction_equals_trainings(tmp_path) -> None:
    """A CT trial with nnU-Net's 'foreground' normalisation records the dataset's statistics in
    its checkpoint; ``ablate predict`` normalises a case, whose label it never sees, to exactly
    the array training read from the cache."""
    from tests.trainables.engine.predict_helpers import TINY
    from trainables.config.trial import load_trial_config, parse_trial_config
    from trainables.data.layouts import discover
    from trainables.engine.predict import prepare_input
    from trainables.engine.runner import TrialRunner
    from trainables.engine.smoke import smoke_config

    cfg = smoke_config(load_trial_config(TINY)).model_dump(mode="json")
    cfg["data"] |= {"modalities": ["ct"], "label_scheme": "binary"}
    cfg["data"]["synthetic"]["modality"] = "ct"
    cfg["data"]["preprocess"] = {"normalization": {"kind": "foreground"}}
    runner = TrialRunner(parse_trial_config(cfg))
    stats = runner.data.dataset.manifest.preprocess.normalization.stats
    assert stats is not None and stats[0].modality == "ct" and stats[0].lower < stats[0].upper
    runner.run_epoch()
    runner.save(tmp_path / "ckpt")
    ckpt = load_checkpoint(tmp_path / "ckpt" / "best.pt")
    assert (
        ckpt["config"]["data"]["preprocess"]["normalization"]["stats"][0]["mean"] == stats[0].mean
    )
    predictor = build_predictor([("best.pt", ckpt)], "cpu")
    index = discover(runner.data.source)
    case_id = runner.data.split.val[0]
    record = next(r for r in index.cases if r.case_id == case_id)
    assert record.label is not None  # predict drops it: the image alone decides
    predicted = prepare_input(record, predictor)
    trained = runner.data.dataset.load(case_id, modalities=("ct",), mmap=False)
    assert predicted.bbox == trained.bbox
    np.testing.assert_array_equal(predicted.image, trained.image.astype(np.float32))


def test_a_foreground_model_without_dataset_statistics_is_refused(tmp_path) -> None:
    ct = random_checkpoint(tmp_path / "ct.pt", data__modalities=["ct"],
                           data__synthetic__modality="ct", data__label_scheme="binary",
                           data__preprocess__normalization={"kind": "foreground"})  # fmt: skip
    with pytest.raises(InputError, match=r"ct.pt: data.preprocess.normalization.stats: 'fore"):
        build_predictor([("ct.pt", ct)], "cpu")


def test_binary_foreground_is_written_with_the_datasets_own_code(tmp_path) -> None:
    """A dataset coding haemorrhage 2 ({0: background, 2: bleed}) got its predictions as 1,
    which its own dataset.json does not list."""
    import json

    from tests.trainables.data.nifti_factory import ct_dataset

    ct = random_checkpoint(
        tmp_path / "ct.pt", data__modalities=["ct"], data__synthetic__modality="ct"
    )
    predictor = build_predictor([("ct", ct)], "cpu")
    written = {}
    for code in (1, 2):
        folder = tmp_path / f"in{code}"
        ct_dataset(folder, ["ct_001"])
        meta = json.loads((folder / "dataset.json").read_text())
        labels = {"0": "background", str(code): "bleed"}
        (folder / "dataset.json").write_text(json.dumps({**meta, "labels": labels}))
        predict_directory(predictor, folder, tmp_path / f"out{code}")
        written[code] = np.asarray(nib.load(tmp_path / f"out{code}" / "ct_001.nii.gz").dataobj)
    assert (written[1] > 0).any() and set(np.unique(written[1])) <= {0, 1}
    np.testing.assert_array_equal(written[2], written[1] * 2)
