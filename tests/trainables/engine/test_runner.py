"""The epoch loop at toy size on CPU: resume, divergence, freezing, warm start, CPU augmentation."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from trainables.config.trial import parse_trial_config
from trainables.engine.checkpoint import load_checkpoint, save_checkpoint
from trainables.engine.runner import TrialDiverged, TrialRunner
from trainables.errors import InputError

METRICS = {
    "epoch",
    "train/loss",
    "train/lr",
    "val/loss",
    "val/dice_wt",
    "val/dice_tc",
    "val/dice_et",
    "val/dice_mean",
    "val/hd95_wt",
    "perf/epoch_s",
    "perf/voxels_per_s",
}


def _runner(data: dict) -> TrialRunner:
    return TrialRunner(parse_trial_config(data))


def test_an_epoch_reports_the_design_metric_names(tiny: dict) -> None:
    tiny["train"].update(epochs=1, iterations_per_epoch=2)
    metrics = _runner(tiny).run_epoch()
    assert set(metrics) >= METRICS
    assert metrics["epoch"] == 1.0 and 0.0 <= metrics["val/dice_mean"] <= 1.0


def test_resume_from_a_checkpoint_gives_the_identical_next_epoch(
    tiny: dict, tmp_path: Path
) -> None:
    tiny["train"].update(epochs=2, iterations_per_epoch=3)
    straight = _runner(tiny)
    straight.run_epoch()
    save_checkpoint(straight.state_dict(), tmp_path / "epoch1.pt")
    expected = straight.run_epoch()

    resumed = _runner(tiny)
    resumed.load_state_dict(load_checkpoint(tmp_path / "epoch1.pt"))
    assert resumed.epoch == 1
    again = resumed.run_epoch()
    assert again["train/loss"] == expected["train/loss"]
    assert again["val/loss"] == expected["val/loss"]
    assert again["val/dice_mean"] == expected["val/dice_mean"]
    assert again["train/lr"] == expected["train/lr"]


def test_a_non_finite_loss_stops_the_trial_as_diverged(tiny: dict) -> None:
    tiny["optimizer"] = {"kind": "sgd", "lr": 1.0e12, "momentum": 0.9}
    tiny["train"].update(epochs=1, iterations_per_epoch=8, grad_clip=None)
    expected = r"diverged: training loss is (nan|inf) in epoch 1 \(iterations 1-8\)"
    with pytest.raises(TrialDiverged, match=expected):
        _runner(tiny).run_epoch()


def test_a_frozen_submodule_stays_fixed_for_its_iterations(tiny: dict) -> None:
    tiny["train"].update(
        epochs=1, iterations_per_epoch=2, freeze={"module": "encoder", "iterations": 2}
    )
    runner = _runner(tiny)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.run_epoch()
    after = runner.model.state_dict()
    frozen = [k for k in before if k.startswith("encoder.") and before[k].is_floating_point()]
    trained = [k for k in before if not k.startswith("encoder.") and k.endswith("weight")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)


def test_warm_start_loads_weights_and_rejects_a_mismatch(tiny: dict, tmp_path: Path) -> None:
    tiny["train"].update(epochs=1, iterations_per_epoch=1)
    source = _runner(tiny)
    source.run_epoch()
    path = save_checkpoint(source.state_dict(), tmp_path / "pre.pt")
    tiny["train"]["init"] = {"checkpoint": str(path)}
    warm = _runner(tiny)
    for key, value in source.model.state_dict().items():
        assert torch.equal(value, warm.model.state_dict()[key])
    tiny["model"]["filters"] = [8, 16, 32, 64]
    with pytest.raises(InputError, match=r"pre.pt: weights do not match the model: \d+ unexpected"):
        _runner(tiny)


def test_cpu_side_augmentation_path_trains(tiny: dict) -> None:
    tiny["train"].update(epochs=1, iterations_per_epoch=2, gpu_augmentation=False, num_workers=1)
    metrics = _runner(tiny).run_epoch()
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


def test_two_stage_clstm_starts_from_the_pretrained_slice_unet(tmp_path: Path) -> None:
    """Paper 004: pre-train the 2-D U-Net on slices, load it into the C-LSTM's ``unet.``."""
    from tests.trainables.engine.conftest import BASE_DIR
    from trainables.config.trial import load_trial_config
    from trainables.engine.smoke import smoke_config

    stage_one = TrialRunner(smoke_config(load_trial_config(BASE_DIR / "clstm_pretrain_unet.yaml")))
    stage_one.run_epoch()
    path = save_checkpoint(stage_one.state_dict(), tmp_path / "unet.pt")

    clstm = smoke_config(load_trial_config(BASE_DIR / "clstm.yaml")).model_dump(mode="json")
    clstm["model"]["unet"] = stage_one.cfg.model.model_dump(mode="json")  # same smoke widths
    clstm["train"]["init"] = {"checkpoint": str(path), "prefix": "unet.", "strict": False}
    runner = TrialRunner(parse_trial_config(clstm))
    loaded = runner.model.state_dict()
    for key, value in stage_one.model.state_dict().items():
        if not key.startswith("heads."):  # the slice head is replaced by the LSTM's gates
            assert torch.equal(loaded[f"unet.{key}"], value), key
    before = {k: v.clone() for k, v in runner.model.unet.state_dict().items()}
    runner.run_epoch()  # smoke freezes the U-Net for its first 2 iterations of 3
    changed = [
        k for k, v in runner.model.unet.state_dict().items() if not torch.equal(v, before[k])
    ]
    assert changed  # unfrozen for the last iteration


