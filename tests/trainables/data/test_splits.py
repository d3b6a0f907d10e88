"""Splits: partition, determinism, order independence, tiny datasets, k-fold, hashes, configs."""

from __future__ import annotations

import random

import pytest

from trainables.config import Frozen, validate_config
from trainables.data.splits import (
    HoldoutSplit,
    KFoldSplit,
    SplitConfig,
    build_split,
    holdout_counts,
    make_split,
)
from trainables.errors import InputError

IDS = [f"case_{i:03d}" for i in range(20)]


class Holder(Frozen):
    """A config with a split field, as the trial config embeds it."""

    split: SplitConfig = HoldoutSplit()


def assert_partition(split, ids) -> None:
    parts = [*split.train, *split.val, *split.test]
    assert sorted(parts) == sorted(ids)  # every case exactly once
    assert len(set(parts)) == len(parts)


def test_holdout_sizes_and_partition():
    split = make_split(IDS, HoldoutSplit(fractions=(0.7, 0.1, 0.2), seed=3))
    assert (len(split.train), len(split.val), len(split.test)) == (14, 2, 4)
    assert_partition(split, IDS)
    assert list(split.train) == sorted(split.train)
    assert split.part_of(split.val[0]) == "val"


def test_deterministic_and_independent_of_input_order():
    cfg = HoldoutSplit(seed=7)
    shuffled = IDS[:]
    random.Random(0).shuffle(shuffled)
    first = make_split(IDS, cfg)
    assert make_split(IDS, cfg) == first
    assert make_split(shuffled, cfg) == first
    assert make_split(tuple(reversed(IDS)), cfg) == first


def test_seed_changes_split_and_hash():
    a = make_split(IDS, HoldoutSplit(seed=0))
    b = make_split(IDS, HoldoutSplit(seed=1))
    assert (a.train, a.val, a.test) != (b.train, b.val, b.test)
    assert a.hash != b.hash
    assert len(a.hash) == 16 and int(a.hash, 16) >= 0


def test_hash_identifies_the_parts():
    split = make_split(IDS, HoldoutSplit())
    assert build_split(split.train[::-1], split.val, split.test).hash == split.hash
    moved = build_split(split.train[1:], (*split.val, split.train[0]), split.test)
    assert moved.hash != split.hash
    # the same ids in a different part are a different split
    swapped = build_split(split.train, split.test, split.val)
    assert swapped.hash != split.hash


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_tiny_datasets_still_train_and_validate(n):
    ids = IDS[:n]
    split = make_split(ids, HoldoutSplit())
    assert_partition(split, ids)
    assert len(split.train) >= 1 and len(split.val) >= 1


def test_holdout_counts():
    assert holdout_counts(1, (0.7, 0.1, 0.2)) == (1, 0, 0)
    assert holdout_counts(3, (0.7, 0.1, 0.2)) == (2, 1, 0)
    assert holdout_counts(5, (0.7, 0.1, 0.2)) == (3, 1, 1)
    assert holdout_counts(10, (0.7, 0.1, 0.2)) == (7, 1, 2)
    assert holdout_counts(4, (1.0, 0.0, 0.0)) == (4, 0, 0)  # no val requested: none forced


def test_kfold_folds_partition_the_cases():
    n_folds = 3
    splits = [make_split(IDS, KFoldSplit(folds=n_folds, fold=k, seed=2)) for k in range(n_folds)]
    vals = [set(s.val) for s in splits]
    assert set().union(*vals) == set(IDS)
    assert sum(len(v) for v in vals) == len(IDS)  # disjoint
    assert sorted(len(v) for v in vals) == [6, 7, 7]
    for s in splits:
        assert s.test == ()
        assert set(s.train) == set(IDS) - set(s.val)
    assert len({s.hash for s in splits}) == n_folds


def test_kfold_keeps_the_holdout_test_part_out_of_every_fold():
    holdout = HoldoutSplit(fractions=(0.7, 0.1, 0.2), seed=5)
    base_test = make_split(IDS, holdout).test
    splits = [make_split(IDS, KFoldSplit(folds=3, fold=k, seed=1, test=holdout)) for k in range(3)]
    for s in splits:
        assert s.test == base_test  # the very cases the hold-out split tests on
        assert_partition(s, IDS)
        assert not set(s.val) & set(base_test)
    vals = [set(s.val) for s in splits]
    assert set().union(*vals) == set(IDS) - set(base_test)  # each non-test case validated once
    assert sum(len(v) for v in vals) == len(IDS) - len(base_test)


def test_kfold_with_test_counts_only_the_folded_cases():
    holdout = HoldoutSplit(fractions=(0.5, 0.0, 0.5))
    with pytest.raises(InputError) as err:
        make_split(IDS[:4], KFoldSplit(folds=3, test=holdout))
    assert str(err.value) == (
        "data.split.folds: 3-fold split needs at least 3 cases outside the test set, got 2"
    )


def test_kfold_needs_enough_cases():
    with pytest.raises(InputError) as err:
        make_split(IDS[:3], KFoldSplit(folds=5))
    assert str(err.value) == "data.split.folds: 5-fold split needs at least 5 cases, got 3"


def test_bad_case_lists():
    with pytest.raises(InputError, match="no cases to split"):
        make_split([], HoldoutSplit())
    with pytest.raises(InputError, match="case ids must be unique; repeated: a"):
        make_split(["a", "b", "a"], HoldoutSplit())


def test_config_selects_variant_by_kind():
    cfg = validate_config(Holder, {"split": {"kind": "kfold", "folds": 4, "fold": 3}})
    assert isinstance(cfg.split, KFoldSplit) and cfg.split.fold == 3
    assert isinstance(validate_config(Holder, {}).split, HoldoutSplit)


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        (
            {"kind": "holdout", "fractions": [0.7, 0.2, 0.2]},
            "split.fractions: fractions (train, val, test) must sum to 1, got sum 1.1",
        ),
        ({"kind": "holdout", "fractions": [0.0, 0.5, 0.5]}, "train fraction must be positive"),
        (
            {"kind": "kfold", "folds": 3, "fold": 3},
            "split.fold: must be in 0..2 for 3 folds, got 3",
        ),
        ({"kind": "kfold", "folds": 1}, "split.folds: Input should be greater than or equal to 2"),
        ({"kind": "holdot"}, "split.kind: 'holdot' is not one of holdout, kfold"),
    ],
)
def test_config_errors(split, expected):
    with pytest.raises(InputError) as err:
        validate_config(Holder, {"split": split}, source="trial.yaml")
    assert expected in str(err.value)
