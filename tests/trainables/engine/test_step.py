"""The one training step: runner and benchmark share it; the best epoch; the checkpoint format;
and an engine that imports neither ray nor mlflow."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainables.config.trial import parse_trial_config
from trainables.engine.bench import benchmark_step, build_bench_step
from trainables.engine.best import BestEpoch
from trainables.engine.checkpoint import (
    BEST_MODEL_FILE,
    TRAINING_STATE_FILE,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
)
from trainables.engine.runner import TrialRunner
from trainables.engine.step import StepOptions, TrainStep
from trainables.errors import InputError

ENGINE = [
    "trainables.engine.runner",
    "trainables.engine.bench",
    "trainables.engine.train",
    "trainables.engine.step",
    "trainables.engine.checkpoint",
    "trainables.engine.per_case",
    "trainables.engine.preview",
    "trainables.engine.validation",
]


def test_the_engine_imports_neither_ray_nor_mlflow() -> None:
    code = f"import {', '.join(ENGINE)}; import sys; "
    code += "bad = [m for m in ('ray', 'mlflow') if m in sys.modules]; assert not bad, bad"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_runner_and_benchmark_train_with_the_same_step(tiny: dict) -> None:
    tiny["train"].update(epochs=1, iterations_per_epoch=1)
    cfg = parse_trial_config(tiny)
    runner, bench = TrialRunner(cfg), build_bench_step(cfg)
    assert type(runner.trainer) is TrainStep and type(bench.train) is TrainStep
    assert runner.trainer.precision == bench.train.precision  # same seed, same initial weights
    for key, value in runner.model.state_dict().items():
        assert torch.equal(value, bench.train.model.state_dict()[key]), key
    loss = runner.trainer.step(bench.image, bench.label)
    assert torch.equal(loss, bench.step())  # same weights, batch and step: the same loss
    assert runner.iteration == bench.train.iteration == 1


def test_fp16_on_a_cpu_says_it_trains_in_fp32(tiny: dict) -> None:
    """A precision axis on a CPU trained fp16 and fp32 cells alike with nothing said."""
    from trainables.data.labels import INTERNAL_BRATS
    from trainables.engine.step import build_train_step

    tiny["train"].update(precision="fp16")
    tiny["device"] = "cpu"
    said: list[str] = []
    step = build_train_step(parse_trial_config(tiny), INTERNAL_BRATS, 4, progress=said.append)
    assert step.precision == "fp32" and said == ["train.precision fp16 runs as fp32 on the CPU"]


def test_channels_last_runs_through_the_shared_builder(tiny: dict) -> None:
    tiny["train"].update(batch_size=1, speed={"channels_last": True})
    cfg = parse_trial_config(tiny)
    step = build_bench_step(cfg, StepOptions())
    assert step.image.is_contiguous(memory_format=torch.channels_last_3d)
    assert math.isfinite(float(step.step()))
    result = benchmark_step(cfg, steps=1, warmup=0)
    assert result["step_ms_median"] > 0 and result["parameters"] > 0


def test_best_epoch_follows_the_mode_and_ignores_non_finite_values() -> None:
    model = torch.nn.Linear(2, 1)
    best = BestEpoch("val/loss", "min")
    assert not best.update({"val/loss": math.nan}, 1, 1, model, []) and best.metrics() == {}
    assert best.update({"val/loss": 0.5}, 2, 2, model, [{"case": "a", "val/loss": 0.5}])
    assert not best.update({"val/loss": 0.7}, 3, 3, model, [])
    assert not best.update({"train/loss": 0.1}, 4, 4, model, [])  # no validation this epoch
    assert best.metrics() == {"best/epoch": 2.0, "best/val/loss": 0.5}
    assert best.per_case == [{"case": "a", "val/loss": 0.5}] and best.weights is not None
    with pytest.raises(ValueError, match="mode must be 'max' or 'min', not 'up'"):
        BestEpoch("val/loss", "up")


def test_runner_tracks_the_best_epoch_with_its_per_case_rows(tiny: dict, tmp_path: Path) -> None:
    tiny["train"].update(epochs=2, iterations_per_epoch=1)
    tiny["validation"] = {"max_cases": 2, "hd95": False}
    runner = TrialRunner(parse_trial_config(tiny), metric="val/loss", mode="min")
    first, second = runner.run_epoch(), runner.run_epoch()
    losses = {1: first["val/loss"], 2: second["val/loss"]}
    expected = min(losses, key=losses.__getitem__)
    assert second["best/epoch"] == expected and second["best/val/loss"] == losses[expected]
    rows = runner.best.per_case
    assert [r["case"] for r in rows] == list(runner.data.split.val[:2])
    assert sum(r["val/loss"] for r in rows) / 2 == pytest.approx(losses[expected])
    runner.save(tmp_path)
    best = load_checkpoint(tmp_path / BEST_MODEL_FILE)
    assert best["epoch"] == expected and "optimizer" not in best
    assert best["best"] == {"epoch": expected, "value": losses[expected], "metric": "val/loss"}
    restored = TrialRunner(parse_trial_config(tiny), metric="val/loss", mode="min")
    restored.restore(tmp_path)
    assert (restored.epoch, restored.best.epoch, restored.best.per_case) == (2, expected, rows)


def test_other_checkpoint_versions_are_refused_naming_the_file(tmp_path: Path) -> None:
    old = {"version": 1, "config": {}, "model": {}, "epoch": 1, "iteration": 1}
    torch.save(old, tmp_path / TRAINING_STATE_FILE)
    with pytest.raises(InputError, match=r"state.pt: checkpoint format 1 is not 2"):
        load_checkpoint(tmp_path / TRAINING_STATE_FILE)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(InputError, match=r"list.pt: checkpoint format None is not 2"):
        load_checkpoint(tmp_path / "list.pt")
    current = make_checkpoint({}, {"w": torch.ones(1)}, 1, 1)
    assert load_checkpoint(save_checkpoint(current, tmp_path / "ok.pt"))["best"]["epoch"] == 0
    torch.save({"hook": print}, tmp_path / "objects.pt")  # needs unpickling code: refused
    (tmp_path / "garbage.pt").write_bytes(b"garbage" * 10)
    for name in ("objects.pt", "garbage.pt"):
        with pytest.raises(InputError) as err:
            load_checkpoint(tmp_path / name)
        assert str(err.value) == (
            f"{tmp_path / name}: cannot read checkpoint: not an ablate checkpoint (torch.load "
            "with weights_only=True refused it: a corrupt file, or one holding Python objects "
            "besides tensors and plain data)"
        )
    saved = (tmp_path / "ok.pt").read_bytes()  # cut in half, and a text file (audit)
    (tmp_path / "half.pt").write_bytes(saved[: len(saved) // 2])
    (tmp_path / "text.pt").write_text("epoch 101\n")
    for name in ("half.pt", "text.pt"):
        with pytest.raises(InputError) as err:
            load_checkpoint(tmp_path / name)
        assert str(err.value).startswith(
            f"{tmp_path / name}: cannot read checkpoint: not a readable torch file (corrupt, "
            "truncated or another format; "
        ), str(err.value)
    with pytest.raises(ValueError, match="unknown checkpoint keys"):
        make_checkpoint({}, {}, 0, 0, optimiser={})


def _update_norm(tiny: dict, grad_clip: float | None) -> float:
    """Norm of one plain-SGD (lr 1, fp32) update of the tiny model's weights."""
    tiny["optimizer"] = {"kind": "sgd", "lr": 1.0, "momentum": 0.0, "nesterov": False}
    tiny["train"].update(precision="fp32", grad_clip=grad_clip, batch_size=1)
    step = build_bench_step(parse_trial_config(tiny))
    before = [p.detach().clone() for p in step.train.model.parameters()]
    step.step()
    after = list(step.train.model.parameters())
    return math.sqrt(
        sum(float((a - b).detach().pow(2).sum()) for a, b in zip(after, before, strict=True))
    )


def test_grad_clip_null_leaves_gradients_unclipped(tiny: dict) -> None:
    """``train.grad_clip: null`` (the papers that never clip) vs nnU-Net's norm clipping: with
    SGD at lr 1 the update is the gradient, so only the clipped step's norm is the cap."""
    clipped = _update_norm(dict(tiny, train=dict(tiny["train"])), 1e-3)
    free = _update_norm(tiny, None)
    assert clipped == pytest.approx(1e-3, rel=1e-2)
    assert free > 10 * clipped
