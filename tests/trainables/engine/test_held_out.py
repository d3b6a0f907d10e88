"""The held-out test pass at toy size on CPU: the best epoch's weights, once, at the end."""

from __future__ import annotations

from pathlib import Path

import torch

from trainables.config.trial import parse_trial_config
from trainables.engine.held_out import (
    TEST_PER_CASE_FILE,
    evaluate_cases,
    split_test_cases,
    weights_loaded,
)
from trainables.engine.per_case import read_per_case_csv
from trainables.engine.precision import autocast_context
from trainables.engine.runner import TrialRunner

REGIONS = ("wt", "tc", "et")


def _runner(tiny: dict, epochs: int = 2) -> TrialRunner:
    tiny["train"].update(epochs=epochs, iterations_per_epoch=2)
    # train/lr is constant and ties keep the first epoch: epoch 1 is the selected one
    return TrialRunner(parse_trial_config(tiny), metric="train/lr", mode="max")


def _evaluate(runner: TrialRunner, weights: dict[str, torch.Tensor]) -> list[dict]:
    cases = split_test_cases(runner.cfg, runner.data)
    with weights_loaded(runner.model, weights) as model:
        autocast = lambda: autocast_context(runner.precision, runner.device)  # noqa: E731
        return evaluate_cases(model, runner.cfg, cases, runner.device, autocast).per_case


def test_the_last_epoch_tests_the_best_epochs_weights_not_the_last(
    tiny: dict, tmp_path: Path
) -> None:
    runner = _runner(tiny)
    first = runner.run_epoch()
    assert not any(k.startswith("test/") for k in first)  # not the last epoch: no test yet
    with torch.no_grad():  # make the last epoch's weights garbage by construction
        generator = torch.Generator().manual_seed(0)
        for p in runner.model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 5)
    last = runner.run_epoch()
    assert runner.best.epoch == 1 and last["best/epoch"] == 1.0
    assert last["test/cases"] == 2.0 and len(runner.data.split.test) == 2
    for region in REGIONS:
        for metric in ("dice", "hd95", "nsd", "rvd", "lesion_dice", "lesion_hd95"):
            assert f"test/{metric}_{region}" in last
    assert 0.0 <= last["test/dice_mean"] <= 1.0 and last["perf/test_s"] > 0
    best = runner.best_model()
    assert best is not None
    current = {k: v.clone() for k, v in runner.model.state_dict().items()}
    assert runner.test is not None
    assert _evaluate(runner, best["model"]) == runner.test.per_case
    assert _evaluate(runner, current) != runner.test.per_case  # the last weights differ
    # the test pass put the model's own (last) weights back
    assert all(torch.equal(current[k], v) for k, v in runner.model.state_dict().items())

    runner.save(tmp_path)
    rows = read_per_case_csv(tmp_path / TEST_PER_CASE_FILE)
    assert [r["case"] for r in rows] == list(runner.data.split.test)
    assert rows[0]["test/lesion_dice_wt"] == runner.test.per_case[0]["test/lesion_dice_wt"]
    again = _runner(tiny)
    again.restore(tmp_path)
    assert again.test is not None and again.test.metrics["test/cases"] == 2.0
    assert again.test.metrics["test/dice_mean"] == last["test/dice_mean"]


def test_a_split_without_test_cases_reports_zero_cases_and_writes_no_csv(
    tiny: dict, tmp_path: Path
) -> None:
    tiny["data"]["split"] = {"kind": "holdout", "fractions": [0.5, 0.5, 0.0]}
    runner = _runner(tiny, epochs=1)
    metrics = runner.run_epoch()
    assert metrics["test/cases"] == 0.0
    assert [k for k in metrics if k.startswith("test/")] == ["test/cases"]
    runner.save(tmp_path)
    assert not (tmp_path / TEST_PER_CASE_FILE).exists()


def test_test_max_cases_caps_the_test_cases(tiny: dict) -> None:
    tiny["validation"]["test_max_cases"] = 1
    metrics = _runner(tiny, epochs=1).run_epoch()
    assert metrics["test/cases"] == 1.0
