"""Folds as repeats: the split of each fold, and the checks on ``folds: K``."""

from __future__ import annotations

from pathlib import Path

import pytest
from ablate_sweep_helpers import tiny_trial, write_space

from orchestrator.cli import main
from orchestrator.expand import plan_sweep
from orchestrator.folds import check_fold_count, count_cases, fold_splits
from trainables.data.splits import HoldoutSplit, KFoldSplit, folded_case_count, make_split

IDS = [f"case{i:02d}" for i in range(12)]


def test_holdout_base_keeps_its_test_part_in_every_fold():
    base = HoldoutSplit(fractions=(0.6, 0.2, 0.2), seed=4)
    splits = fold_splits(base, 3)
    assert [s.fold for s in splits] == [0, 1, 2]
    assert all(s.folds == 3 and s.seed == 4 and s.test == base for s in splits)
    made = [make_split(IDS, s) for s in splits]
    assert {m.test for m in made} == {make_split(IDS, base).test}
    assert len({m.hash for m in made}) == 3  # one split hash per fold


def test_holdout_base_without_test_part_folds_every_case():
    splits = fold_splits(HoldoutSplit(fractions=(0.7, 0.3, 0.0)), 2)
    assert all(s.test is None for s in splits)
    vals = [set(make_split(IDS, s).val) for s in splits]
    assert vals[0] | vals[1] == set(IDS) and not vals[0] & vals[1]


def test_kfold_base_keeps_its_settings_and_must_agree():
    base = KFoldSplit(folds=4, fold=2, seed=9)
    assert [s.model_dump() for s in fold_splits(base, 4)] == [
        {**base.model_dump(), "fold": k} for k in range(4)
    ]
    with pytest.raises(ValueError) as err:
        fold_splits(base, 3)
    assert str(err.value) == (
        "folds: 3 contradicts the base trial's data.split.folds: 4; "
        "drop one of them or make them equal"
    )


def test_fold_count_against_the_cases():
    holdout = HoldoutSplit(fractions=(0.7, 0.1, 0.2))
    assert folded_case_count(10, fold_splits(holdout, 2)[0]) == 8
    assert check_fold_count(8, 10, holdout) is None
    assert check_fold_count(9, 10, holdout) == (
        "folds: 9 is more than the 8 cases there are to fold (2 of 10 are held out for "
        "testing); use at most 8 folds"
    )
    no_test = HoldoutSplit(fractions=(0.7, 0.3, 0.0))
    assert check_fold_count(5, 4, no_test) == (
        "folds: 5 is more than the 4 cases there are to fold; use at most 4 folds"
    )
    assert check_fold_count(50, None, no_test) is None  # unknown count: the trial will say


def test_count_cases_synthetic_and_unreadable(tmp_path):
    assert count_cases(None, 12, "auto") == 12
    assert count_cases(tmp_path / "missing", 12, "auto") is None


# ------------------------------------------------------------------ folds: K in a space file
def _validate(space: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["validate", str(space), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_folds_list_cells_x_folds_x_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(
        tmp_path,
        "name: f\nextends: trial.yaml\ngrid: {model.attention: [true, false]}\n"
        "seeds: 2\nfolds: 2\n",
    )
    code, out = _validate(space, capsys)
    assert code == 0
    assert "sweep 'f', 2 cells x 2 folds x 2 seeds = 8 trials" in out
    assert "attention=true/fold1/seed0" in out
    plan = plan_sweep(space)
    assert [(t.fold, t.seed) for t in plan.trials[:4]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    splits = {t.fold: t.config["data"]["split"] for t in plan.trials}
    assert splits[1] == {"kind": "kfold", "folds": 2, "fold": 1, "seed": 0, "test": None}


def test_folds_keep_the_test_cases_of_the_base_split(tmp_path: Path) -> None:
    tiny_trial(
        tmp_path,
        data={
            "synthetic": {"cases": 10},
            "split": {"kind": "holdout", "fractions": [0.6, 0.2, 0.2]},
        },
    )
    space = write_space(tmp_path, "name: f\nextends: trial.yaml\nfolds: 4\n")
    configs = [t.config["data"]["split"] for t in plan_sweep(space).trials]
    assert [c["fold"] for c in configs] == [0, 1, 2, 3]
    assert all(c["test"]["fractions"] == [0.6, 0.2, 0.2] for c in configs)


@pytest.mark.parametrize(
    ("trial", "space_text", "expected"),
    [
        ({}, "folds: 1\n", "folds: Input should be greater than or equal to 2"),
        (
            {},
            "folds: 5\n",
            "folds: 5 is more than the 4 cases there are to fold; use at most 4 folds",
        ),
        (
            {
                "data": {
                    "synthetic": {"cases": 5},
                    "split": {"kind": "holdout", "fractions": [0.4, 0.2, 0.4]},
                }
            },
            "folds: 4\n",
            "folds: 4 is more than the 3 cases there are to fold (2 of 5 are held out for "
            "testing); use at most 3 folds",
        ),
        (
            {"data": {"split": {"kind": "kfold", "folds": 3, "fold": 0}}},
            "folds: 2\n",
            "folds: 2 contradicts the base trial's data.split.folds: 3",
        ),
        (
            {},
            "folds: 2\nvariants: [{label: a, overrides: {data.split.seed: 3}}]\n",
            "variants[0].overrides.data.split.seed: the split is set by 'folds: 2'",
        ),
        (
            {},
            "folds: 2\nsearch: {kind: optuna, num_samples: 2}\n"
            "sample: {optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}}\n",
            "folds: 2 needs search: {kind: grid}",
        ),
    ],
)
def test_bad_folds_exit_2_naming_the_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    trial: dict,
    space_text: str,
    expected: str,
) -> None:
    tiny_trial(tmp_path, **trial)
    space = write_space(tmp_path, "name: f\nextends: trial.yaml\n" + space_text)
    code, err = _validate(space, capsys)
    assert code == 2
    assert expected in err
    assert str(space) in err
