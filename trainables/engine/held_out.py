"""Held-out test evaluation: a trial's selected weights, once, on whole test volumes.

Selection and report are different data (DESIGN.md, "Statistics"): the best epoch is chosen on
validation cases, and its weights are then evaluated once on the split's test cases
(``TrialData.split.test``). Test cases are always predicted whole, by Gaussian-weighted sliding
window with the trial's ``validation.overlap``, even when ``sampling.validation`` is
``center_crop`` (a speed device for validation: the reported number must be the full-volume
one), and scored in the source images' grid (a resampled case's outputs resampled back before
they are decoded, the crop pasted back), as ``ablate evaluate`` scores ``ablate predict``'s
output. ``validation.test_max_cases`` caps the cases for quick
checks (``--smoke`` sets 2); ``validation.test_tta`` mirrors each case (nnU-Net's inference
default; :mod:`trainables.engine.tta`) and ``validation.test_postprocess`` cleans the map
(:mod:`trainables.engine.postprocess`), as ``ablate predict`` does.

Per case: every region's Dice, HD95, surface Dice, RVD, sensitivity, specificity
(:func:`~trainables.metrics.case_metrics`) and the BraTS 2023 lesion-wise Dice and HD95
(:func:`~trainables.metrics.lesion_metrics`, glioma rules), named ``<prefix>/<metric>_<region>``
(``test/dice_wt``, ``test/lesion_dice_wt``, ``test/dice_mean``). The means carry
``<prefix>/cases``, the number of cases evaluated (0: the split has no test cases).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainables.config.trial import TrialConfig
from trainables.data.cache import CaseEntry, PreparedDataset
from trainables.data.labels import LabelScheme
from trainables.data.restore import restore_geometry
from trainables.engine.data import TrialData
from trainables.engine.per_case import read_per_case_csv
from trainables.engine.postprocess import postprocess_labels
from trainables.engine.resize import ToSource, to_source_grid
from trainables.engine.tta import model_labels
from trainables.engine.validation import predict_case, validation_case_ids
from trainables.metrics import case_metrics, lesion_metrics, mean_metrics
from trainables.metrics.names import metric_name

TEST_PER_CASE_FILE = "per_case_test.csv"  # beside per_case_val.csv in each checkpoint dir
TEST = "test"  # the prefix of a trial's own test cases
EXTERNAL = "test_ext"  # the prefix of an external test set (``ablate test --data``)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class TestResult:
    """One test evaluation.

    Attributes:
        metrics: means over the cases (``test/dice_mean``...) and ``test/cases``.
        per_case: one row per case, ``{"case": id, "test/dice_wt": v, ...}``.
    """

    __test__ = False  # not a pytest test class
    metrics: dict[str, float]
    per_case: list[dict[str, Any]]

    @property
    def cases(self) -> int:
        return len(self.per_case)


@dataclass(frozen=True)
class TestCases:
    """Where the cases come from: a prepared dataset, the ids to evaluate, their scheme."""

    __test__ = False  # not a pytest test class
    dataset: PreparedDataset
    case_ids: Sequence[str]
    scheme: LabelScheme
    modalities: tuple[str, ...]


def split_test_cases(cfg: TrialConfig, data: TrialData) -> TestCases:
    """The split's test cases (at most ``validation.test_max_cases``)."""
    ids = list(data.split.test)
    cap = cfg.validation.test_max_cases
    return TestCases(data.dataset, ids[:cap] if cap else ids, data.scheme, data.modalities)


def split_validation_cases(cfg: TrialConfig, data: TrialData) -> TestCases:
    """The cases validation scores (at most ``validation.max_cases``), as test cases."""
    ids = list(validation_case_ids(cfg, data))
    return TestCases(data.dataset, ids, data.scheme, data.modalities)


def result_from_rows(rows: list[dict[str, Any]], prefix: str = TEST) -> TestResult:
    """Means (and ``<prefix>/cases``) of per-case rows, as :func:`evaluate_cases` returns them."""
    means = mean_metrics([{k: v for k, v in row.items() if k != "case"} for row in rows])
    means[metric_name(prefix, "cases")] = float(len(rows))
    return TestResult(means, [dict(row) for row in rows])


def read_test_csv(path: str | Path, prefix: str = TEST) -> TestResult:
    """A :class:`TestResult` from a ``per_case_test.csv`` written earlier."""
    return result_from_rows(read_per_case_csv(path), prefix)


def score_case(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, float, float],
    scheme: LabelScheme,
    tolerance_mm: float,
) -> dict[str, float]:
    """Region metrics and lesion-wise metrics of one case; ``pred``/``ref`` (X, Y, Z) internal
    label maps, ``spacing`` in mm. Keys ``dice_wt``..., ``dice_mean``, ``lesion_dice_wt``..."""
    out = case_metrics(pred, ref, spacing, scheme, tolerance_mm)
    return out | lesion_metrics(pred, ref, spacing, scheme)


