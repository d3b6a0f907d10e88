"""The Ray Tune Trainable, driven directly (no Ray cluster needed): trial resolution, epochs,
checkpoints, actor reuse, out-of-memory outcomes and the preview PNG."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from orchestrator.expand import make_cells
from orchestrator.space import SpaceFile
from tests.fault_trainable import memory_fault, oom_trainable
from trainables.config.trial import parse_trial_config
from trainables.engine.checkpoint import load_checkpoint
from trainables.engine.per_case import read_per_case_csv
from trainables.engine.runner import TrialDiverged, TrialOutOfMemory
from trainables.trainable import (
    BEST_MODEL_FILE,
    PER_CASE_FILE,
    PREVIEW_FILE,
    TRAINING_STATE_FILE,
    TRIAL_META_FILE,
    AblateTrainable,
    _outcome,
    resolve_trial,
)

TINY = Path(__file__).resolve().parents[2] / "search_spaces" / "base" / "tiny.yaml"


@pytest.fixture
def micro(tmp_path: Path) -> dict[str, Any]:
    """A trial small enough for a unit test: 2 epochs of one step on 4 cases of 24x24x16."""
    data = yaml.safe_load(TINY.read_text())
    data["model"].update(filters=[2, 4], deep_supervision=0, bottleneck_depth=0)
    data["sampling"]["patch_size"] = [16, 16, 16]
    data["data"] = {
        "synthetic": {"cases": 4, "shape": [24, 24, 16], "seed": 0},
        "split": {"kind": "holdout", "fractions": [0.5, 0.5, 0.0]},
        "cache_dir": str(tmp_path / "cache"),
    }
    data["train"].update(epochs=2, iterations_per_epoch=1, batch_size=1)
    data["validation"] = {"max_cases": 1, "hd95": False}
    data["device"] = "cpu"
    return parse_trial_config(data).model_dump(mode="json")


def _tune_config(config: dict[str, Any], key: str = "a/seed0", **meta: Any) -> dict[str, Any]:
    head = {"metric": "val/dice_mean", "mode": "max", **meta}
    return {
        "ablate": head,
        "trial": {"key": key, "cell": key.split("/")[0], "seed": 0, "config": config},
    }


def test_resolve_grid_and_sampled_trials(micro: dict[str, Any]) -> None:
    spec = resolve_trial(_tune_config(micro), "t1")
    assert (spec.key, spec.cell, spec.seed) == ("a/seed0", "a", 0)
    sampled = {
        "ablate": {
            "metric": "val/dice_mean",
            "mode": "max",
            "cells": [{"label": "c", "config": micro}],
        },
        "cell": 0,
        "sample": {"optimizer.lr": 0.00123456, "model.attention": False},
        "__trial_index__": 2,
    }
    spec = resolve_trial(sampled, "abc_00003")
    assert spec.cell == "c,lr=0.001235,attention=false"
    assert spec.key == "c,lr=0.001235,attention=false/seed2#abc_00003"
    assert spec.config.seed == 2 and spec.config.optimizer.lr == pytest.approx(0.00123456)


def test_a_sampled_value_is_labelled_like_the_same_grid_value(micro: dict[str, Any]) -> None:
    grid = SpaceFile(name="s", grid={"model.attention": [False], "optimizer.lr": [0.00123456]})
    (cell,) = make_cells(grid)
    sampled = {
        "ablate": {
            "metric": "val/dice_mean",
            "mode": "max",
            "cells": [{"label": "c", "config": micro}],
        },
        "sample": {"model.attention": False, "optimizer.lr": 0.00123456},
    }
    spec = resolve_trial(sampled, "t")
    assert cell.label == "attention=false,lr=0.001235"
    assert spec.cell == f"c,{cell.label}"


def test_epochs_checkpoints_and_restore(micro: dict[str, Any], tmp_path: Path) -> None:
    trainable = AblateTrainable(_tune_config(micro))
    first = trainable.train()
    assert first["done"] is False and first["trial_key"] == "a/seed0" and first["epoch"] == 1.0
    assert {"train/loss", "val/loss", "val/dice_mean", "perf/epoch_s"} <= set(first)
    assert len(first["split_hash"]) == 16
    assert first["best/epoch"] == 1.0 and first["best/val/dice_mean"] == first["val/dice_mean"]
    trainable.save(str(tmp_path / "ckpt"))
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {TRAINING_STATE_FILE, BEST_MODEL_FILE, PREVIEW_FILE, PER_CASE_FILE} <= files
    assert TRIAL_META_FILE in files
    best = load_checkpoint(tmp_path / "ckpt" / BEST_MODEL_FILE)  # the one format, no optimizer
    assert best["epoch"] == 1 and "optimizer" not in best
    assert best["best"] == {"epoch": 1, "value": first["val/dice_mean"], "metric": "val/dice_mean"}
    state = load_checkpoint(tmp_path / "ckpt" / TRAINING_STATE_FILE)
    assert {"optimizer", "scheduler", "scaler"} <= set(state) and state["best"] == best["best"]
    rows = read_per_case_csv(tmp_path / "ckpt" / PER_CASE_FILE)
    assert len(rows) == 1 and rows[0]["case"] in trainable.runner.data.split.val
    assert rows[0]["val/dice_mean"] == pytest.approx(first["val/dice_mean"])
    assert {"val/dice_wt", "val/loss"} <= set(rows[0])
    second = trainable.train()
    trainable.stop()

    restored = AblateTrainable(_tune_config(micro))
    restored.restore(str(tmp_path / "ckpt"))
    again = restored.train()
    restored.stop()
    assert again["done"] is True and again["epoch"] == 2.0
    assert again["train/loss"] == pytest.approx(second["train/loss"], rel=1e-5)  # same epoch 2
    assert again["best/epoch"] == second["best/epoch"]  # the best survives the restore
    assert again["best/val/dice_mean"] == pytest.approx(second["best/val/dice_mean"])


def test_reset_reuses_prepared_data_for_the_same_data_config(micro: dict[str, Any]) -> None:
    trainable = AblateTrainable(_tune_config(micro))
    data = trainable.runner.data
    other = dict(micro, seed=1)
    assert trainable.reset_config(_tune_config(other, key="a/seed1"))
    assert trainable.runner.data is data and trainable.spec.key == "a/seed1"
    moved = {
        **micro,
        "data": {**micro["data"], "synthetic": {"cases": 4, "shape": [24, 24, 16], "seed": 5}},
    }
    assert trainable.reset_config(_tune_config(moved, key="b/seed0"))
    assert trainable.runner.data is not data
    trainable.stop()


def test_an_out_of_memory_epoch_is_a_final_infeasible_result(
    micro: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    trainable = oom_trainable({"a/seed0"}, headroom_mib=32)(_tune_config(micro))
    needed = 2**31

    # The engine's epoch stands in for one that needs more memory than the cap leaves (the slow
    # sweep test runs the real engine into the cap inside a Ray worker).
    def epoch_too_big() -> dict[str, float]:
        torch.empty(needed, dtype=torch.uint8)
        return {}

    monkeypatch.setattr(trainable.runner, "run_epoch", epoch_too_big)
    before = resource.getrlimit(resource.RLIMIT_AS)
    result = trainable.train()
    assert resource.getrlimit(resource.RLIMIT_AS) == before  # the cap is lifted again
    assert result["done"] is True and result["outcome"] == "infeasible"
    assert "out of memory: tried to allocate 2.00 GiB on the host" in result["error"]
    assert "(injected: address space capped at +32 MiB)" in result["error"]
    trainable.stop()


def test_memory_fault_caps_real_allocations_then_restores_the_limit() -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    with pytest.raises(RuntimeError, match="can't allocate memory") as caught:  # noqa: SIM117
        with memory_fault(headroom_mib=16):
            torch.empty(2**30, dtype=torch.uint8)
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert _outcome(caught.value) == {
        "outcome": "infeasible",
        "error": "out of memory: tried to allocate 1.00 GiB on the host",
    }
    assert torch.backends.mkldnn.enabled  # switched back on
    with memory_fault(None):  # no fault: no cap
        assert resource.getrlimit(resource.RLIMIT_AS) == before


def test_outcomes_are_only_memory_and_divergence() -> None:
    assert _outcome(TrialDiverged("diverged: loss nan"))["outcome"] == "diverged"
    assert _outcome(TrialOutOfMemory("out of memory: 70.1 GiB")) == {
        "outcome": "infeasible",
        "error": "out of memory: 70.1 GiB",
    }
    assert _outcome(MemoryError("Unable to allocate"))["outcome"] == "infeasible"
    assert _outcome(ValueError("a bug")) is None and _outcome(RuntimeError("other")) is None
