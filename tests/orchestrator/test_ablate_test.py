"""``ablate test``: finished runs' best models evaluated afterwards, against a real SQLite MLflow
store holding runs trained by the engine (``train_trial`` with a checkpoint directory)."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from ablate_sweep_helpers import mlflow_uri, tiny_trial

from orchestrator import provenance, tracking
from orchestrator.cli import main
from trainables.config.trial import load_trial_config
from trainables.data.synth import synthesize_dataset
from trainables.engine.data import prepare_trial_data
from trainables.engine.train import TrainResult, train_trial

SPLIT = {"kind": "holdout", "fractions": [0.5, 0.25, 0.25]}  # 6 cases: 3 train, 2 val, 1 test


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainResult, str]:
    """One tiny trial trained to the end: (checkpoint dir, result, split hash)."""
    folder = tmp_path_factory.mktemp("trained")
    path = tiny_trial(folder, data={"split": SPLIT})
    data = yaml.safe_load(path.read_text())
    data["data"]["synthetic"]["cases"] = 6
    path.write_text(yaml.safe_dump(data))
    cfg = load_trial_config(path)
    result = train_trial(cfg, checkpoint_dir=folder / "ckpt")
    return folder / "ckpt", result, prepare_trial_data(cfg.data).split.hash


def _sweep(uri: str, checkpoint: Path, split: str) -> tuple[object, dict[str, str]]:
    """A sweep of 3 finished runs logged like the callbacks do, without test metrics; run
    ``c/seed0`` has no best model. Returns (client, run key -> run id)."""
    client = tracking.connect(uri)
    experiment = tracking.ensure_experiment(client, "study")
    tags = provenance.parent_tags({"ablate.metric": "val/dice_mean", "ablate.mode": "max"})
    parent = tracking.open_parent_run(client, experiment, "study", "/r", tags)
    runs = {}
    for cell in ("a", "b", "c"):
        tags = {"ablate.cell": cell, "ablate.seed": "0", "ablate.split_hash": split}
        run_id, _ = tracking.open_child_run(client, experiment, parent, f"{cell}/seed0", tags)
        tracking.log_metrics(client, run_id, {"best/val/dice_mean": 0.5}, 0)
        if cell != "c":
            client.log_artifact(run_id, str(checkpoint / "best.pt"), "checkpoint")
        client.set_terminated(run_id, status="FINISHED")
        runs[f"{cell}/seed0"] = run_id
    return client, runs


def test_ablate_test_logs_test_metrics_and_names_runs_without_a_checkpoint(
    trained: tuple[Path, TrainResult, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, result, split = trained
    uri = mlflow_uri(tmp_path)
    client, runs = _sweep(uri, checkpoint, split)
    assert main(["test", "study", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "tested 1/3 a/seed0: test/dice_mean " in err and "on 1 cases" in err
    assert re.search(r"  a/seed0: test 1/1 Synth_\d{4}: dice_mean \d\.\d{4} \(", err), err
    assert "2 runs tested (test/ metrics, per_case/test.csv)" in err
    assert "1 runs could not be tested:" in err
    assert f"c/seed0: run {runs['c/seed0']} has no checkpoint/best.pt artifact" in err
    run = client.get_run(runs["a/seed0"])
    # the same weights on the same case as the engine's own test pass after training
    assert run.data.metrics["test/dice_mean"] == pytest.approx(result.final["test/dice_mean"])
    assert run.data.metrics["test/lesion_dice_wt"] == result.final["test/lesion_dice_wt"]
    assert run.data.tags["ablate.test_cases"] == "1"
    history = client.get_metric_history(runs["a/seed0"], "test/dice_mean")
    assert [m.step for m in history] == [0]
    listed = {a.path for a in client.list_artifacts(runs["a/seed0"], "per_case")}
    assert listed == {"per_case/test.csv"}

    assert main(["test", "study", "--tracking-uri", uri]) == 2
    assert (
        "2 of 3 finished runs of sweep 'study' already have test/ metrics (e.g. a/seed0); "
        "pass --overwrite to evaluate them again, or --missing to test only the others"
        in capsys.readouterr().err
    )
    # --missing continues: a/ and b/ were tested before and stay as they were; c/ still fails
    assert main(["test", "study", "--tracking-uri", uri, "--missing"]) == 2
    err = capsys.readouterr().err
    assert "0 runs tested (test/ metrics, per_case/test.csv); 2 tested before, left as" in err
    assert "c/seed0: run " in err
    assert [m.step for m in client.get_metric_history(runs["a/seed0"], "test/dice_mean")] == [0]
    assert main(["test", "study", "--tracking-uri", uri, "--overwrite"]) == 2
    assert "2 runs tested" in capsys.readouterr().err

    # every finished run tested already (as a sweep leaves them): nothing to do, not an error
    client.set_terminated(runs["c/seed0"], status="FAILED")
    assert main(["test", "study", "--tracking-uri", uri]) == 0
    err = capsys.readouterr().err
    assert "0 runs tested (test/ metrics, per_case/test.csv); 2 tested before" in err
    assert "nothing to test: every finished run already has test/ metrics" in err


def test_an_external_test_set_is_logged_under_its_own_prefix(
    trained: tuple[Path, TrainResult, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, _, split = trained
    uri = mlflow_uri(tmp_path)
    client, runs = _sweep(uri, checkpoint, split)
    synthesize_dataset(tmp_path / "external", 3, seed=7, shape=(32, 32, 32))
    (blank,) = (tmp_path / "external").rglob("Synth_0002_flair.nii.gz")
    image = nib.load(blank)
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.float32), image.affine), blank)
    args = ["test", "study", "--tracking-uri", uri, "--data", str(tmp_path / "external")]
    assert main(args) == 2  # run c has no checkpoint, and a case of --data is bad input
    err = capsys.readouterr().err
    assert "test_ext/dice_mean" in err and "on 2 cases" in err
    assert (
        f"data: preparing {(tmp_path / 'external').resolve()}: 3/3 cases read" in err
    )  # was silent
    left_out = f"{blank}: flair is constant (every voxel is 0): an empty or broken file"
    assert f"1 case(s) of {(tmp_path / 'external').resolve()} left out of the test:" in err
    assert err.count(left_out) == 1  # named once, not once per run
    assert "1 case(s) of " in err.splitlines()[-1] and "were left out (bad input)" in err
    run = client.get_run(runs["b/seed0"])
    assert run.data.tags["ablate.test_ext.cases"] == "2"
    assert run.data.tags["ablate.test_ext.left_out"] == left_out
    assert run.data.tags["ablate.test_ext.data"] == str((tmp_path / "external").resolve())
    assert "test_ext/dice_wt" in run.data.metrics and "test/dice_wt" not in run.data.metrics
    listed = {a.path for a in client.list_artifacts(runs["b/seed0"], "per_case")}
    assert listed == {"per_case/test_ext.csv"}
    assert main([*args, "--missing"]) == 2  # the same folder: a and b left; c still fails
    assert "0 runs tested (test_ext/ metrics, per_case/test_ext.csv); 2 tested before" in (
        capsys.readouterr().err
    )
    other = tmp_path / "other"  # another folder: not 'already tested', not silently replaced
    synthesize_dataset(other, 2, seed=8, shape=(32, 32, 32))
    assert main([*args[:-1], str(other)]) == 2
    assert (
        f"2 finished runs of sweep 'study' hold test_ext/ results on "
        f"{(tmp_path / 'external').resolve()}, not {other.resolve()}; a run keeps one external "
        "test set: pass --overwrite"
    ) in capsys.readouterr().err
    assert main([*args[:-1], str(other), "--overwrite"]) == 2  # run c still has no checkpoint
    tags = client.get_run(runs["b/seed0"]).data.tags
    assert tags["ablate.test_ext.data"] == str(other.resolve())
    assert "ablate.test_ext.left_out" not in tags  # the first set's, not this one's (audit)


def test_a_run_stopped_before_deciding_its_post_processing_decides_it_when_tested(
    trained: tuple[Path, TrainResult, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``largest_component: auto`` decides after the last epoch; a run a scheduler stopped
    earlier saved its model undecided: ``ablate test`` decides it on the run's validation cases
    and replaces the run's model with one that carries the decision (for ``ablate predict``)."""
    from trainables.engine.checkpoint import load_checkpoint, save_checkpoint

    checkpoint, _, split = trained
    undecided = load_checkpoint(checkpoint / "best.pt")
    undecided["config"]["validation"]["test_postprocess"] = {"largest_component": "auto"}
    save_checkpoint(undecided, tmp_path / "ckpt" / "best.pt")
    uri = mlflow_uri(tmp_path)
    client, runs = _sweep(uri, tmp_path / "ckpt", split)
    assert main(["test", "study", "--tracking-uri", uri]) == 2  # run c has no checkpoint
    err = capsys.readouterr().err
    assert "  a/seed0: post-processing decided on 1 validation case (nnU-Net's rule):" in err
    assert "  a/seed0:   largest component of the foreground: Dice " in err
    assert re.search(r"  a/seed0: postprocess 1/1 Synth_\d{4} predicted \(", err), err
    run_id = runs["a/seed0"]
    metrics = client.get_run(run_id).data.metrics
    assert metrics["postprocess/val_cases"] == 1.0 and "test/dice_mean" in metrics
    history = client.get_metric_history(run_id, "postprocess/largest_component")
    assert [m.step for m in history] == [0]
    folder = client.download_artifacts(run_id, "checkpoint/best.pt", str(tmp_path / "down"))
    stored = load_checkpoint(folder)["config"]["validation"]["test_postprocess"]
    assert stored["largest_component"] == bool(metrics["postprocess/largest_component"])
    chosen = [r for r in ("wt", "tc", "et") if metrics[f"postprocess/largest_component_{r}"]]
    assert stored["largest_component_regions"] == chosen