def in_source_grid(
    entry: CaseEntry, pred: np.ndarray, ref: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and reference (X', Y', Z') on the crop of the source grid (a resampled case's
    prediction already brought back to it), pasted back into the source images' (X, Y, Z)
    grid: the reported numbers are those of the case as it was given
    (specificity counts the background outside the crop; an empty region's HD95 penalty is the
    whole volume's diagonal), so ``ablate evaluate`` of ``ablate predict``'s output matches."""
    return (
        restore_geometry(pred, entry.source_shape, entry.bbox),
        restore_geometry(ref, entry.source_shape, entry.bbox),
    )


@torch.no_grad()
def evaluate_cases(
    model: nn.Module,
    cfg: TrialConfig,
    cases: TestCases,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    prefix: str = TEST,
    progress: Progress | None = None,
) -> TestResult:
    """Predict every case whole (sliding window) with ``model``, post-process it
    (``validation.test_postprocess``) and score it; labelled cases only (an unlabelled case of
    an external set is skipped)."""
    rows: list[dict[str, Any]] = []
    for case in predicted_cases(model, cfg, cases, device, autocast):
        pred = postprocess_labels(case.labels, cfg.validation.test_postprocess, cases.scheme)
        pred, ref = in_source_grid(case.entry, pred, case.reference)
        tolerance = cfg.validation.tolerance_mm
        scores = score_case(pred, ref, case.entry.grid_spacing, cases.scheme, tolerance)
        named = {metric_name(prefix, k): v for k, v in scores.items()}
        rows.append({"case": case.case_id, **named})
        if progress:
            dice, seconds = scores["dice_mean"], time.perf_counter() - case.started
            progress(
                f"{prefix} {case.index}/{len(cases.case_ids)} {case.case_id}: dice_mean "
                f"{dice:.4f} ({seconds:.1f} s)"
            )
    return result_from_rows(rows, prefix)


@dataclass(frozen=True)
class PredictedCase:
    """One case predicted whole, before post-processing.

    Attributes:
        index: 1-based position among the cases asked for.
        case_id: the case.
        entry: its cache entry (crop box, source shape and spacing).
        labels: (X', Y', Z') internal labels on the crop of the source grid.
        reference: (X', Y', Z') its reference labels, same grid.
        started: ``time.perf_counter()`` when its prediction began.
    """

    index: int
    case_id: str
    entry: CaseEntry
    labels: np.ndarray
    reference: np.ndarray
    started: float


@torch.no_grad()
def predicted_cases(
    model: nn.Module,
    cfg: TrialConfig,
    cases: TestCases,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
) -> Iterator[PredictedCase]:
    """Every labelled case of ``cases`` predicted as the test pass predicts it (sliding window,
    ``validation.test_tta``, brought back to the source grid), one at a time; ``model`` is in
    eval mode meanwhile."""
    was_training = model.training
    model.eval()
    try:
        for index, case_id in enumerate(cases.case_ids, start=1):
            started = time.perf_counter()
            case = cases.dataset.load(case_id, modalities=cases.modalities, mmap=True)
            if case.label is None:
                continue
            entry = cases.dataset.entry(case_id)
            to_source = to_source_grid(entry.crop_shape, entry.spacing, entry.source_spacing)
            image, scheme = case.image, cases.scheme
            labels = _predict_labels(model, cfg, image, scheme, device, autocast, to_source)
            reference = np.asarray(cases.dataset.source_label(case_id))
            yield PredictedCase(index, case_id, entry, labels, reference, started)
    finally:
        model.train(was_training)


def _predict_labels(
    model: nn.Module,
    cfg: TrialConfig,
    image: np.ndarray,
    scheme: LabelScheme,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    to_source: ToSource | None,
) -> np.ndarray:
    """(*S) internal labels of one (C, *S) case, mirrored when ``validation.test_tta``, brought
    back to the source grid when resampled (``to_source``)."""
    labels = model_labels(
        lambda view: predict_case(model, cfg, view, device, autocast()),
        image,
        cfg.model.input_dims,
        cfg.loss,
        scheme,
        cfg.validation.test_tta,
        to_source,
    )
    return labels.cpu().numpy()


@contextmanager
def weights_loaded(model: nn.Module, weights: dict[str, torch.Tensor]) -> Iterator[nn.Module]:
    """``model`` with ``weights`` loaded; its own weights come back afterwards (CPU copy)."""
    own = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    model.load_state_dict(weights)
    try:
        yield model
    finally:
        model.load_state_dict(own)
