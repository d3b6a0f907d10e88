"""``sample:`` axes: the paths a sample may not vary, and sampled values checked in every cell
the way a worker applies them, so a study that validates does not fail in its trials."""

from __future__ import annotations

from pathlib import Path

import pytest
from ablate_sweep_helpers import run_validate, write_space

OPTUNA = "search: {kind: optuna, num_samples: 2}\n"


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (  # was run, labelled seed=7, and trained with seed 0
            "{seed: {choice: [7]}}",
            "sample.seed: the trial seed is set by 'seeds:' (repeat i uses seed i)",
        ),
        (  # trained, then `ablate winners` refused the different splits
            "{data.split.seed: {int: [0, 1000]}}",
            "sample.data.split.seed: sampled trials would split different cases, and `ablate "
            "winners` ranks trials on one split",
        ),
        ("{data.synthetic.cases: {int: [6, 10]}}", "sample.data.synthetic.cases: sampled trials"),
        # another generator seed gives other images under the same case ids
        ("{data.synthetic.seed: {int: [0, 9]}}", "sample.data.synthetic.seed: sampled trials"),
    ],
)
def test_paths_a_sample_may_not_vary_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: str, expected: str
) -> None:
    space = write_space(tmp_path, f"name: s\nextends: trial.yaml\n{OPTUNA}sample: {sample}\n")
    code, err = run_validate(space, capsys)
    assert code == 2 and expected in err, err


def test_a_sampled_synthetic_shape_is_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same heads at another sampling (a resolution axis), as a grid over it is valid."""
    sample = "{data.synthetic.shape: {choice: [[32, 32, 32], [40, 40, 32]]}}"
    space = write_space(tmp_path, f"name: s\nextends: trial.yaml\n{OPTUNA}sample: {sample}\n")
    code, err = run_validate(space, capsys)
    assert code == 0, err


def test_a_sampled_kind_is_checked_on_the_cells_resolved_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The worker applies a sample onto the cell's resolved config (NAdam's eps and betas set):
    sampling optimizer.kind passed validate and failed every trial. A kind switch now keeps
    only what both kinds inherit (SGD: lr, weight_decay), so the sample is valid; a field the
    sampled kind needs and the cell lacks is named at the sample."""
    text = f"name: s\nextends: trial.yaml\n{OPTUNA}sample: {{optimizer.kind: {{choice: [sgd]}}}}\n"
    code, err = run_validate(write_space(tmp_path, text), capsys)
    assert code == 0, err
    text = f"name: s\nextends: trial.yaml\n{OPTUNA}sample: {{schedule.kind: {{choice: [step]}}}}\n"
    code, err = run_validate(write_space(tmp_path, text), capsys)
    assert code == 2, err
    assert (
        "sample.schedule.kind: schedule.step_size: required field is missing (set it beside "
        "the kind)" in err
    ), err


def test_samples_are_checked_in_every_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Checked against the first cell only, the result depended on the order of the variants."""
    text = (
        f"name: s\nextends: trial.yaml\n{OPTUNA}scheduler: {{kind: fifo}}\n"
        "variants: [{label: long, overrides: {train.epochs: 6}}, "
        "{label: short, overrides: {train.epochs: 3}}]\n"
        "sample: {schedule.warmup_epochs: {int: [0, 4]}}\n"
    )
    code, err = run_validate(write_space(tmp_path, text), capsys)
    assert code == 2, err
    assert "sample.schedule.warmup_epochs (cell 'short'): schedule.warmup_epochs: 4 must be" in err


def test_a_sampled_kind_trains_as_the_same_grid_cell(tmp_path: Path) -> None:
    """Samples were applied onto the cell's resolved config, where the old kind's defaults are
    filled in: a sampled AdamW kept NAdam's weight decay 0, the grid's AdamW took AdamW's
    1e-5 (review). The worker now samples onto the cell as written, as the grid does."""
    from orchestrator.expand import plan_sweep
    from orchestrator.tuner import param_space
    from trainables.trainable import resolve_trial

    grid = plan_sweep(
        write_space(
            tmp_path, "name: g\nextends: trial.yaml\ngrid: {optimizer.kind: [adamw]}\n", "g.yaml"
        )
    )
    text = (
        f"name: o\nextends: trial.yaml\n{OPTUNA}sample: {{optimizer.kind: {{choice: [adamw]}}}}\n"
    )
    optuna = param_space(plan_sweep(write_space(tmp_path, text, "o.yaml")))
    sampled = resolve_trial({**optuna, "sample": {"optimizer.kind": "adamw"}}, "t1").config
    assert sampled.optimizer.weight_decay == grid.trials[0].config["optimizer"]["weight_decay"]
    assert sampled.optimizer.weight_decay == 1e-5 and sampled.optimizer.lr == 3e-3
