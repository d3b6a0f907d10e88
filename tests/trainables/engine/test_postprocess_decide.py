"""nnU-Net's rule for the largest-component steps (``largest_component: auto``), on hand-made
label maps where the right decision is known, and the per-region step's semantics."""

from __future__ import annotations

import numpy as np
import pytest

from trainables.config.postprocess import PostprocessConfig
from trainables.data.labels import INTERNAL_BINARY, INTERNAL_BRATS
from trainables.engine.postprocess import keep_largest_component, postprocess_labels
from trainables.engine.postprocess_decide import Step, decide_postprocess
from trainables.errors import InputError

NCR, ED, ET = 1, 2, 3  # internal BraTS codes


def _tumour(shape: tuple[int, int, int] = (24, 24, 24)) -> np.ndarray:
    """Oedema 8^3 with a 4^3 core: necrosis, and an enhancing 2^3 inside it."""
    labels = np.zeros(shape, np.uint8)
    labels[2:10, 2:10, 2:10] = ED
    labels[4:8, 4:8, 4:8] = NCR
    labels[5:7, 5:7, 5:7] = ET
    return labels


def _with(labels: np.ndarray, value: int, *where: tuple[slice, slice, slice]) -> np.ndarray:
    out = labels.copy()
    for box in where:
        out[box] = value
    return out


FAR = (slice(20, 22), slice(20, 22), slice(20, 22))  # 8 voxels, far from the tumour
NEAR = (slice(14, 16), slice(14, 16), slice(14, 16))


def test_a_region_step_sends_its_other_components_to_background_and_leaves_the_rest() -> None:
    labels = _with(_tumour(), ET, (slice(3, 4), slice(3, 4), slice(3, 4)))  # a lone ET voxel
    out = keep_largest_component(labels, INTERNAL_BRATS.regions["et"])
    assert out[3, 3, 3] == 0  # nnU-Net: background, not the oedema around it
    expected = labels.copy()
    expected[3, 3, 3] = 0
    np.testing.assert_array_equal(out, expected)
    cfg = PostprocessConfig(largest_component_regions=("et",))
    np.testing.assert_array_equal(postprocess_labels(labels, cfg, INTERNAL_BRATS), expected)
    with pytest.raises(InputError) as err:
        postprocess_labels(labels > 0, cfg, INTERNAL_BINARY)
    assert str(err.value) == (
        "validation.test_postprocess.largest_component_regions: 'et' is not a region of binary "
        "(foreground) labels (regions: fg)"
    )


def test_components_tied_for_the_largest_size_are_all_kept_as_nnunet_keeps_them() -> None:
    # found side by side with nnU-Net 2.8.1 (benchmarks/postprocess_vs_nnunet.py --tie-demo):
    # acvl_utils keeps every component of the largest size; keeping the first in scan order
    # flipped a decision
    labels = np.zeros((5, 6, 7), np.uint8)
    labels[1, 1, 1] = labels[3, 4, 5] = 1
    np.testing.assert_array_equal(keep_largest_component(labels, [1]), labels)
    labels[0, 0, 0] = 1  # (0,0,0)-(1,1,1) is now the one largest
    kept = keep_largest_component(labels, [1])
    assert kept[3, 4, 5] == 0 and kept[0, 0, 0] == kept[1, 1, 1] == 1
    ref = np.zeros_like(labels)
    ref[1, 1, 1] = 1
    pred = np.zeros_like(labels)
    pred[1, 1, 1] = pred[3, 4, 5] = 1
    decision = decide_postprocess([(pred, ref)], PostprocessConfig(), INTERNAL_BINARY)
    assert decision.steps[0].before == decision.steps[0].after  # both kept: nothing gained
    assert decision.config.largest_component is False  # nnU-Net: not applied
    assert decision.steps[0].line() == (
        "largest component of the foreground: Dice 0.6667 -> 0.6667, not applied"
    )
    moved = Step("foreground", 0.04059203, 0.040592041, True)  # a change 4 decimals hide
    assert (
        moved.line()
        == "largest component of the foreground: Dice 0.04059203 -> 0.04059204, applied"
    )


def test_an_undecided_auto_is_refused_where_a_map_would_be_cleaned() -> None:
    with pytest.raises(InputError, match="largest_component is 'auto' but no run decided it"):
        postprocess_labels(_tumour(), PostprocessConfig(largest_component="auto"), INTERNAL_BRATS)


def test_spurious_far_specks_choose_the_foreground_step() -> None:
    ref = _tumour()
    cases = [(_with(ref, ED, FAR), ref), (_with(ref, NCR, NEAR), ref), (ref, ref)]
    decision = decide_postprocess(cases, PostprocessConfig(), INTERNAL_BRATS)
    assert decision.config.largest_component is True
    assert decision.config.largest_component_regions == ()  # nothing left for them to remove
    assert [s.name for s in decision.steps] == ["foreground", "wt", "tc", "et"]
    fg = decision.steps[0]
    assert fg.applied and fg.after > fg.before and decision.dice_after == pytest.approx(1.0)
    assert [s.applied for s in decision.steps[1:]] == [False, False, False]


