"""Mirroring TTA: the averaged probabilities are exactly flip-equivariant, and the test pass
with ``validation.test_tta`` gives the labels ``ablate predict --tta`` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainables.engine.predict_helpers import TINY, random_checkpoint
from trainables.config.trial import load_trial_config, parse_trial_config
from trainables.data.cache import PreparedDataset, prepare
from trainables.data.evaluate import evaluate_predictions
from trainables.data.synth import synthesize_dataset
from trainables.engine.held_out import TestCases, evaluate_cases
from trainables.engine.predict import build_predictor
from trainables.engine.predict_cases import predict_directory
from trainables.engine.tta import flip_axes, mirrored_probabilities


def _ramp_logits(view: np.ndarray) -> torch.Tensor:
    """(2, X, Y, Z) logits that depend on the position, so flipping the input is not flipping
    the output: a model that is not mirror-equivariant."""
    image = torch.from_numpy(np.ascontiguousarray(view[0]))
    shape = image.shape
    ramp = torch.arange(shape[0] * shape[1] * shape[2], dtype=torch.float32).reshape(shape)
    return torch.stack([image * ramp / ramp.numel(), -image])


@pytest.mark.parametrize("dims", [3, 2])
def test_the_mirrored_average_is_exactly_flip_equivariant(dims: int) -> None:
    loss = load_trial_config(TINY).loss  # dice_ce: softmax over the 2 channels
    image = np.random.default_rng(0).normal(size=(1, 5, 6, 4)).astype(np.float32)
    plain = torch.softmax(_ramp_logits(image), dim=0)
    mirrored = mirrored_probabilities(_ramp_logits, image, dims, loss)
    assert mirrored.shape == plain.shape and torch.allclose(mirrored.sum(0), torch.ones(1))
    for axis in (1, 2, 3)[:dims]:
        flipped = np.flip(image, axis)
        assert not torch.allclose(torch.softmax(_ramp_logits(flipped), 0), plain.flip(axis))
        again = mirrored_probabilities(_ramp_logits, flipped, dims, loss)
        torch.testing.assert_close(again, mirrored.flip(axis), rtol=1e-6, atol=1e-6)
    assert len(flip_axes(dims)) == 2**dims


def test_the_test_pass_with_test_tta_predicts_what_predict_tta_writes(tmp_path: Path) -> None:
    ckpt = random_checkpoint(tmp_path / "ckpt" / "best.pt", validation__test_tta=True)
    data = tmp_path / "data"
    synthesize_dataset(data, 2, 7, (40, 40, 36))
    predictor = build_predictor([("ckpt", ckpt)], "cpu")
    cfg, model = predictor.cfg, predictor.members[0].model
    assert cfg.validation.test_tta
    prepare(data, tmp_path / "cache", cfg.data.preprocess)
    cache = PreparedDataset(tmp_path / "cache")
    cases = TestCases(cache, cache.case_ids, cache.scheme, cfg.data.modalities)
    cpu = torch.device("cpu")
    mirrored = evaluate_cases(model, cfg, cases, cpu, _no_autocast).per_case
    plain_cfg = parse_trial_config(
        cfg.model_dump(mode="json")
        | {"validation": {**cfg.validation.model_dump(), "test_tta": False}}
    )
    plain = evaluate_cases(model, plain_cfg, cases, cpu, _no_autocast).per_case
    assert [r["test/dice_wt"] for r in mirrored] != [r["test/dice_wt"] for r in plain]
    predict_directory(predictor, data, tmp_path / "out", tta=True)
    evaluated = {r["case_id"]: r for r in evaluate_predictions(tmp_path / "out", data).cases}
    for row in mirrored:
        assert evaluated[row["case"]]["dice_wt"] == pytest.approx(row["test/dice_wt"], abs=1e-9)
        assert evaluated[row["case"]]["dice_et"] == pytest.approx(row["test/dice_et"], abs=1e-9)


def _no_autocast():
    from contextlib import nullcontext

    return nullcontext()