def test_an_overwrite_leaves_no_value_of_the_earlier_evaluation(tmp_path: Path) -> None:
    """MLflow cannot delete a metric: an RVD the new test set leaves undefined (no ET in its
    references) kept the old set's value beside the new set's tag (audit)."""
    from orchestrator.test_tracking import log_test

    client = tracking.connect(mlflow_uri(tmp_path))
    experiment = tracking.ensure_experiment(client, "s")
    run_id = client.create_run(experiment).info.run_id
    log_test(client, run_id, {"test_ext/rvd_et": 1.89, "test_ext/dice_wt": 0.5}, prefix="test_ext")
    held = client.get_run(run_id).data.metrics  # what ablate test read before evaluating
    log_test(client, run_id, {"test_ext/rvd_et": float("nan")}, prefix="test_ext", earlier=held)
    metrics = client.get_run(run_id).data.metrics
    assert np.isnan(metrics["test_ext/rvd_et"]) and np.isnan(metrics["test_ext/dice_wt"])
    held = client.get_run(run_id).data.metrics
    log_test(client, run_id, {"test_ext/dice_wt": 0.7}, prefix="test_ext", earlier=held)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["test_ext/dice_wt"] == 0.7 and np.isnan(metrics["test_ext/rvd_et"])


def test_overwrite_and_missing_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """They answer "tested already?" oppositely: given both, say so (was: --overwrite won)."""
    with pytest.raises(SystemExit) as exit_:
        main(["test", "study", "--overwrite", "--missing"])
    assert exit_.value.code == 2
    assert "argument --missing: not allowed with argument --overwrite" in capsys.readouterr().err


