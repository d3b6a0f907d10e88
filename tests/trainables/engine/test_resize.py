"""Outputs on a resampled grid go back to the source grid before decoding: the same geometry as
the forward resampling, and the test pass scores what ``ablate predict`` writes."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from tests.trainables.engine.predict_helpers import random_checkpoint
from trainables.data.cache import PreparedDataset, prepare
from trainables.data.evaluate import evaluate_predictions
from trainables.data.resample import resample_image, resample_label
from trainables.data.synth import synthesize_dataset
from trainables.engine.held_out import TestCases, evaluate_cases
from trainables.engine.predict import build_predictor
from trainables.engine.predict_cases import predict_directory
from trainables.engine.resize import resize_scores, to_source_grid


def test_trilinear_scores_agree_with_the_forward_resampling_at_order_1() -> None:
    scores = np.random.default_rng(0).normal(size=(2, 7, 9, 5)).astype(np.float32)
    got = resize_scores(torch.from_numpy(scores), (12, 4, 10), axis=None).numpy()
    for k in range(2):
        zoom = ndimage.zoom(
            scores[k], [12 / 7, 4 / 9, 10 / 5], order=1, mode="nearest", grid_mode=True
        )
        np.testing.assert_allclose(got[k], zoom, atol=1e-5)
    apart = resize_scores(torch.from_numpy(scores), (12, 4, 10), axis=2).numpy()
    np.testing.assert_allclose(apart, resample_image(scores, (12, 4, 10), 2, order=1), atol=1e-5)
    same = torch.from_numpy(scores)
    assert resize_scores(same, (7, 9, 5), axis=None) is same


@pytest.mark.parametrize("source, target", [((1.0, 1.0, 4.0), (1.5, 1.5, 2.0)), ((0.8,) * 3,) * 2])
def test_a_label_sent_to_the_target_grid_and_back_lands_where_it_was(source, target) -> None:
    """Forward (one-hot linear, as the cache) and back (linear logits, as the test pass): the
    round trip loses boundary voxels to the coarser grid, evenly on both sides, so each region
    keeps its centre; a half-voxel slip either way would move it by half a voxel."""
    label = np.zeros((40, 36, 12), np.uint8)
    label[6:34, 4:32, 2:10] = 1
    label[12:28, 10:26, 4:8] = 2
    shape = tuple(round(n * s / t) for n, s, t in zip(label.shape, source, target, strict=True))
    on_target = resample_label(label, shape, axis=2 if source[2] > 3 * source[0] else None)
    one_hot = torch.from_numpy(np.eye(3, dtype=np.float32)[on_target]).movedim(-1, 0)
    back = to_source_grid(label.shape, target, source)
    if source == target:
        assert back is None
        return
    restored = back(one_hot).argmax(0).numpy()
    assert restored.shape == label.shape
    for code in (1, 2):
        overlap = np.sum((restored >= code) & (label >= code))
        assert 2 * overlap / (np.sum(restored >= code) + np.sum(label >= code)) > 0.9
        centre = np.argwhere(label >= code).mean(axis=0)
        np.testing.assert_allclose(np.argwhere(restored >= code).mean(axis=0), centre, atol=0.1)


def test_the_test_pass_of_a_resampled_case_scores_what_predict_writes(tmp_path: Path) -> None:
    resample = {"kind": "target_spacing", "spacing": [1.5, 1.5, 2.0]}
    ckpt = random_checkpoint(tmp_path / "ckpt" / "best.pt", data__preprocess__resample=resample)
    data = tmp_path / "data"
    synthesize_dataset(data, 2, 7, (40, 40, 16), spacing=(1.0, 1.0, 4.0))
    predictor = build_predictor([("ckpt", ckpt)], "cpu")
    cfg, model = predictor.cfg, predictor.members[0].model
    prepare(data, tmp_path / "cache", cfg.data.preprocess)
    cache = PreparedDataset(tmp_path / "cache")
    entry = cache.entry(cache.case_ids[0])
    assert entry.source_spacing == (1.0, 1.0, 4.0) and entry.shape[2] == 2 * entry.crop_shape[2]
    cases = TestCases(cache, cache.case_ids, cache.scheme, cfg.data.modalities)
    rows = evaluate_cases(model, cfg, cases, torch.device("cpu"), nullcontext).per_case
    report = predict_directory(predictor, data, tmp_path / "out")
    written = nib.load(report.written[0])
    assert written.shape == (40, 40, 16) and written.header.get_zooms() == (1.0, 1.0, 4.0)
    evaluated = {r["case_id"]: r for r in evaluate_predictions(tmp_path / "out", data).cases}
    for row in rows:
        for metric in ("dice_wt", "dice_et", "hd95_tc"):
            assert evaluated[row["case"]][metric] == pytest.approx(row[f"test/{metric}"], abs=1e-9)


def test_a_trial_trains_on_the_target_grid_and_its_model_predicts_on_it(tmp_path: Path) -> None:
    """The checkpoint carries the target spacing; ``ablate predict`` resamples a case,
    whose label it never sees, to exactly the array training read from the cache."""
    from tests.trainables.engine.predict_helpers import TINY
    from trainables.config.trial import load_trial_config, parse_trial_config
    from trainables.data.layouts import discover
    from trainables.engine.checkpoint import load_checkpoint
    from trainables.engine.predict import prepare_input
    from trainables.engine.runner import TrialRunner
    from trainables.engine.smoke import smoke_config

    synthesize_dataset(tmp_path / "data", 4, 3, (32, 32, 16), spacing=(1.0, 1.0, 2.5))
    cfg = smoke_config(load_trial_config(TINY)).model_dump(mode="json")
    cfg["data"] |= {"root": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache")}
    cfg["data"]["preprocess"]["resample"] = {"kind": "target_spacing", "spacing": [1.5, 1.5, 1.5]}
    runner = TrialRunner(parse_trial_config(cfg))
    case_id = runner.data.split.val[0]
    trained = runner.data.dataset.load(case_id, mmap=False)
    assert trained.spacing == (1.5, 1.5, 1.5) and trained.source_spacing == (1.0, 1.0, 2.5)
    metrics = runner.run_epoch()
    assert np.isfinite(metrics["val/dice_mean"])
    runner.save(tmp_path / "ckpt")
    ckpt = load_checkpoint(tmp_path / "ckpt" / "best.pt")
    assert ckpt["config"]["data"]["preprocess"]["resample"]["spacing"] == [1.5, 1.5, 1.5]
    predictor = build_predictor([("best.pt", ckpt)], "cpu")
    record = next(r for r in discover(tmp_path / "data").cases if r.case_id == case_id)
    predicted = prepare_input(record, predictor)
    assert predicted.bbox == trained.bbox and predicted.source_spacing == (1.0, 1.0, 2.5)
    np.testing.assert_array_equal(predicted.image, trained.image.astype(np.float32))


def test_a_model_without_its_target_spacing_is_refused(tmp_path: Path) -> None:
    from trainables.errors import InputError

    ckpt = random_checkpoint(
        tmp_path / "m.pt", data__preprocess__resample={"kind": "target_spacing"}
    )
    with pytest.raises(InputError, match=r"m.pt: data.preprocess.resample.spacing: 'target_sp"):
        build_predictor([("m.pt", ckpt)], "cpu")


def test_validation_scores_a_resampled_case_where_the_test_pass_does(tmp_path: Path) -> None:
    """``val/`` numbers of a whole resampled case are measured on its own grid, as ``test/``
    ones are: the same model on the same case gives the same Dice and HD95 either way."""
    from trainables.config.trial import parse_trial_config
    from trainables.data.splits import Split
    from trainables.engine.data import TrialData
    from trainables.engine.validation import validate
    from trainables.losses import build_loss

    resample = {"kind": "target_spacing", "spacing": [1.5, 1.5, 2.0]}
    ckpt = random_checkpoint(tmp_path / "ckpt" / "best.pt", data__preprocess__resample=resample)
    synthesize_dataset(tmp_path / "data", 2, 7, (40, 40, 16), spacing=(1.0, 1.0, 4.0))
    predictor = build_predictor([("ckpt", ckpt)], "cpu")
    cfg, model = predictor.cfg, predictor.members[0].model
    whole = cfg.model_dump(mode="json")
    whole["sampling"]["validation"] = "whole"
    whole["validation"]["hd95"] = True
    cfg = parse_trial_config(whole)
    prepare(tmp_path / "data", tmp_path / "cache", cfg.data.preprocess)
    cache = PreparedDataset(tmp_path / "cache")
    ids = cache.case_ids
    split = Split(train=(), val=tuple(ids), test=(), hash="x")
    data = TrialData(cache, split, cache.scheme, cfg.data.modalities, tmp_path / "data")
    loss = build_loss(cfg.loss, cache.scheme)
    cpu = torch.device("cpu")
    val = validate(model, loss, cfg, data, cpu, nullcontext).per_case
    cases = TestCases(cache, ids, cache.scheme, cfg.data.modalities)
    test = evaluate_cases(model, cfg, cases, cpu, nullcontext).per_case
    for v, t in zip(val, test, strict=True):
        for metric in ("dice_wt", "dice_tc", "hd95_et"):
            assert v[f"val/{metric}"] == pytest.approx(t[f"test/{metric}"], abs=1e-9)


def test_an_ensemble_of_one_model_predicts_what_the_model_does(tmp_path: Path) -> None:
    """One model, and two copies of it averaged, are brought back to the source grid alike
    (both as probabilities)."""
    from trainables.data.layouts import discover
    from trainables.engine.predict import prepare_input, source_grid_of

    resample = {"kind": "target_spacing", "spacing": [1.5, 1.5, 2.0]}
    ckpt = random_checkpoint(tmp_path / "m.pt", data__preprocess__resample=resample)
    synthesize_dataset(tmp_path / "data", 2, 7, (40, 40, 16), spacing=(1.0, 1.0, 4.0))
    single = build_predictor([("a", ckpt)], "cpu")
    pair = build_predictor([("a", ckpt), ("b", ckpt)], "cpu")
    for record in discover(tmp_path / "data").cases:
        case = prepare_input(record, single)
        back = source_grid_of(case, (40, 40, 16))
        assert back is not None
        one, two = (
            single.predict(case.image, to_source=back),
            pair.predict(case.image, to_source=back),
        )
        assert one.shape == tuple(hi - lo for lo, hi in case.bbox)  # the crop, source grid
        np.testing.assert_array_equal(one, two)
