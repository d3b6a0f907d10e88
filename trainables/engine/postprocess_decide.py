"""nnU-Net's rule for which largest-component steps to apply (``largest_component: auto``).

nnU-Net v2 (``determine_postprocessing``) decides on its cross-validation predictions:

1. keep only the largest component of the whole foreground, if that raises the mean Dice over
   the regions and lowers no region's mean Dice ("defensively": one region worse, and it is
   not done);
2. then, when there is more than one region, for each region in turn (on the maps as the
   steps so far left them): keep only that region's largest component, if it raises that
   region's mean Dice.

Here a run decides on its own validation cases after its last epoch, predicted as the test
pass predicts (whole volumes, ``validation.test_tta``), with ``min_et_voxels`` applied first;
Dice follows the table's convention (both empty: 1, :func:`~trainables.metrics.overlap.dice`),
where nnU-Net leaves such a case out of a region's mean. Selection and report stay apart: the
steps are chosen on validation cases and the test cases are scored once with them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainables.config.postprocess import PostprocessConfig
from trainables.config.trial import TrialConfig
from trainables.data.labels import LabelScheme
from trainables.engine.data import TrialData
from trainables.engine.held_out import predicted_cases, split_validation_cases
from trainables.engine.postprocess import (
    keep_largest_component,
    region_codes,
    small_enhancing_to_necrosis,
)
from trainables.metrics.overlap import dice

PREFIX = "postprocess"
FOREGROUND = "foreground"
Maps = list[np.ndarray]  # label maps, one per case
Scorer = Callable[[Sequence[np.ndarray]], dict[str, float]]  # maps -> each region's mean Dice


@dataclass(frozen=True)
class Step:
    """One candidate step: what it was judged on, before and after, and whether it stays.

    Attributes:
        name: ``foreground`` or a region (``wt``, ``et``...).
        before: the mean Dice it was judged on without the step (the mean over regions for
            ``foreground``, the region's own otherwise).
        after: the same with the step.
        applied: whether the rule keeps it.
    """

    name: str
    before: float
    after: float
    applied: bool

    def line(self) -> str:
        what = "the foreground" if self.name == FOREGROUND else f"region {self.name}"
        verdict = "applied" if self.applied else "not applied"
        change = _change(self.before, self.after)
        return f"largest component of {what}: Dice {change}, {verdict}"


@dataclass(frozen=True)
class Decision:
    """What the rule chose and why.

    Attributes:
        config: the post-processing with the steps decided (``largest_component`` true or
            false, ``largest_component_regions``), ``min_et_voxels`` as given.
        steps: every candidate step, in the order tried.
        cases: validation cases it was decided on.
        dice_before, dice_after: mean Dice over regions and cases without and with the steps.
    """

    config: PostprocessConfig
    steps: tuple[Step, ...]
    cases: int
    dice_before: float
    dice_after: float

    def metrics(self) -> dict[str, float]:
        """``postprocess/largest_component`` and ``postprocess/largest_component_<region>``
        for each region step tried (1 applied, 0 not; none for binary labels),
        ``postprocess/val_dice_mean_raw`` and ``postprocess/val_dice_mean`` (before and
        after), ``postprocess/val_cases``."""
        chosen = self.config.largest_component_regions
        tried = [step.name for step in self.steps[1:]]  # none with one region (binary)
        out = {f"{PREFIX}/largest_component": float(self.config.largest_component is True)}
        out |= {f"{PREFIX}/largest_component_{r}": float(r in chosen) for r in tried}
        return out | {
            f"{PREFIX}/val_dice_mean_raw": self.dice_before,
            f"{PREFIX}/val_dice_mean": self.dice_after,
            f"{PREFIX}/val_cases": float(self.cases),
        }

    def lines(self) -> list[str]:
        """Human-readable progress lines, one per step tried."""
        cases = f"{self.cases} validation case{'' if self.cases == 1 else 's'}"
        head = f"post-processing decided on {cases} (nnU-Net's rule):"
        return [head, *(f"  {step.line()}" for step in self.steps)]


def decide_on_validation(
    model: nn.Module,
    cfg: TrialConfig,
    data: TrialData,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    progress: Callable[[str], None] | None = None,
) -> Decision:
    """The rule on ``data``'s validation cases (at most ``validation.max_cases``), each
    predicted whole by ``model`` (the weights to decide for) as the test pass predicts it;
    ``progress`` hears of each case as it is predicted, then of the decision."""
    cases = split_validation_cases(cfg, data)
    total = len(cases.case_ids)

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for case in predicted_cases(model, cfg, cases, device, autocast):
            if progress:
                seconds = time.perf_counter() - case.started
                progress(
                    f"{PREFIX} {case.index}/{total} {case.case_id} predicted ({seconds:.1f} s)"
                )
            yield case.labels, case.reference

    decision = decide_postprocess(pairs(), cfg.validation.test_postprocess, cases.scheme)
    for line in decision.lines() if progress else ():
        progress(line)
    return decision


def decide_postprocess(
    cases: Iterable[tuple[np.ndarray, np.ndarray]], given: PostprocessConfig, scheme: LabelScheme
) -> Decision:
    """Decide the largest-component steps from (prediction, reference) pairs of internal
    label maps (each pair one grid; the predictions raw, before any post-processing).
    ``given`` supplies ``min_et_voxels``; its largest-component settings are replaced."""
    predictions, references = _boxed(cases, given.min_et_voxels, scheme)
    score = _scorer(references, scheme)
    baseline = score(predictions)
    foreground, current, scores = _foreground_step(predictions, baseline, score, scheme)
    region_steps, scores = _region_steps(current, scores, score, scheme)
    chosen = tuple(step.name for step in region_steps if step.applied)
    update = {"largest_component": foreground.applied, "largest_component_regions": chosen}
    steps = (foreground, *region_steps)
    config = given.model_copy(update=update)
    return Decision(config, steps, len(predictions), _mean(baseline), _mean(scores))


def _boxed(
    cases: Iterable[tuple[np.ndarray, np.ndarray]], min_et_voxels: int, scheme: LabelScheme
) -> tuple[Maps, Maps]:
    """Predictions (small ET to necrosis first) and references, each pair cut to the box of
    its foreground."""
    predictions, references = [], []
    for pred, ref in cases:
        pred = small_enhancing_to_necrosis(pred, min_et_voxels, scheme)
        box = _foreground_box(pred, ref)
        predictions.append(pred[box])
        references.append(ref[box])
    return predictions, references


def _foreground_step(
    predictions: Maps, baseline: dict[str, float], score: Scorer, scheme: LabelScheme
) -> tuple[Step, Maps, dict[str, float]]:
    """The foreground step judged ("defensively": the mean over regions up, no region down);
    with the maps and scores the region steps start from."""
    candidate = [keep_largest_component(p, range(1, scheme.num_classes)) for p in predictions]
    trial = score(candidate)
    regions = scheme.region_names
    better = _mean(trial) > _mean(baseline) and all(trial[r] >= baseline[r] for r in regions)
    step = Step(FOREGROUND, _mean(baseline), _mean(trial), better)
    return (step, candidate, trial) if better else (step, predictions, baseline)


def _region_steps(
    current: Maps, scores: dict[str, float], score: Scorer, scheme: LabelScheme
) -> tuple[list[Step], dict[str, float]]:
    """Each region's step in turn (only with more than one region), on the maps the steps
    before it left, kept when it raises that region's Dice; with the final scores."""
    steps = []
    for region in scheme.region_names if len(scheme.regions) > 1 else ():
        candidate = [keep_largest_component(p, region_codes(scheme, region)) for p in current]
        trial = score(candidate)
        better = trial[region] > scores[region]
        steps.append(Step(region, scores[region], trial[region], better))
        if better:
            current, scores = candidate, trial
    return steps, scores


def _scorer(references: Sequence[np.ndarray], scheme: LabelScheme) -> Scorer:
    """A function from predictions (paired with ``references``) to each region's mean Dice."""
    masks = [{r: np.isin(ref, codes) for r, codes in scheme.regions.items()} for ref in references]

    def score(predictions: Sequence[np.ndarray]) -> dict[str, float]:
        per_case = [
            {r: dice(np.isin(pred, codes), ref_masks[r]) for r, codes in scheme.regions.items()}
            for pred, ref_masks in zip(predictions, masks, strict=True)
        ]
        return {
            r: float(np.mean([c[r] for c in per_case])) if per_case else np.nan
            for r in scheme.regions
        }

    return score


def _change(before: float, after: float) -> str:
    """``0.0406 -> 0.0412``; as many decimals as it takes to show a change that 4 hide."""
    shown = [d for d in range(4, 13) if f"{before:.{d}f}" != f"{after:.{d}f}"]
    digits = shown[0] if shown else 4
    return f"{before:.{digits}f} -> {after:.{digits}f}"


def _mean(region_dice: dict[str, float]) -> float:
    """The mean over regions (nnU-Net's ``foreground_mean``)."""
    return float(np.mean(list(region_dice.values())))


def _foreground_box(pred: np.ndarray, ref: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every foreground voxel of both maps (empty when neither has
    one): components and Dice inside it are those of the whole maps, at a fraction of the
    memory held for the decision."""
    either = (pred > 0) | (ref > 0)
    if not either.any():
        return tuple(slice(0, 0) for _ in pred.shape)
    box = []
    for axis in range(pred.ndim):
        other = tuple(a for a in range(pred.ndim) if a != axis)
        hits = np.flatnonzero(either.any(axis=other))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)