def test_a_missing_external_test_set_is_refused_once_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    uri = mlflow_uri(tmp_path)
    assert main(["test", "study", "--tracking-uri", uri, "--data", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("test data directory not found") == 1
    assert f"--data: {missing}: test data directory not found" in err


def test_test_data_of_another_kind_is_named_by_what_it_lacks(
    trained: tuple[Path, TrainResult, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty folder is refused once, not once per run; CT cases for a BraTS model name the
    labels and the weights that do not fit (was torch's header line, ending in a colon)."""
    from trainables.data.synth_ct import synthesize_ct_dataset

    checkpoint, _, split = trained
    uri = mlflow_uri(tmp_path)
    _sweep(uri, checkpoint, split)
    (tmp_path / "empty").mkdir()
    args = ["test", "study", "--tracking-uri", uri, "--data"]
    assert main([*args, str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.count("dataset directory is empty") == 1
    synthesize_ct_dataset(tmp_path / "ct", 2, 0, (32, 32, 32))
    assert main([*args, str(tmp_path / "ct")]) == 2
    err = capsys.readouterr().err
    assert (
        "failed 1/3 a/seed0: the checkpoint does not fit a attention_unet with 2 outputs for the "
        "binary (foreground) labels of the test data: the run was trained on other labels "
        "(size mismatch for heads.0.weight: copying a param with shape torch.Size([4, 4, 1, 1, 1])"
    ) in err


def test_a_run_on_another_split_is_refused_by_name(
    trained: tuple[Path, TrainResult, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, _, _ = trained
    uri = mlflow_uri(tmp_path)
    _sweep(uri, checkpoint, "0123456789ab")
    assert main(["test", "study", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "a/seed0: the data gives split " in err
    assert "the run trained on split 0123456789ab (the dataset changed?)" in err


def test_an_old_foreground_model_is_not_normalised_with_the_test_datas_labels(
    tmp_path: Path,
) -> None:
    """A run whose config lacks the training-set statistics of 'foreground' normalisation
    (trained before they were stored) must not get them from the external test labels."""
    from orchestrator.test_runs import CaseSource
    from trainables.config.trial import parse_trial_config
    from trainables.errors import InputError

    data = yaml.safe_load(tiny_trial(tmp_path).read_text())
    data["data"]["preprocess"] = {"normalization": {"kind": "foreground"}}
    (tmp_path / "external").mkdir()
    with pytest.raises(InputError, match=r"normalization.stats: the run's 'foreground' norm"):
        CaseSource(tmp_path / "external").cases(parse_trial_config(data), None)


def test_a_resampling_model_without_its_spacing_is_not_given_the_test_datas(
    tmp_path: Path,
) -> None:
    """The target spacing is the training dataset's grid: an external set's own median is
    another grid, so a config without it is refused, naming the field."""
    from orchestrator.test_runs import CaseSource
    from trainables.config.trial import parse_trial_config
    from trainables.errors import InputError

    data = yaml.safe_load(tiny_trial(tmp_path).read_text())
    data["data"]["preprocess"] = {"resample": {"kind": "target_spacing"}}
    (tmp_path / "external").mkdir()
    with pytest.raises(InputError, match=r"resample.spacing: the run's 'target_spacing' resam"):
        CaseSource(tmp_path / "external").cases(parse_trial_config(data), None)


def test_runs_trained_with_a_given_scheme_are_tested_on_an_msd_folder_without_label_names(
    trained: tuple[Path, TrainResult, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """dataset.json without "labels" is refused for ``auto`` (MSD Task01's and BraTS 2023's
    codes differ), but a run trained with ``data.label_scheme`` set reads the folder that way:
    the up-front check read it with ``auto`` and refused every run."""
    import torch

    from tests.trainables.data.nifti_factory import (
        MSD_MODALITY_JSON,
        msd_dataset,
        write_dataset_json,
    )

    checkpoint, _, split = trained
    saved = torch.load(checkpoint / "best.pt", weights_only=False)
    saved["config"]["data"]["label_scheme"] = "msd_brats"
    (tmp_path / "ckpt").mkdir()
    torch.save(saved, tmp_path / "ckpt" / "best.pt")
    uri = mlflow_uri(tmp_path)
    _sweep(uri, tmp_path / "ckpt", split)
    msd = tmp_path / "msd"
    msd_dataset(msd, ["BRATS_001", "BRATS_002"], shape=(32, 32, 32))
    write_dataset_json(msd, {"modality": MSD_MODALITY_JSON})  # no "labels"
    assert main(["test", "study", "--tracking-uri", uri, "--data", str(msd)]) == 2  # run c
    err = capsys.readouterr().err
    assert 'no "labels" entry' not in err, err
    assert re.search(r"tested \d/3 a/seed0: test_ext/dice_mean", err), err
    assert "failed 3/3 c/seed0" in err, err


def test_a_split_without_test_cases_says_so_and_where_to_test(
    trained: tuple[Path, TrainResult, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every run "tested before" was the message for runs tested on 0 cases (audit)."""
    from orchestrator.test_tracking import log_test

    checkpoint, _, split = trained
    uri = mlflow_uri(tmp_path)
    client, runs = _sweep(uri, checkpoint, split)
    for run_id in runs.values():  # what the sweep logs when the split has no test case
        log_test(client, run_id, {"test/cases": 0.0})
    assert main(["test", "study", "--tracking-uri", uri]) == 0
    err = capsys.readouterr().err
    assert (
        "nothing to test: the sweep's split holds no test cases (data.split's test fraction is "
        "0); test the runs on a labelled set kept apart with --data DIR"
    ) in err
