"""Train/validation/test splits of a dataset's case ids: hold-out fractions or k-fold.

A split depends only on the set of case ids and the config (seed included), never on the order
the ids arrive in: cases are ranked by ``sha256(f"{seed}:{case_id}")``. Hashing each id on its
own also keeps the ranking identical across numpy versions and platforms, and adding a case to a
dataset moves only that case's neighbours, not the whole ordering.

Every split carries a short hash of its three id lists; results from runs whose split hashes
differ are not comparable and the orchestrator refuses to rank them together.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from trainables.config.base import Frozen, Seed
from trainables.errors import InputError


class HoldoutSplit(Frozen):
    """Fixed fractions of the cases for (train, val, test), e.g. the BTRSeg paper's 70/10/20.

    Attributes:
        fractions: ``(train, val, test)`` shares of the cases, each a fraction 0-1, summing to 1
            with train > 0; counts are ``n * fraction`` by largest-remainder rounding, and train
            (and val when its share is > 0) get at least one case. As a k-fold split's ``test``
            only the test share counts (how many cases are held out of the folds).
        seed: seed of the case ranking (``sha256(f"{seed}:{case_id}")``), independent of the
            trial's ``seed``: the same seed and case set always give the same split.
    """

    kind: Literal["holdout"] = "holdout"
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    seed: Seed = 0

    @field_validator("fractions")
    @classmethod
    def _check_fractions(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in value):
            raise ValueError(f"fractions must not be negative, got {value}")
        if value[0] <= 0:
            raise ValueError(f"the train fraction must be positive, got {value}")
        if not math.isclose(sum(value), 1.0, abs_tol=1e-6):
            raise ValueError(f"fractions (train, val, test) must sum to 1, got sum {sum(value):g}")
        return value


class KFoldSplit(Frozen):
    """``folds`` equal folds; fold ``fold`` is the validation set, the rest train.

    Attributes:
        folds: number of folds K (>= 2; at least K cases to fold); fold sizes differ by at
            most one case.
        fold: which fold (0 to K - 1) is the validation set; the other K - 1 folds train.
        seed: seed of the case ranking the folds are dealt from, as in a hold-out split;
            independent of the trial's ``seed`` and of ``test.seed``.
        test: optional hold-out split whose test part is set aside before folding: those cases
            are the test set of every fold (a space file's ``folds: K`` keeps its base trial's
            test cases this way), and only the others are folded. None: no test set.
    """

    kind: Literal["kfold"] = "kfold"
    folds: int = Field(default=5, ge=2)
    fold: int = Field(default=0, ge=0)
    seed: Seed = 0
    test: HoldoutSplit | None = None

    @field_validator("fold")
    @classmethod
    def _check_fold(cls, value: int, info: ValidationInfo) -> int:
        folds = info.data.get("folds")  # absent when folds itself failed validation
        if folds is not None and value >= folds:
            raise ValueError(f"must be in 0..{folds - 1} for {folds} folds, got {value}")
        return value


SplitConfig = Annotated[HoldoutSplit | KFoldSplit, Field(discriminator="kind")]


@dataclass(frozen=True)
class Split:
    """Case ids per part (each sorted) and the split's identity.

    Attributes:
        train, val, test: case ids; every case is in exactly one part.
        hash: first 16 hex digits of the sha256 of the three sorted id lists.
    """

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    hash: str

    def part_of(self, case_id: str) -> str:
        """Which part holds ``case_id``: "train", "val" or "test" (KeyError if none)."""
        for name in ("train", "val", "test"):
            if case_id in getattr(self, name):
                return name
        raise KeyError(case_id)


def make_split(case_ids: Sequence[str], cfg: SplitConfig) -> Split:
    """Split ``case_ids`` by ``cfg``; deterministic in the seed and independent of input order.

    Raises:
        InputError: no cases, duplicate ids, or fewer cases than k-fold folds.
    """
    if isinstance(cfg, KFoldSplit):
        test = make_split(case_ids, cfg.test).test if cfg.test is not None else ()
        held_out = set(test)
        rest = _rank([c for c in case_ids if c not in held_out], cfg.seed)
        train, val, _ = _kfold_parts(rest, cfg)
        return build_split(train, val, test)
    train, val, test = _holdout_parts(_rank(case_ids, cfg.seed), cfg)
    return build_split(train, val, test)


def build_split(train: Sequence[str], val: Sequence[str], test: Sequence[str]) -> Split:
    """A :class:`Split` from explicit parts (sorted), with its hash."""
    parts = tuple(tuple(sorted(p)) for p in (train, val, test))
    payload = json.dumps({"train": parts[0], "val": parts[1], "test": parts[2]})
    digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
    return Split(train=parts[0], val=parts[1], test=parts[2], hash=digest)


def _rank(case_ids: Sequence[str], seed: int) -> list[str]:
    """Case ids in a pseudo-random order that depends only on the id set and the seed."""
    ids = list(case_ids)
    if not ids:
        raise InputError("no cases to split", where="data.split")
    dups = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dups:
        raise InputError(f"case ids must be unique; repeated: {', '.join(dups)}", "data.split")

    def key(case_id: str) -> tuple[str, str]:
        return hashlib.sha256(f"{seed}:{case_id}".encode()).hexdigest(), case_id

    return sorted(ids, key=key)


def holdout_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Cases per (train, val, test) for ``n`` cases.

    Largest-remainder rounding of ``n * fractions``. Then train, and val when its fraction is
    positive, get at least one case each if ``n`` allows, taken from the part most over its
    exact share (ties: from test), so a tiny dataset can still train and validate.
    """
    exact = [n * f for f in fractions]
    counts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(3), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    minimum = [1, 1 if fractions[1] > 0 else 0, 0]
    for part in (0, 1):
        donors = [i for i in range(3) if counts[i] > minimum[i]]
        if counts[part] < minimum[part] and donors:
            donor = max(donors, key=lambda i: (counts[i] - exact[i], i))
            counts[donor] -= 1
            counts[part] += 1
    return counts[0], counts[1], counts[2]


def folded_case_count(num_cases: int, split: SplitConfig) -> int:
    """How many of ``num_cases`` cases a k-fold ``split`` folds (its held-out test part is not
    folded); all of them for a hold-out split."""
    if isinstance(split, KFoldSplit) and split.test is not None:
        return num_cases - holdout_counts(num_cases, split.test.fractions)[2]
    return num_cases


def _holdout_parts(ranked: list[str], cfg: HoldoutSplit) -> tuple[list[str], ...]:
    n_train, n_val, _ = holdout_counts(len(ranked), cfg.fractions)
    return ranked[:n_train], ranked[n_train : n_train + n_val], ranked[n_train + n_val :]


def _kfold_parts(ranked: list[str], cfg: KFoldSplit) -> tuple[list[str], ...]:
    if len(ranked) < cfg.folds:
        held_out = " outside the test set" if cfg.test is not None else ""
        message = (
            f"{cfg.folds}-fold split needs at least {cfg.folds} cases{held_out}, got {len(ranked)}"
        )
        raise InputError(message, where="data.split.folds")
    # Fold sizes differ by at most one: fold k takes every folds-th case starting at k.
    val = ranked[cfg.fold :: cfg.folds]
    train = [c for i, c in enumerate(ranked) if i % cfg.folds != cfg.fold]
    return train, val, []
