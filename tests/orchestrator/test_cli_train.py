"""``ablate train`` and ``ablate bench`` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli import main

ENGINE_TESTS = Path(__file__).resolve().parents[1] / "trainables" / "engine"
BASE_DIR = Path(__file__).resolve().parents[2] / "search_spaces" / "base"


def test_training_on_synthetic_cases_raises_validation_dice(capsys: pytest.CaptureFixture) -> None:
    assert main(["train", str(ENGINE_TESTS / "learn.yaml")]) == 0
    out = json.loads(capsys.readouterr().out)
    dice = [epoch["val/dice_mean"] for epoch in out["history"]]
    assert len(dice) == 8
    assert max(dice[-3:]) > dice[0] + 0.3, dice
    assert max(dice[-3:]) > 0.5, dice


def test_train_prints_progress_on_stderr_and_writes_the_best_checkpoint(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    args = [
        "train",
        str(BASE_DIR / "tiny.yaml"),
        "--epochs",
        "1",
        "--checkpoint-dir",
        str(tmp_path),
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "epoch 1/1  train/loss" in captured.err
    out = json.loads(captured.out)
    assert out["final"]["epoch"] == 1.0 and out["best_epoch"] == 1
    assert out["final"]["best/epoch"] == 1.0
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "state.pt").is_file()
    assert (tmp_path / "per_case_val.csv").read_text().startswith("case,val/dice_wt,")
    # the last epoch tests the selected weights on the split's 2 test cases (tiny.yaml)
    assert out["final"]["test/cases"] == 2.0 and "test/dice_mean" in out["final"]
    assert "test 2/2 " in captured.err and "test/dice_mean " in captured.err
    assert (tmp_path / "per_case_test.csv").read_text().startswith("case,test/dice_wt,")


def test_bad_trial_file_exits_2_naming_the_file(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    bad = tmp_path / "trial.yaml"
    bad.write_text(
        "model: {kind: attention_unet}\nloss: {kind: dice_ce}\noptimizer: {kind: nadm}\n"
    )
    assert main(["train", str(bad), "--smoke"]) == 2
    err = capsys.readouterr().err
    assert f"ablate: error: {bad}: invalid config:" in err
    assert "optimizer.kind: 'nadm' is not one of" in err and "(did you mean 'nadam'?)" in err


def test_missing_file_and_cuda_without_gpu_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "nope.yaml"]) == 2
    assert "ablate: error: nope.yaml: file not found" in capsys.readouterr().err
    assert main(["train", str(BASE_DIR)]) == 2
    assert f"ablate: error: {BASE_DIR}: is a directory, not a YAML file" in capsys.readouterr().err
    study = BASE_DIR.parent / "smoke.yaml"
    assert main(["train", str(study)]) == 2
    assert (
        f"ablate: error: {study}: this is a study (search-space) file, not a trial config: run it "
        "with `ablate sweep`" in capsys.readouterr().err
    )
    import torch

    if not torch.cuda.is_available():
        assert main(["train", str(BASE_DIR / "tiny.yaml"), "--device", "cuda", "--smoke"]) == 2
        assert "device: CUDA was requested but no GPU is visible" in capsys.readouterr().err


def test_an_unusable_output_path_exits_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--checkpoint-dir is checked before training (it was refused after the last epoch); any
    verb's path the system refuses is exit 2 with the path, not an OSError's exit 1."""
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    tiny = str(BASE_DIR / "tiny.yaml")
    assert main(["train", tiny, "--smoke", "--checkpoint-dir", str(a_file)]) == 2
    err = capsys.readouterr().err
    assert f"ablate: error: {a_file}: --checkpoint-dir: exists and is not a folder" in err
    assert "epoch" not in err  # refused before training
    assert main(["train", tiny, "--smoke", "--checkpoint-dir", str(a_file / "sub")]) == 2
    err = capsys.readouterr().err
    assert f"{a_file / 'sub'}: --checkpoint-dir: cannot write here (Not a directory)" in err
    assert main(["data", "synth", "--out", str(a_file / "sub"), "--cases", "1"]) == 2
    assert f"ablate: error: {a_file / 'sub'}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
        (["--warmup", "-1"], "argument --warmup: must be an integer >= 0, got -1"),
        (["--inference", "--shape", "0", "10", "10"], "argument --shape: must be an integer >= 1"),
        (["--inference", "--cases", "x"], "argument --cases: 'x' is not an integer"),
    ],
)
def test_bench_counts_and_shapes_are_checked_before_any_work(
    flags: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["bench", str(BASE_DIR / "tiny.yaml"), *flags])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--shape", "8", "8", "8", "--tta"], "--shape, --tta apply only with --inference"),
        (["--data", "nowhere"], "--data is read only with --pipeline (the step benchmark"),
        (["--inference", "--pipeline"], "--pipeline do(es) not apply to --inference"),
    ],
)
def test_bench_refuses_flags_its_benchmark_would_ignore(
    flags: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["bench", str(BASE_DIR / "tiny.yaml"), *flags]) == 2
    assert f"ablate: error: {message}" in capsys.readouterr().err


