"""What ``ablate sweep`` says and returns at its end, and what it checks of ``--data`` before
Ray starts (no Ray here: the sweep-level logic on its own)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest

from orchestrator.checks import check_data_dir
from orchestrator.commands.sweep import _resume_command
from orchestrator.sweep import SweepResult
from orchestrator.tuner import TrialProblem
from trainables.data.synth import synthesize_dataset
from trainables.errors import InputError


def _result(*problems: TrialProblem) -> SweepResult:
    counts = {"finished": 2}
    return SweepResult("study", "/runs/ray/study", "sqlite:///m.db", "p1", counts, False, "1",
                       list(problems))  # fmt: skip


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
