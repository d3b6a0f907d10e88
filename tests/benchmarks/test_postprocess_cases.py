"""The post-processing side by side's random datasets exercise what it claims to exercise.

``benchmarks/postprocess_vs_nnunet.py`` needs nnU-Net v2 in a separate environment; these tests
run only ablate's ``decide_postprocess`` on the datasets ``benchmarks/postprocess_cases.py``
generates, and check that every outcome the comparison counts on actually occurs (each step
applied and refused, nnU-Net's defensive refusal) and that every reference holds every region
(where both maps are empty the two sides' Dice conventions differ).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from benchmarks.postprocess_cases import Case, draw_dataset
from trainables.config.postprocess import PostprocessConfig
from trainables.data.labels import INTERNAL_BINARY, INTERNAL_BRATS, LabelScheme
from trainables.engine.postprocess import keep_largest_component
from trainables.engine.postprocess_decide import FOREGROUND, Decision, decide_postprocess
from trainables.metrics.overlap import dice

SCHEMES = {"brats": INTERNAL_BRATS, "binary": INTERNAL_BINARY}
COUNTS = {"brats": 60, "binary": 30}


@pytest.fixture(scope="module")
def decided() -> dict[str, list[tuple[list[Case], Decision]]]:
    rng = np.random.default_rng(0)
    out: dict[str, list[tuple[list[Case], Decision]]] = {}
    for kind, count in COUNTS.items():
        datasets = [draw_dataset(rng, kind) for _ in range(count)]
        out[kind] = [
            (cases, decide_postprocess(cases, PostprocessConfig(), SCHEMES[kind]))
            for cases in datasets
        ]
    return out


def _region_means(cases: list[Case], scheme: LabelScheme, foreground_step: bool) -> np.ndarray:
    """Each region's mean Dice over ``cases``, with or without the foreground step."""
    fg = range(1, scheme.num_classes)
    preds = [keep_largest_component(p, fg) if foreground_step else p for p, _ in cases]
    return np.array(
        [
            np.mean(
                [dice(np.isin(p, c), np.isin(r, c)) for p, (_, r) in zip(preds, cases, strict=True)]
            )
            for c in scheme.regions.values()
        ]
    )


def test_every_step_is_both_applied_and_refused(decided) -> None:
    for kind, results in decided.items():
        seen = Counter((s.name, s.applied) for _, d in results for s in d.steps)
        names = [FOREGROUND, *(SCHEMES[kind].region_names if kind == "brats" else ())]
        for name in names:
            for applied in (True, False):
                assert seen[name, applied] >= 2, (kind, name, applied, seen)


def test_the_defensive_refusal_occurs(decided) -> None:
    """Foreground mean Dice up, yet not applied: a region's mean went down."""
    refused = [
        cases
        for cases, d in decided["brats"]
        if d.steps[0].after > d.steps[0].before and not d.steps[0].applied
    ]
    assert len(refused) >= 2
    for cases in refused:
        before = _region_means(cases, INTERNAL_BRATS, False)
        after = _region_means(cases, INTERNAL_BRATS, True)
        assert after.mean() > before.mean() and (after < before).any()


def test_binary_decisions_have_one_step(decided) -> None:
    for _, d in decided["binary"]:
        assert [s.name for s in d.steps] == [FOREGROUND]
        assert d.config.largest_component_regions == ()


def test_every_reference_holds_every_region(decided) -> None:
    for kind, results in decided.items():
        for cases, _ in results:
            assert 6 <= len(cases) <= 10
            for pred, ref in cases:
                assert pred.shape == ref.shape and len(set(ref.shape)) == 3
                assert pred.dtype == ref.dtype == np.uint8
                for codes in SCHEMES[kind].regions.values():
                    assert np.isin(ref, codes).any()


def test_the_datasets_follow_the_seed() -> None:
    first = draw_dataset(np.random.default_rng(3), "brats")
    again = draw_dataset(np.random.default_rng(3), "brats")
    assert len(first) == len(again)
    for pair, other in zip(first, again, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(pair, other, strict=True))