def test_bench_reports_step_time_and_throughput(capsys: pytest.CaptureFixture) -> None:
    args = ["bench", str(BASE_DIR / "tiny.yaml"), "--steps", "2", "--warmup", "1", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "attention_unet" and result["step_ms_median"] > 0
    assert result["voxels_per_s"] > 0 and result["patch_size"] == [32, 32, 32]


BASE_FILES = sorted(BASE_DIR.glob("*.yaml"))
MRI_FILES = [p for p in BASE_FILES if "modalities: [ct]" not in p.read_text()]


@pytest.mark.parametrize("path", BASE_FILES, ids=lambda p: p.stem)
def test_every_base_config_runs_smoke_on_synthetic_data(
    path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["train", str(path), "--smoke", "--device", "cpu"]) == 0
    final = json.loads(capsys.readouterr().out)["final"]
    assert final["epoch"] == 2.0 and 0.0 <= final["val/dice_mean"] <= 1.0


@pytest.mark.realdata
@pytest.mark.parametrize("path", MRI_FILES, ids=lambda p: p.stem)
def test_every_mri_base_config_runs_smoke_on_the_real_brats_sample(
    path: Path, brats_sample_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    from trainables.config.trial import load_trial_config

    split = load_trial_config(path).data.split
    if split.kind == "kfold" and split.folds > 3:
        pytest.skip(f"a {split.folds}-fold split needs {split.folds} cases; the sample has 3")
    args = ["train", str(path), "--smoke", "--device", "cpu", "--data", str(brats_sample_dir)]
    assert main(args) == 0
    final = json.loads(capsys.readouterr().out)["final"]
    assert {"val/dice_wt", "val/dice_tc", "val/dice_et"} <= set(final)


def test_bench_pipeline_compares_real_iterations_with_the_pure_step(
    capsys: pytest.CaptureFixture,
) -> None:
    args = ["bench", str(BASE_DIR / "tiny.yaml"), "--pipeline", "--steps", "2", "--warmup", "1"]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["iteration_ms"] > 0 and result["iteration_over_step"] > 0
    assert 0.0 <= result["data_wait_frac"] < 1.0


def test_bench_sizes_a_ct_trial_for_its_binary_labels(capsys: pytest.CaptureFixture) -> None:
    from trainables.config.trial import load_trial_config
    from trainables.engine.bench import build_bench_step, configured_scheme
    from trainables.engine.smoke import smoke_config

    cfg = smoke_config(load_trial_config(BASE_DIR / "nnunet_ct.yaml"))
    assert configured_scheme(cfg).region_names == ("fg",)
    step = build_bench_step(cfg)
    assert step.train.model(step.image)[0].shape[1] == 2  # softmax over background and haemorrhage
    assert int(step.label.max()) <= 1


def test_a_case_left_out_of_training_is_named_and_exits_2(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """Training goes on with the good cases; the bad one is named, in the JSON too, and the exit
    code says the data had bad input."""
    import nibabel as nib
    import numpy as np

    from trainables.data.synth import synthesize_dataset

    synthesize_dataset(tmp_path / "data", 7, seed=3, shape=(32, 32, 32))
    (bad,) = (tmp_path / "data").rglob("Synth_0006_t2.nii.gz")
    image = nib.load(bad)
    voxels = np.asarray(image.dataobj, dtype=np.float32)
    voxels[0, 0, :4] = np.nan
    nib.save(nib.Nifti1Image(voxels, image.affine), bad)
    args = ["train", str(BASE_DIR / "tiny.yaml"), "--data", str(tmp_path / "data"), "--smoke"]
    assert main([*args, "--epochs", "1"]) == 2
    captured = capsys.readouterr()
    problem = f"{bad}: t2 has 4 NaN and 0 infinite voxels"
    assert json.loads(captured.out)["left_out"] == [problem]
    assert "epoch 1/1" in captured.err  # trained on the 6 good cases
    assert captured.err.rstrip().endswith(problem)
    assert "1 case(s) of the data were left out (bad input):" in captured.err


def test_out_of_memory_is_bad_input_with_the_size(capsys: pytest.CaptureFixture) -> None:
    """A volume too large for the host (a real failed allocation) is exit 2 with the figure,
    not a MemoryError's exit 1; a trial's own out-of-memory message is kept whole."""
    import torch

    from orchestrator.cli import _out_of_memory
    from trainables.engine.runner import TrialOutOfMemory

    args = ["bench", str(BASE_DIR / "tiny.yaml"), "--inference", "--cases", "1"]
    assert main([*args, "--shape", "100000", "100000", "100000"]) == 2
    assert "ablate: error: out of memory: Unable to allocate 28.4 PiB" in capsys.readouterr().err
    with pytest.raises(RuntimeError) as host:
        torch.empty(2**44)  # 64 TiB of float32: refused at once by torch's CPU allocator
    assert _out_of_memory(host.value) == (
        "out of memory: tried to allocate 65536.00 GiB on the host; lower the batch size, the "
        "patch or the volume size (--shape)"
    )
    trial = TrialOutOfMemory("out of memory: model unet with batch 2 does not fit on cuda:0")
    assert _out_of_memory(trial) == str(trial)
    assert _out_of_memory(RuntimeError("something else")) is None
