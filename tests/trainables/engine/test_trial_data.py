"""A trial's data on a partly bad dataset: the good labelled cases train, and every case left
out is named with its problem in the trial's log."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from trainables.config.trial import DataConfig
from trainables.data.synth import synthesize_dataset
from trainables.engine.data import prepare_trial_data
from trainables.errors import InputError


def _dataset(tmp_path: Path, cases: int = 6) -> Path:
    root = tmp_path / "data"
    synthesize_dataset(root, cases=cases, shape=(24, 24, 24), tumour_free_fraction=0.0)
    (root / "synth.json").unlink()  # a plain BraTS folder, as a user's would be
    return root


def _config(root: Path, tmp_path: Path) -> DataConfig:
    return DataConfig(root=root, cache_dir=tmp_path / "cache")


def test_bad_and_unlabelled_cases_are_named_and_left_out(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    flair = root / "Synth_0001" / "Synth_0001_flair.nii.gz"
    flair.write_bytes(flair.read_bytes()[:200])  # truncated: cannot be decoded
    (root / "Synth_0002" / "Synth_0002_seg.nii.gz").unlink()  # an unlabelled case
    lines: list[str] = []
    data = prepare_trial_data(_config(root, tmp_path), lines.append)
    used = {*data.split.train, *data.split.val, *data.split.test}
    assert used == {"Synth_0000", "Synth_0003", "Synth_0004", "Synth_0005"}
    log = "\n".join(lines)
    assert "data: 1 case(s) could not be prepared and are left out:" in log
    assert "Synth_0001" in log and "Synth_0001_flair.nii.gz" in log
    assert "data: 1 case(s) without a label left out of training and evaluation: Synth_0002" in log
    for case in used:  # every case the split hands out loads with its label
        assert data.load(case)[1] is not None


def test_a_dataset_without_labels_is_refused_naming_it(tmp_path: Path) -> None:
    root = _dataset(tmp_path, cases=3)
    for seg in root.glob("*/*_seg.nii.gz"):
        seg.unlink()
    with pytest.raises(InputError) as err:
        prepare_trial_data(_config(root, tmp_path))
    assert str(root) in str(err.value)
    assert "none of its 3 cases has a label file, and training needs labels" in str(err.value)


def test_a_missing_dataset_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError) as err:
        prepare_trial_data(_config(missing, tmp_path))
    assert str(err.value) == f"data.root: dataset directory {missing} not found"


def test_a_clean_dataset_logs_no_left_out_cases(tmp_path: Path) -> None:
    root = _dataset(tmp_path, cases=6)
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    lines: list[str] = []
    prepare_trial_data(_config(root, tmp_path), lines.append)
    assert not [line for line in lines if line.startswith("data:")]


def test_a_split_without_test_cases_says_so(tmp_path: Path) -> None:
    root = _dataset(tmp_path, cases=3)  # 70/10/20 of 3 cases leaves none for testing
    lines: list[str] = []
    data = prepare_trial_data(_config(root, tmp_path), lines.append)
    assert data.split.test == ()
    assert (
        "data: the split of 3 labelled cases has no test cases, so this trial logs no test/ "
        "metrics" in "\n".join(lines)
    )
