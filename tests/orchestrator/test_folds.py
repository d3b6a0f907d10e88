"""Folds as repeats: the split of each fold, and the checks on ``folds: K``."""

from __future__ import annotations

import pytest

from orchestrator.folds import check_fold_count, count_cases, fold_splits, foldable_cases
from trainables.data.splits import HoldoutSplit, KFoldSplit, make_split

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
    assert foldable_cases(10, holdout) == 8
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
