"""End-to-end sweeps: local Ray (2 CPUs), a temporary SQLite MLflow, the real engine.

Slow (tens of seconds each): the smoke study with its MLflow structure and winners, an
interrupted sweep resumed without re-running finished trials, and a sweep where one trial fails
and one runs out of memory while the others finish.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from ablate_sweep_helpers import REPO, mlflow_uri, tiny_trial, write_space
from ray import tune

from orchestrator import tracking
from orchestrator.cli import main
from orchestrator.sweep import SweepOptions, run_sweep
from orchestrator.winners import find_winners
from tests.fault_trainable import oom_trainable
from trainables.data.synth import synthesize_dataset

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray", "sweep_workdir")]

SMOKE = REPO / "search_spaces" / "smoke.yaml"
EPOCH_METRICS = {
    "train/loss",
    "val/loss",
    "val/dice_wt",
    "val/dice_tc",
    "val/dice_et",
    "val/dice_mean",
}


def _runs(uri: str, name: str) -> tuple[Any, Any, list[Any]]:
    client = tracking.connect(uri)
    parent = tracking.find_sweep(client, name)
    return client, parent, tracking.child_runs(client, parent)


def test_smoke_sweep_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = mlflow_uri(tmp_path)
    args = ["sweep", str(SMOKE), "--tracking-uri", uri, "--storage", str(tmp_path / "ray")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "Trial Status" not in err and "╭" not in err  # Ray's own tables stay quiet
    client, parent, children = _runs(uri, "smoke")

    tags = parent.data.tags
    assert parent.info.status == "FINISHED" and tags["ablate.space_file"] == str(SMOKE)
    assert len(tags["ablate.space_hash"]) == 64 and tags["ablate.git_commit"]
    assert (
        tags["ablate.ray_version"]
        and tags["ablate.torch_version"]
        and len(tags["ablate.split_hash"]) == 16
    )
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "space")] == [
        "space/smoke.yaml"
    ]

    keys = sorted(r.data.tags["ablate.trial_key"] for r in children)
    cells = [f"attention={a},deep_supervision={d}" for a in ("false", "true") for d in (0, 1)]
    assert keys == sorted(f"{c}/seed{s}" for c in cells for s in (0, 1))
    for run in children:
        key = run.data.tags["ablate.trial_key"]
        assert f"started   {key} (3 epochs" in err
        assert f"finished  {key}: best val/dice_mean " in err and ", after 3 of 3 epochs" in err
        assert run.info.status == "FINISHED" and run.data.tags["ablate.outcome"] == "finished"
        params = run.data.params
        assert params["model.attention"] == key.split(",")[0].split("=")[1]
        assert params["seed"] == key[-1] and params["model.kind"] == "attention_unet"
        perf = {"perf/epoch_s", "perf/step_ms", "perf/data_wait_frac", "perf/voxels_per_s"}
        assert EPOCH_METRICS | perf | {"best/val/dice_mean", "best/epoch"} <= set(run.data.metrics)
        names = ("ablate.torch_version", "ablate.gpu_name", "ablate.precision_trained")
        versions = {k: run.data.tags.get(k) for k in names}
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
        assert versions == dict(zip(names, (torch.__version__, gpu, "fp32"), strict=True))
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/dice_mean")]
        assert steps == [1, 2, 3]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert artifacts == {
            "checkpoint",
            "config",
            "per_case",
            "preview.png",
            "learning_curves.png",
        }
        assert [a.path for a in client.list_artifacts(run.info.run_id, "per_case")] == [
            "per_case/test.csv",
            "per_case/val.csv",
        ]
        # the selected checkpoint, tested once on the split's 2 test cases (tiny.yaml)
        assert run.data.tags["ablate.test_cases"] == "2" and run.data.metrics["test/cases"] == 2
        assert {"test/dice_mean", "test/dice_wt", "test/lesion_dice_wt"} <= set(run.data.metrics)
        test_steps = client.get_metric_history(run.info.run_id, "test/dice_mean")
        assert [m.step for m in test_steps] == [0]
        assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")] == [
            "checkpoint/best.pt"
        ]

    assert main(["winners", "smoke", "--tracking-uri", uri, "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert sorted(row["cell"] for row in table["cells"]) == sorted(cells)
    assert all(row["n"] == 2 for row in table["cells"]) and table["cells"][0]["status"] == "best"
    assert table["compared_on"] == "test" and table["test_metric"] == "test/dice_mean"
    held = {k: parent.data.params[k] for k in ("resources.cpu", "resources.gpu")}
    assert held == {"resources.cpu": "1", "resources.gpu": "0"}  # smoke.yaml: CPU trials
    assert table["cost_unit"] == "CPU-hours" and table["cells"][0]["cost_hours"] > 0
    assert all(row["test_mean"] is not None for row in table["cells"])
    assert client.get_run(table["winner_run_id"]).data.tags["winner"] == "true"
    assert main(["report", "smoke", "--tracking-uri", uri, "--out", str(tmp_path / "r.md")]) == 0
    # the best cell may also be the cheapest of its ties (measured epoch times decide)
    assert re.search(r"\| best(, cheapest tie)? \|", (tmp_path / "r.md").read_text())


class InterruptOnce(tune.Callback):
    """Ctrl-C (a real SIGINT) once the first trial has finished; once per marker file, since
    Tune restores its callbacks on resume."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self.marker.exists():
            self.marker.touch()
            signal.raise_signal(signal.SIGINT)


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = mlflow_uri(tmp_path)
    space = write_space(
        tmp_path,
        "name: resumable\nextends: trial.yaml\ngrid: {optimizer.lr: [0.003, 0.001]}\nseeds: 2\n",
    )
    storage = f"file://{tmp_path}/ray"  # a storage URI, as on a cluster (s3://...)
    opts = SweepOptions(
        space, tracking_uri=uri, storage=storage, callbacks=[InterruptOnce(tmp_path / "fired")]
    )
    first = run_sweep(opts)
    assert (
        first.interrupted
        and first.counts.get("finished", 0) >= 1
        and first.counts["unfinished"] >= 1
    )
    client, parent, children = _runs(uri, "resumable")
    assert parent.info.status == "KILLED"
    done = {
        r.data.tags["ablate.trial_key"]: r.info.run_id
        for r in children
        if r.info.status == "FINISHED"
    }
    ended = {r.info.run_id: r.info.end_time for r in children if r.info.status == "FINISHED"}
    assert 1 <= len(done) < 4
    assert all(r.info.status == "KILLED" for r in children if r.info.run_id not in done.values())
    capsys.readouterr()

    assert main(["sweep", str(space), "--storage", storage]) == 2  # exists: not silently redone
    assert "already exists" in capsys.readouterr().err
    second = run_sweep(SweepOptions(space, storage=storage, resume=True))  # URI from the sweep
    err = capsys.readouterr().err
    assert not second.interrupted and second.counts == {"finished": 4}
    client, parent, children = _runs(uri, "resumable")
    assert parent.info.status == "FINISHED"
    keys = [r.data.tags["ablate.trial_key"] for r in children]
    assert sorted(keys) == sorted(f"lr={lr}/seed{s}" for lr in ("0.003", "0.001") for s in (0, 1))
    assert all(r.info.status == "FINISHED" for r in children)
    for key, run_id in done.items():  # finished before the interrupt: same run, not trained again
        assert f"started   {key}" not in err
        assert [r.info.run_id for r in children if r.data.tags["ablate.trial_key"] == key] == [
            run_id
        ]
        assert [m.step for m in client.get_metric_history(run_id, "val/dice_mean")] == [1, 2]
        assert client.get_run(run_id).info.end_time == ended[run_id]  # Duration unchanged


