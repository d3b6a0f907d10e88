"""Cross-validation folds as repeats of a cell (a space file's ``folds: K``).

nnU-Net compares configurations by 5-fold cross-validation and paper 003 uses k folds: a fold
is a repeat of the same configuration on other data, not a different cell. With ``folds: K`` the
base trial's split becomes a K-fold split of its non-test cases: a hold-out split's test part is
set aside first (the same cases for every fold, :class:`~trainables.data.splits.KFoldSplit`'s
``test``), and a k-fold base split keeps its own settings (its fold count must be K). Each cell
then trains once per fold and seed; the winners table pools the K x seeds runs of a cell and
pairs them by (fold, seed) and by case, so over all folds every non-test case is validated once
per seed.
"""

from __future__ import annotations

from pathlib import Path

from trainables.data.splits import KFoldSplit, SplitConfig, folded_case_count


def fold_splits(base: SplitConfig, folds: int) -> list[KFoldSplit]:
    """The split of each of ``folds`` folds, derived from the base trial's split.

    Raises:
        ValueError: a k-fold base split with another fold count (the message names both).
    """
    if isinstance(base, KFoldSplit):
        if base.folds != folds:
            raise ValueError(
                f"folds: {folds} contradicts the base trial's data.split.folds: {base.folds}; "
                "drop one of them or make them equal"
            )
        return [base.model_copy(update={"fold": k}) for k in range(folds)]
    test = base if base.fractions[2] > 0 else None
    return [KFoldSplit(folds=folds, fold=k, seed=base.seed, test=test) for k in range(folds)]


def count_cases(root: Path | None, synthetic_cases: int, label_scheme: str) -> int | None:
    """Cases a trial's data config trains on: the synthetic count, or the usable labelled cases
    found in ``root`` (listing files only, nothing decoded); None when ``root`` cannot be read."""
    if root is None:
        return synthetic_cases
    from trainables.data.layouts import discover
    from trainables.errors import InputError

    try:
        return sum(case.label is not None for case in discover(root, label_scheme).cases)
    except (InputError, OSError):
        return None  # the trial itself reports the unreadable dataset


def check_fold_count(folds: int, num_cases: int | None, base: SplitConfig) -> str | None:
    """The problem with ``folds`` for this many cases, or None."""
    if num_cases is None:
        return None
    foldable = folded_case_count(num_cases, fold_splits(base, folds)[0])
    if folds <= foldable:
        return None
    held_out = num_cases - foldable
    test_note = f" ({held_out} of {num_cases} are held out for testing)" if held_out else ""
    return (
        f"folds: {folds} is more than the {foldable} cases there are to fold{test_note}; "
        f"use at most {foldable} folds"
    )