def test_a_genuine_second_lesion_keeps_every_component() -> None:
    ref = _with(_tumour(), ED, FAR)
    decision = decide_postprocess([(ref, ref), (ref, ref)], PostprocessConfig(), INTERNAL_BRATS)
    assert decision.config.largest_component is False
    assert decision.steps[0].after < decision.steps[0].before
    assert decision.config.largest_component_regions == ()


def test_an_enhancing_speck_on_the_core_chooses_the_et_step_only() -> None:
    ref = _tumour()
    speck = (slice(3, 4), slice(5, 6), slice(5, 6))  # touches the necrosis, 2 voxels from ET
    pred = _with(ref, ET, speck)
    decision = decide_postprocess([(pred, ref)] * 2, PostprocessConfig(), INTERNAL_BRATS)
    assert decision.config.largest_component is False  # one foreground component already
    assert decision.config.largest_component_regions == ("et",)
    et = decision.steps[-1]
    assert et.name == "et" and et.before < et.after == pytest.approx(1.0)
    # detached from the whole core it is a TC component too, and TC's step (tried first)
    # takes it: ET's step then finds one component
    far = decide_postprocess([(_with(ref, ET, FAR), ref)], PostprocessConfig(), INTERNAL_BRATS)
    assert far.config.largest_component is True and far.config.largest_component_regions == ()
    corner = _with(ref, ET, (slice(2, 3), slice(2, 3), slice(2, 3)))  # in the oedema only
    inside = decide_postprocess([(corner, ref)], PostprocessConfig(), INTERNAL_BRATS)
    assert inside.config.largest_component_regions == ("tc",)


def test_a_step_that_lowers_one_region_is_refused_even_when_the_mean_rises() -> None:
    ref = _tumour()
    # case 1: a true, separate enhancing lesion the foreground step would delete (ET falls)
    lesion = (slice(16, 17), slice(16, 17), slice(16, 17))
    truth = _with(ref, ET, lesion)
    # case 2: a large false oedema blob the foreground step deletes (WT rises a lot)
    blob = (slice(14, 20), slice(14, 20), slice(14, 20))
    decision = decide_postprocess(
        [(truth, truth), (_with(ref, ED, blob), ref)], PostprocessConfig(), INTERNAL_BRATS
    )
    fg = decision.steps[0]
    assert fg.after > fg.before  # the mean over regions would rise...
    assert fg.applied is False and decision.config.largest_component is False  # ...ET falls
    assert decision.config.largest_component_regions == ("wt",)  # WT's own step has no cost


def test_binary_labels_have_the_foreground_step_only() -> None:
    ref = (_tumour() > 0).astype(np.uint8)
    pred = _with(ref, 1, FAR)
    decision = decide_postprocess([(pred, ref)], PostprocessConfig(), INTERNAL_BINARY)
    assert [s.name for s in decision.steps] == ["foreground"]
    assert decision.config.largest_component is True
    assert decision.metrics() == {
        "postprocess/largest_component": 1.0,
        "postprocess/val_dice_mean_raw": pytest.approx(2 * 512 / (2 * 512 + 8)),
        "postprocess/val_dice_mean": 1.0,
        "postprocess/val_cases": 1.0,
    }
    assert decision.lines() == [
        "post-processing decided on 1 validation case (nnU-Net's rule):",
        "  largest component of the foreground: Dice 0.9922 -> 1.0000, applied",
    ]


def test_min_et_voxels_applies_first_and_is_kept() -> None:
    ref = _with(_tumour(), NCR, (slice(5, 7), slice(5, 7), slice(5, 7)))  # no ET at all
    pred = _tumour()  # 8 ET voxels where the reference has necrosis
    given = PostprocessConfig(min_et_voxels=10)
    decision = decide_postprocess([(pred, ref)], given, INTERNAL_BRATS)
    assert decision.dice_before == pytest.approx(1.0)  # ET became necrosis before judging
    assert decision.config.min_et_voxels == 10 and decision.config.decided


def test_empty_cases_and_no_cases_decide_nothing() -> None:
    empty = np.zeros((8, 8, 8), np.uint8)
    decision = decide_postprocess([(empty, empty)], PostprocessConfig(), INTERNAL_BRATS)
    assert decision.dice_before == decision.dice_after == 1.0  # both empty: Dice 1 (BraTS)
    assert not decision.config.largest_component and not decision.config.largest_component_regions
    none = decide_postprocess([], PostprocessConfig(), INTERNAL_BRATS)
    assert none.cases == 0 and none.config.decided and not none.config.largest_component


def test_the_decision_is_made_inside_each_foreground_box_without_changing_it() -> None:
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(4):
        ref = np.zeros((40, 40, 40), np.uint8)
        ref[5:20, 5:20, 5:20] = rng.integers(1, 4, (15, 15, 15))
        pred = ref.copy()
        pred[rng.random(pred.shape) < 0.002] = 2  # scattered false positives everywhere
        cases.append((pred, ref))
    boxed = decide_postprocess(cases, PostprocessConfig(), INTERNAL_BRATS)
    # the same decision from maps padded by a margin of background: the box changes nothing
    padded = [(np.pad(p, 6), np.pad(r, 6)) for p, r in cases]
    again = decide_postprocess(padded, PostprocessConfig(), INTERNAL_BRATS)
    assert boxed.steps == again.steps and boxed.config == again.config
