"""The winners table on real sweeps (local Ray, SQLite MLflow, the real engine; slow).

A cell that cannot learn must be called worse, with the learning cell best and nearly sure to
rank first; a ``folds: 2`` sweep must pool its two fold runs per cell and pair them by fold.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ablate_sweep_helpers import mlflow_uri, tiny_trial, write_space

from orchestrator import tracking
from orchestrator.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray", "sweep_workdir")]


def _winners(name: str, uri: str, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["winners", name, "--tracking-uri", uri, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_cell_that_cannot_learn_is_called_worse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 8 synthetic cases, 4 of them validated every epoch (the per-case pairs), 6 epochs of 10
    # steps: the learning cell reaches a Dice far above the frozen one's in every seed.
    tiny_trial(
        tmp_path,
        data={
            "synthetic": {"cases": 8, "shape": [32, 32, 32], "seed": 0},
            "split": {"kind": "holdout", "fractions": [0.5, 0.5, 0.0]},
        },
        train={"epochs": 6, "iterations_per_epoch": 10},
        validation={"max_cases": 4, "hd95": False},
    )
    space = write_space(
        tmp_path,
        "name: learn\nextends: trial.yaml\nseeds: 3\n"
        "variants:\n  - {label: learns}\n"
        "  - {label: frozen, overrides: {optimizer.lr: 1.0e-9}}\n",
    )
    uri = mlflow_uri(tmp_path)
    args = ["sweep", str(space), "--tracking-uri", uri, "--storage", str(tmp_path / "ray")]
    assert main(args) == 0
    table = _winners("learn", uri, capsys)
    best, frozen = table["cells"]
    assert best["cell"] == "learns" and best["status"] == "best" and best["n"] == 3
    assert frozen["cell"] == "frozen" and frozen["status"] == "worse", frozen
    assert frozen["method"].startswith("case-paired: 3 run pairs x 4 cases")
    assert frozen["p_adjusted"] < 0.05 and frozen["delta_ci95"][1] < 0
    assert best["p_rank1"] >= 0.95
    assert main(["winners", "learn", "--tracking-uri", uri]) == 0
    text = capsys.readouterr().out
    assert "learns" in text and "worse" in text and "case-paired" in text


def test_folds_sweep_pools_its_fold_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(
        tmp_path,
        "name: folds\nextends: trial.yaml\nfolds: 2\nseeds: 2\n"
        "grid: {model.attention: [true, false]}\n",
    )
    uri = mlflow_uri(tmp_path)
    args = ["sweep", str(space), "--smoke", "--tracking-uri", uri]
    assert main([*args, "--storage", str(tmp_path / "ray")]) == 0
    client = tracking.connect(uri)
    parent = tracking.find_sweep(client, "folds-smoke")
    children = tracking.child_runs(client, parent)
    keys = sorted(r.data.tags["ablate.trial_key"] for r in children)
    assert keys == sorted(
        f"attention={a}/fold{f}/seed0" for a in ("true", "false") for f in (0, 1)
    )  # --smoke: one seed, both folds
    assert sorted(r.data.tags["ablate.fold"] for r in children) == ["0", "0", "1", "1"]
    assert len(set(parent.data.tags["ablate.split_hash"].split(","))) == 2
    table = _winners("folds-smoke", uri, capsys)
    assert [c["n"] for c in table["cells"]] == [2, 2] and table["smoke"] is True
    other = table["cells"][1]
    assert other["status"] in ("tied", "worse")
    assert other["method"] == "case-paired means: t over 2 folds", other
