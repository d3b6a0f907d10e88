"""What ``ablate sweep`` says and returns at its end, and what it checks of ``--data`` before
Ray starts (no Ray here: the sweep-level logic on its own)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest

from orchestrator.checks import check_data_dir
from orchestrator.commands.sweep import _resume_command, _say_outcome
from orchestrator.sweep import SweepResult
from orchestrator.tuner import TrialProblem
from trainables.data.synth import synthesize_dataset
from trainables.errors import InputError


def _result(*problems: TrialProblem, left_out: tuple[str, ...] = ()) -> SweepResult:
    counts = {"finished": 2}
    return SweepResult("study", "/runs/ray/study", "sqlite:///m.db", "p1", counts, False, "1",
                       list(problems), list(left_out))  # fmt: skip


BAD_DATA = TrialProblem("a/seed0", "failed", "InputError: data.root: dataset directory x not found")
OOM = TrialProblem("b/seed0", "infeasible", "out of memory: tried to allocate 2.0 GiB")
CRASH = TrialProblem("c/seed0", "failed", "RuntimeError: CUDA error: an illegal memory access")
IN_SETUP = TrialProblem("e/seed0", "failed", "trainables.errors.InputError: data.root: no such")
DIVERGED = TrialProblem("d/seed0", "diverged", "diverged: training loss is nan in epoch 3")


@pytest.mark.parametrize(
    ("problems", "code"),
    [
        ((), 0),
        ((DIVERGED,), 0),  # a config's own result, not a failure of the sweep
        ((BAD_DATA,), 2),
        ((OOM, DIVERGED), 2),
        ((BAD_DATA, CRASH), 1),  # something beyond the user's inputs went wrong too
        ((IN_SETUP,), 2),  # raised while the actor was set up: the error's full name
    ],
)
def test_exit_code_says_whether_every_trial_gave_a_result(
    problems: tuple[TrialProblem, ...], code: int
) -> None:
    assert _result(*problems).exit_code == code


def test_a_case_left_out_of_every_trial_is_bad_input() -> None:
    left_out = ("/d/Synth_0003/Synth_0003_t2.nii.gz: t2 has 4 NaN and 0 infinite voxels",)
    assert _result(left_out=left_out).exit_code == 2  # every trial gave a result, on fewer cases
    assert _result(CRASH, left_out=left_out).exit_code == 1


def test_results_mlflow_did_not_get_are_bad_input_with_the_command_that_sends_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = _result()
    result.tracking_uri, result.unsent_calls = "http://127.0.0.1:5000", 13
    args = argparse.Namespace(space=Path("s.yaml"), data=None, address=None, smoke=False)
    assert _say_outcome(args, result) == 2
    assert capsys.readouterr().err == (
        "ablate: MLflow at http://127.0.0.1:5000 stopped answering; 13 tracking calls were not "
        "sent. Tune kept every result in /runs/ray/study: once the server answers, ablate sweep "
        "s.yaml --resume --name study --storage /runs/ray sends them (finished trials are not "
        "trained again)\n"
    )
    result.problems = [CRASH]
    assert _say_outcome(args, result) == 1  # a crash is worse news than a missed write


def test_the_driver_prepares_the_data_and_names_each_case_left_out_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import nibabel as nib
    import numpy as np
    from ablate_sweep_helpers import write_space

    from orchestrator.expand import plan_sweep
    from orchestrator.sweep_data import prepare_sweep_data

    root = tmp_path / "data"
    synthesize_dataset(root, cases=5, shape=(32, 32, 32))
    (root / "Synth_0002" / "Synth_0002_t2.nii.gz").unlink()  # found by listing files
    bad = root / "Synth_0003" / "Synth_0003_flair.nii.gz"  # found only when decoded
    image = nib.load(bad)
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.float32), image.affine), bad)
    space = write_space(
        tmp_path, "name: s\nextends: trial.yaml\ngrid: {model.attention: [true, false]}\n"
    )
    plan = plan_sweep(space, data_root=root)
    named = check_data_dir(root, "auto", joined=False)
    left_out = prepare_sweep_data(plan, named)
    missing = f"{root / 'Synth_0002'}: missing modality file(s): Synth_0002_t2.nii.gz"
    constant = f"{bad}: flair is constant (every voxel is 0): an empty or broken file"
    assert left_out == [missing, constant]
    err = capsys.readouterr().err
    assert "data: 1 case(s) could not be prepared and are left out:" in err
    assert err.count(constant) == 1 and missing not in err  # the --data check named that one
    assert f"data: preparing {root}: 4/4 cases read" in err  # once for both cells
    assert prepare_sweep_data(plan, named) == left_out  # the trials' cache: reused, not redone
    assert "preparing" not in capsys.readouterr().err


def test_the_resume_hint_names_the_sweep_data_and_smoke(tmp_path: Path) -> None:
    args = argparse.Namespace(space=Path("s.yaml"), data=tmp_path, address=None, smoke=True)
    words = shlex.split(_resume_command(args, _result()))
    assert words == [
        "ablate", "sweep", "s.yaml", "--resume", "--name", "study", "--storage", "/runs/ray",
        "--data", str(tmp_path.resolve()), "--smoke",
    ]  # fmt: skip


def test_a_missing_data_directory_is_refused_here_and_noted_on_a_cluster(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError) as err:
        check_data_dir(missing, "auto", joined=False)
    assert str(err.value).startswith(f"--data: {missing}: dataset directory does not exist")
    (note,) = check_data_dir(missing, "auto", joined=True)
    assert note == f"data: {missing} is not on this machine; the trials will read it on the workers"


def test_data_lines_name_unlabelled_and_incomplete_cases(tmp_path: Path) -> None:
    root = tmp_path / "data"
    synthesize_dataset(root, cases=4, shape=(16, 16, 16))
    (root / "Synth_0001" / "Synth_0001_seg.nii.gz").unlink()
    (root / "Synth_0002" / "Synth_0002_t2.nii.gz").unlink()
    lines = check_data_dir(root, "auto", joined=False)
    assert lines[0] == f"data: 2 labelled cases in {root} (brats2021 layout)"
    assert lines[1] == "data: 1 without a label left out: Synth_0001"
    assert lines[2] == "data: 1 case(s) left out:"
    assert lines[3] == f"  {root / 'Synth_0002'}: missing modality file(s): Synth_0002_t2.nii.gz"


def test_data_without_any_label_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    synthesize_dataset(root, cases=2, shape=(16, 16, 16))
    for seg in root.glob("*/*_seg.nii.gz"):
        seg.unlink()
    with pytest.raises(InputError, match=r"--data: .*none of its 2 usable cases has a label"):
        check_data_dir(root, "auto", joined=False)
