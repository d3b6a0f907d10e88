"""Cells that lost runs: comparing means over different seeds (or folds) fairly.

A sweep's cells normally hold the same keys (seed, fold). When a run fails or a scheduler stops
it, its cell's mean is over fewer keys than the others'. Seeds and folds are shared between
cells (a seed fixes the data and augmentation order, a fold the validation cases), so their
effects are too: a cell that lost its hardest fold's run looks better by that fold's difficulty
alone. In tests/orchestrator/test_statistics.py a cell 0.05 behind another on both seeds they
share ranked first on plain means through a third seed the other lost; in a simulation a cell
0.01 worse than the rest came first in 6.5% of studies. The fix is the textbook one for an
unbalanced randomised block design: fit the additive model ``value = cell effect + key effect``
by least squares and compare cells by their estimated marginal means (each cell's fitted value
averaged over every key of the sweep). With balanced cells this is the plain mean, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Key = tuple[str, str]  # (seed, fold)


def fill_missing_keys(
    values: np.ndarray, cells: Sequence[Sequence[int]], keys: Sequence[Key]
) -> list[dict[Key, float]] | None:
    """Per cell, the fitted value of each key some cell has but it lacks.

    Args:
        values: (R,) each run's metric value.
        cells: each cell's run indices into ``values``.
        keys: (R,) each run's (seed, fold).

    Returns:
        None when every cell holds the same keys (nothing to adjust), when a value is not
        finite, or when the cells and keys do not connect (a cell sharing no key with the rest:
        its key effects cannot be told apart from its own); else one ``{key: value}`` per cell.
    """
    held = [{keys[i] for i in runs} for runs in cells]
    union = sorted(set().union(*held))
    if all(h == set(union) for h in held) or not np.all(np.isfinite(values)):
        return None
    slot = {key: j for j, key in enumerate(union)}
    runs = [(c, slot[keys[i]], i) for c, members in enumerate(cells) for i in members]
    # columns: one per cell, then one per key but the first (the key effects' reference)
    design = np.zeros((len(runs), len(cells) + len(union) - 1))
    for row, (c, k, _) in enumerate(runs):
        design[row, c] = 1.0
        if k:
            design[row, len(cells) + k - 1] = 1.0
    target = np.array([values[i] for *_, i in runs], dtype=float)
    coef, _, rank, _ = np.linalg.lstsq(design, target, rcond=None)
    if rank < design.shape[1]:
        return None
    cell_effect = coef[: len(cells)]
    key_effect = np.concatenate([[0.0], coef[len(cells) :]])
    return [
        {key: float(cell_effect[c] + key_effect[slot[key]]) for key in union if key not in h}
        for c, h in enumerate(held)
    ]