@pytest.mark.parametrize(
    ("requested", "used"), [("fp16", "fp32"), ("bf16", "bf16"), ("fp32", "fp32")]
)
def test_precision_on_cpu(tiny: dict, requested: str, used: str) -> None:
    """fp16 autocast brings nothing on a CPU, so it runs as fp32; bf16 autocast runs as asked."""
    tiny["train"].update(epochs=1, iterations_per_epoch=1, precision=requested)
    tiny["device"] = "cpu"
    runner = _runner(tiny)
    assert runner.precision == used
    assert torch.isfinite(torch.tensor(runner.run_epoch()["val/loss"]))


def test_a_failed_host_allocation_in_an_epoch_is_out_of_memory_with_the_figure(tiny: dict) -> None:
    from tests.fault_trainable import memory_fault
    from trainables.engine.runner import TrialOutOfMemory

    tiny["train"].update(epochs=1, iterations_per_epoch=1)
    tiny["sampling"]["patch_size"] = [128, 128, 128]
    runner = _runner(tiny)
    with (
        pytest.raises(TrialOutOfMemory) as caught,
        memory_fault(headroom_mib=8),
    ):
        runner.run_epoch()
    message = str(caught.value)
    assert message.startswith(
        "out of memory: model attention_unet with batch 2 and patch [128, 128, 128] does not fit "
        "on cpu; "
    )
    # torch's allocator ("tried to allocate N MiB on the host") or numpy's ("Unable to allocate
    # N MiB for an array"), whichever allocation hit the cap first: both name the figure.
    assert re.search(r"[Aa]llocate \d+(\.\d+)? [MG]iB", message), message


@pytest.mark.slow
def test_compiled_model_trains_an_epoch(tiny: dict) -> None:
    """``train.compile``: the step runs through ``torch.compile`` (inductor; about a minute on a
    small CPU); validation uses the eager module, so it needs no second compilation."""
    tiny["train"].update(epochs=1, iterations_per_epoch=2, compile=True)
    tiny["model"].update(attention=False, deep_supervision=0, bottleneck_depth=0)
    runner = _runner(tiny)
    assert runner.step_model is not runner.model
    metrics = runner.run_epoch()
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])
