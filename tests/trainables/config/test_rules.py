"""Cross-component rules: each impossible trial is rejected at validation, naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from trainables.config.dotted import apply_overrides
from trainables.config.rules import submodule_names
from trainables.config.trial import parse_trial_config
from trainables.errors import ConfigProblem, InputError

BASE_DIR = Path(__file__).resolve().parents[3] / "search_spaces" / "base"


def _base(name: str = "tiny", **overrides: Any) -> dict[str, Any]:
    """A shipped base trial with dotted overrides (``train.epochs=3`` spelled as a dict key)."""
    return apply_overrides(yaml.safe_load((BASE_DIR / f"{name}.yaml").read_text()), overrides)


def _problems(data: dict[str, Any]) -> list[ConfigProblem]:
    with pytest.raises(InputError) as err:
        parse_trial_config(data, source="trial.yaml")
    return list(err.value.problems)


def test_warmup_must_leave_epochs_for_the_schedule() -> None:
    data = _base(**{"train.epochs": 3, "schedule.warmup_epochs": 10})
    assert _problems(data) == [
        ConfigProblem(
            "schedule.warmup_epochs",
            "10 must be less than train.epochs (3): the warm-up would leave no epochs for the "
            "schedule",
        )
    ]
    assert parse_trial_config(_base(**{"schedule.warmup_epochs": 2})).schedule.warmup_epochs == 2


def test_cosine_min_lr_must_not_exceed_the_optimizer_lr() -> None:
    data = _base(**{"schedule": {"kind": "cosine", "min_lr": 0.5}})
    (problem,) = _problems(data)
    assert str(problem) == (
        "schedule.min_lr: 0.5 must not exceed optimizer.lr (0.003): the cosine anneals from "
        "the optimizer's lr down to min_lr"
    )
    assert parse_trial_config(_base(**{"schedule": {"kind": "cosine", "min_lr": 0.003}}))


def test_every_cross_component_problem_is_reported_at_once() -> None:
    data = _base(
        **{
            "train.epochs": 2,
            "schedule": {"kind": "cosine", "min_lr": 1.0, "warmup_epochs": 2},
            "sampling.patch_size": [36, 32, 32],
        }
    )
    paths = [p.path for p in _problems(data)]
    assert paths == ["sampling.patch_size", "schedule.warmup_epochs", "schedule.min_lr"]


def test_the_frozen_module_must_exist_in_the_model() -> None:
    clstm = _base("clstm")
    assert parse_trial_config(clstm).train.freeze.module == "unet"
    nested = apply_overrides(clstm, {"train.freeze.module": "unet.encoder.stages.0"})
    assert parse_trial_config(nested).train.freeze.module == "unet.encoder.stages.0"
    (problem,) = _problems(apply_overrides(clstm, {"train.freeze.module": "unte"}))
    assert str(problem) == (
        "train.freeze.module: 'unte' is not a sub-module of model 'clstm' (top level: head, "
        "hidden_conv, unet) (did you mean 'unet'?)"
    )
    (problem,) = _problems(_base(**{"train.freeze": {"module": "unet", "iterations": 1}}))
    assert problem.path == "train.freeze.module"
    assert "top level: bottleneck, decoder, encoder, heads" in problem.message


def test_submodule_names_cost_no_memory() -> None:
    cfg = parse_trial_config(_base("nnunet_brats"))
    names = submodule_names(cfg.model)
    assert {"encoder", "decoder", "heads", "encoder.stages.0"} <= names and "" not in names


def test_synthetic_cases_have_known_modalities_and_count() -> None:
    ct = _base(**{"data.synthetic.modality": "ct"})  # tiny asks for the four MRI modalities
    (problem,) = _problems(ct)
    assert str(problem) == (
        "data.modalities: ['t1', 't1ce', 't2', 'flair'] asks for t1, t1ce, t2, flair, but "
        "synthetic ct cases (data.root unset) have only ct"
    )
    with_root = apply_overrides(ct, {"data.root": "/data/ct"})  # a real dataset: checked on load
    assert parse_trial_config(with_root).data.synthetic.modality == "ct"
    folds = _base(**{"data.split": {"kind": "kfold", "folds": 12}})
    assert [str(p) for p in _problems(folds)] == [
        "data.split.folds: 12 folds need 12 cases or more to fold; data.synthetic.cases is 10"
    ]


def test_a_split_without_validation_cases_is_rejected() -> None:
    data = _base(**{"data.split.fractions": [0.8, 0.0, 0.2]})
    (problem,) = _problems(data)
    assert problem.path == "data.split.fractions"
    assert problem.message.startswith("[0.8, 0.0, 0.2] gives no validation cases")


def test_empty_slice_drop_needs_a_2d_patch() -> None:
    (problem,) = _problems(_base(**{"sampling.empty_slice_drop": 0.5}))
    assert str(problem) == (
        "sampling.empty_slice_drop: 0.5 applies only to 2-D slice sampling, but patch_size "
        "[32, 32, 32] is 3-D (set it to 0, or use a 2-D patch and model)"
    )
    assert parse_trial_config(_base("unet2d_penalty")).sampling.empty_slice_drop == 0.5


def test_smoke_keeps_warmup_and_freezing_inside_the_shrunk_run() -> None:
    from trainables.engine.smoke import smoke_config

    cfg = parse_trial_config(_base(**{"train.epochs": 20, "schedule.warmup_epochs": 5}))
    smoke = smoke_config(cfg)
    assert (smoke.train.epochs, smoke.schedule.warmup_epochs) == (2, 1)


def test_a_step_no_device_holds_is_rejected_at_validation() -> None:
    """A batch size or patch with a few zeros too many failed inside torch (an overflow, an
    allocation error) when the trial started; now validation names it."""
    (problem,) = _problems(_base(**{"train.batch_size": 10**20}))
    assert str(problem).startswith(
        "train.batch_size: 100000000000000000000 patches of [32, 32, 32] x 4 channels is "
        "1.31e+25 input voxels per step (4.88e+16 GiB as float32 before any activation), "
        "more than any device holds"
    )
    (problem,) = _problems(_base(**{"sampling.patch_size": [4096, 4096, 4096]}))
    assert problem.path == "train.batch_size"
    assert "2 patches of [4096, 4096, 4096] x 4 channels is 5.5e+11 input voxels" in problem.message
    assert parse_trial_config(_base(**{"train.batch_size": 64}))  # large but possible


def test_seeds_and_floats_must_be_what_numpy_and_torch_take() -> None:
    for overrides, message in [
        ({"seed": 2**32}, "seed: Input should be less than or equal to 4294967295"),
        ({"data.split.seed": -1}, "data.split.seed: Input should be greater than or equal to 0"),
        ({"optimizer.lr": "1.0e400"}, "optimizer.lr: Input should be a finite number"),
        ({"optimizer.lr": float("inf")}, "optimizer.lr: Input should be a finite number"),
    ]:
        (problem,) = _problems(_base(**overrides))
        assert str(problem).startswith(message), str(problem)


def test_a_slice_model_says_whether_its_slice_spacing_is_resampled() -> None:
    """nnU-Net's 2d configuration keeps the spacing between slices; a 3-D one resamples it."""
    resample = {"kind": "target_spacing"}
    data = _base("unet2d_penalty", **{"data.preprocess.resample": resample})
    assert _problems(data) == [
        ConfigProblem(
            "data.preprocess.resample.in_plane_only",
            "model 'unet' reads 2-D slices: write true to keep each case's slice spacing and "
            "resample in-plane only (nnU-Net's 2d configuration), or false to resample the "
            "slice spacing too",
        )
    ]
    for choice in (True, False):
        written = {**resample, "in_plane_only": choice}
        data = _base("unet2d_penalty", **{"data.preprocess.resample": written})
        assert parse_trial_config(data).data.preprocess.resample.in_plane_only is choice
    volume = parse_trial_config(_base(**{"data.preprocess.resample": resample}))
    assert volume.data.preprocess.resample.in_plane_only is False


def test_dummy_2d_augmentation_needs_a_3d_patch() -> None:
    data = _base("unet2d_penalty", **{"augment.dummy_2d": True})
    assert [str(p) for p in _problems(data)] == [
        "augment.dummy_2d: model 'unet' reads 2-D slices, which are rotated and scaled in-plane "
        "already: leave dummy_2d null or false"
    ]
    assert parse_trial_config(_base(**{"augment.dummy_2d": True})).augment.dummy_2d is True