def test_failing_and_out_of_memory_trials_are_recorded_while_others_finish(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = mlflow_uri(tmp_path)
    tiny_trial(tmp_path)
    # A dataset on disk (every cell's, so all split the same cases) whose cases lack the CT
    # channel the "bad" cell asks for: validation cannot know what a directory holds, so the
    # trial fails on the worker, as a real one would.
    synthesize_dataset(tmp_path / "mri", cases=4, shape=(32, 32, 32))
    space = write_space(
        tmp_path,
        "name: faults\nextends: trial.yaml\nmax_failures: 1\n"
        f"base: {{data.root: {tmp_path / 'mri'}}}\n"
        "variants:\n  - {label: ok}\n  - {label: bad, overrides: {data.modalities: [ct]}}\n"
        # needs far more memory than any trial before it, so even an actor reused from those
        # (with freed heap to spare) hits the cap
        "  - {label: big, overrides: {train.batch_size: 16}}\n",
    )
    opts = SweepOptions(space, tracking_uri=uri, storage=str(tmp_path / "ray"))
    opts.trainable = oom_trainable({"big/seed0"})  # the test hook: a real OOM in that trial
    result = run_sweep(opts)
    err = capsys.readouterr().err
    assert result.counts == {"failed": 1, "finished": 1, "infeasible": 1}, err
    assert result.restarted == 1  # bad/seed0, once (max_failures: 1)
    assert "retrying  bad/seed0 after: " in err and "failed    bad/seed0: InputError: " in err
    _, parent, children = _runs(uri, "faults")
    runs = {r.data.tags["ablate.trial_key"]: r for r in children}
    assert set(runs) == {"ok/seed0", "bad/seed0", "big/seed0"} and parent.info.status == "FINISHED"
    assert runs["ok/seed0"].info.status == "FINISHED"
    bad = runs["bad/seed0"]
    assert bad.info.status == "FAILED" and bad.data.tags["ablate.attempts"] == "2"
    assert "case Synth_0000 has no ct" in bad.data.tags["ablate.error"]
    big = runs["big/seed0"]
    assert big.info.status == "FAILED" and big.data.tags["ablate.outcome"] == "infeasible"
    assert big.data.tags["infeasible"].startswith("out of memory")
    assert "iB" in big.data.tags["infeasible"]  # the memory figure
    assert "(injected: address space capped at +64 MiB)" in big.data.tags["infeasible"]
    # The sweep says which trials gave no result and exits 2: both are inputs to fix.
    problems = {p.key: p for p in result.problems}
    assert set(problems) == {"bad/seed0", "big/seed0"} and result.exit_code == 2
    assert problems["bad/seed0"].outcome == "failed"
    assert problems["bad/seed0"].message.startswith("InputError: ")
    assert "case Synth_0000 has no ct" in problems["bad/seed0"].message
    assert problems["big/seed0"].outcome == "infeasible"


def test_optuna_search_with_asha_pools_seeds_per_suggestion(tmp_path: Path) -> None:
    uri = mlflow_uri(tmp_path)
    space = write_space(
        tmp_path,
        "name: search\nextends: trial.yaml\nbase: {train.epochs: 3}\nseeds: 2\n"
        "sample: {optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}}\n"
        "search: {kind: optuna, num_samples: 2}\n"
        "scheduler: {kind: asha, grace_period: 1, reduction_factor: 2}\n",
    )
    result = run_sweep(SweepOptions(space, tracking_uri=uri, storage=str(tmp_path / "ray")))
    assert sum(result.counts.values()) == 4 and set(result.counts) <= {"finished", "stopped_early"}
    client, _, children = _runs(uri, "search")
    by_cell: dict[str, list[Any]] = {}
    for run in children:
        by_cell.setdefault(run.data.tags["ablate.cell"], []).append(run)
    assert len(by_cell) == 2  # one cell per Optuna suggestion, its seeds pooled
    for cell, runs in by_cell.items():
        assert sorted(r.data.tags["ablate.seed"] for r in runs) == ["0", "1"]
        lrs = {r.data.params["optimizer.lr"] for r in runs}
        assert len(lrs) == 1 and 1e-4 <= float(lrs.pop()) <= 1e-2
        assert cell.startswith("base,lr=") and all(
            "#" in r.data.tags["ablate.trial_key"] for r in runs
        )
    assert {r.data.tags["ablate.outcome"] for r in children} <= {"finished", "stopped_early"}
    # the table ranks each cell on its complete runs; ASHA's stopped ones count as outcomes
    complete = {c: sum(r.data.tags["ablate.outcome"] == "finished" for r in runs)
                for c, runs in by_cell.items()}  # fmt: skip
    table = find_winners(client, "search")
    assert {cell.label: cell.n for cell in table.cells} == complete
    assert table.missing == 4 - sum(complete.values())


def test_a_case_left_out_of_every_trial_is_listed_at_the_end_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import nibabel as nib
    import numpy as np

    uri = mlflow_uri(tmp_path)
    root = tmp_path / "mri"
    synthesize_dataset(root, cases=5, shape=(32, 32, 32))
    bad = root / "Synth_0004" / "Synth_0004_t2.nii.gz"
    image = nib.load(bad)
    voxels = image.get_fdata(dtype=np.float32)
    voxels[0, 0, :4] = np.nan
    nib.save(nib.Nifti1Image(voxels, image.affine), bad)
    space = write_space(tmp_path, "name: leftout\nextends: trial.yaml\nvariants: [{label: only}]\n")
    args = ["sweep", str(space), "--data", str(root), "--tracking-uri", uri]
    assert main([*args, "--storage", str(tmp_path / "ray")]) == 2  # trained, on fewer cases
    err = capsys.readouterr().err
    problem = f"{bad}: t2 has 4 NaN and 0 infinite voxels"
    summary = "ablate: 1 case(s) of the data were left out of every trial (the results are from"
    assert summary in err and err.rindex(problem) > err.index(summary), err  # listed at the end
    _, parent, children = _runs(uri, "leftout")
    assert [r.info.status for r in children] == ["FINISHED"]  # the trial ran on the other 4
    assert parent.data.tags["ablate.left_out_cases"] == problem
