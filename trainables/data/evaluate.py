"""``ablate evaluate``: BraTS metrics of NIfTI predictions against a labelled dataset.

Predictions are ``PRED_DIR/<case_id>.nii.gz`` (or ``.nii``) label maps in the *reference
dataset's* label scheme, as in a BraTS submission (0/1/2/4 for BraTS 2021). References come
from :func:`~trainables.data.layouts.discover` on REF_DIR, in any supported layout. Both are
mapped to internal codes and scored by :func:`trainables.metrics.case_metrics` per region,
and (unless ``lesion_wise=False``) by :func:`trainables.metrics.lesion_metrics`: the BraTS 2023
lesion-wise Dice and HD95 (glioma rule: dilation 3, lesions of at most 50 mm³ ignored).

Cases that cannot be scored (missing prediction, prediction without reference, wrong shape or
another voxel grid than the reference's, unknown label values, unreadable file) become
problems; the rest are still scored.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.data.files import nifti_files, nifti_stem
from trainables.data.labels import LabelScheme, get_scheme, internal_scheme
from trainables.data.layouts import discover, is_msd_folder
from trainables.data.nifti import load_label
from trainables.data.nifti_grid import check_affine
from trainables.data.types import CaseRecord
from trainables.errors import CaseError, InputError
from trainables.metrics import METRIC_NAMES, case_metrics, lesion_metrics, mean_metrics

Progress = Callable[[int, int, str], None]

# Per-case columns of the human-readable table; every metric is in to_dict().
_TABLE_METRICS: tuple[str, ...] = ("dice", "hd95", "nsd")
_LESION_METRICS: tuple[str, ...] = ("lesion_dice", "lesion_hd95")


@dataclass
class EvaluationReport:
    """Metrics per case and their means.

    Attributes:
        pred_dir, ref_dir: the two directories (absolute).
        label_scheme: the reference dataset's source label scheme.
        tolerance_mm: surface Dice (NSD) tolerance in mm.
        cases: one dict per scored case: ``case_id`` plus ``<metric>_<region>`` floats
            (hd95 and lesion_hd95 in mm), sorted by case id.
        mean: per metric key, the mean over scored cases (NaN values skipped).
        problems: one :class:`CaseError` per case that could not be scored.
        lesion_wise: whether the cases hold ``lesion_dice_<region>`` and ``lesion_hd95_<region>``.
    """

    pred_dir: Path
    ref_dir: Path
    label_scheme: str
    tolerance_mm: float
    cases: list[dict[str, Any]]
    mean: dict[str, float]
    problems: list[CaseError]
    lesion_wise: bool = False

    @property
    def regions(self) -> tuple[str, ...]:
        """Evaluated regions ("wt", "tc", "et" or "fg")."""
        return internal_scheme(get_scheme(self.label_scheme)).region_names

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN (undefined, e.g. RVD of an empty reference) becomes null."""
        return {
            "pred_dir": str(self.pred_dir),
            "ref_dir": str(self.ref_dir),
            "label_scheme": self.label_scheme,
            "tolerance_mm": self.tolerance_mm,
            "lesion_wise": self.lesion_wise,
            "num_cases": len(self.cases),
            "cases": [{k: _json_value(v) for k, v in case.items()} for case in self.cases],
            "mean": {k: _json_value(v) for k, v in self.mean.items()},
            "mean_cases": self.mean_cases(),
            "problems": [_problem_dict(p) for p in self.problems],
        }

    def mean_cases(self) -> dict[str, int]:
        """How many cases a mean is over, for the keys where it is fewer than the scored
        cases (a value undefined for a case, e.g. its RVD, is left out of the mean)."""
        counts: dict[str, int] = {}
        for case in self.cases:
            for key, value in case.items():
                if key != "case_id" and not (isinstance(value, float) and math.isnan(value)):
                    counts[key] = counts.get(key, 0) + 1
        keys = [k for k in self.mean if k != "case_id"]
        return {k: counts.get(k, 0) for k in keys if counts.get(k, 0) < len(self.cases)}

    def format_table(self) -> str:
        """Summary, one line per case (Dice, HD95, NSD, lesion Dice by region), means, problems."""
        head = (
            f"{self.pred_dir} vs {self.ref_dir} (labels {self.label_scheme}, NSD tolerance "
            f"{self.tolerance_mm:g} mm): {len(self.cases)} cases scored, "
            f"{len(self.problems)} problems"
        )
        columns = _TABLE_METRICS + (_LESION_METRICS[:1] if self.lesion_wise else ())
        keys = [f"{m}_{r}" for m in columns for r in self.regions]
        rows = [("case", *keys), *((c["case_id"], *(_fmt(c[k]) for k in keys)) for c in self.cases)]
        parts = [head, _align(rows)]
        if self.cases:
            parts.append(self._mean_table())
        if self.problems:
            lines = [f"  {p.case_id}: {p}" for p in self.problems]
            parts.append("\n".join(["problems:", *lines]))
        return "\n\n".join(parts)

    def _mean_table(self) -> str:
        """Every metric's mean as a metric x region grid, then the mean Dice over regions."""
        rows = [(f"mean over {len(self.cases)} cases", *self.regions)]
        fewer = self.mean_cases()  # "0.250 (1 case)" where a value is undefined for some

        def cell(key: str) -> str:
            n = fewer.get(key)
            return _fmt(self.mean[key]) + ("" if n is None else f" ({n} case{'s' * (n != 1)})")

        for metric in METRIC_NAMES + (_LESION_METRICS if self.lesion_wise else ()):
            unit = " (mm)" if metric.endswith("hd95") else ""
            rows.append((metric + unit, *(cell(f"{metric}_{r}") for r in self.regions)))
        text = _align(rows)
        if "dice_mean" in self.mean:
            text += f"\ndice_mean {_fmt(self.mean['dice_mean'])}"
        return text


def evaluate_predictions(
    pred_dir: str | Path,
    ref_dir: str | Path,
    tolerance_mm: float = 1.0,
    progress: Progress | None = None,
    lesion_wise: bool = True,
    label_scheme: str = "auto",
) -> EvaluationReport:
    """Score every reference case against its prediction.

    Args:
        pred_dir: folder of ``<case_id>.nii.gz`` label maps in the reference's label scheme.
        ref_dir: labelled dataset directory in any supported layout.
        tolerance_mm: surface Dice tolerance in mm.
        progress: called as ``progress(done, total, case_id)`` after each reference case.
        lesion_wise: also compute the BraTS 2023 lesion-wise Dice and HD95 (one
            connected-component pass per region and case).
        label_scheme: the reference's label values: "auto" (its layout's, or its
            dataset.json's) or a scheme name (``ablate evaluate --label-scheme``).

    Raises:
        InputError: PRED_DIR missing or without NIfTI files; REF_DIR unreadable (see
            ``discover``) or without a usable case.
    """
    pred_root = Path(pred_dir).expanduser().absolute()
    preds, problems = _prediction_files(pred_root)
    # BraTS reference cases are scored on their labels alone: one lacking an image modality
    # (partial) still counts; an MSD folder keeps its labelled imagesTr/ cases only
    partial = not is_msd_folder(Path(ref_dir).expanduser())
    ref = discover(ref_dir, label_scheme, partial=partial)
    if not ref.cases:
        detail = f" ({ref.problems[0]})" if ref.problems else ""
        raise InputError(f"no usable reference case{detail}", where=ref.root)
    scheme = get_scheme(ref.cases[0].label_scheme)
    problems += ref.problems
    cases: list[dict[str, Any]] = []
    for done, record in enumerate(ref.cases, start=1):
        try:
            pred_path = preds.get(record.case_id, pred_root / f"{record.case_id}.nii.gz")
            cases.append(_score_case(record, pred_path, scheme, tolerance_mm, lesion_wise))
        except CaseError as err:
            problems.append(err)
        if progress is not None:
            progress(done, len(ref.cases), record.case_id)
    problems += _orphans(preds, ref.case_ids + [p.case_id for p in ref.problems], ref.root)
    problems.sort(key=lambda p: p.case_id)
    mean = mean_metrics([{k: v for k, v in c.items() if k != "case_id"} for c in cases])
    return EvaluationReport(
        pred_root, ref.root, scheme.name, tolerance_mm, cases, mean, problems, lesion_wise
    )


def _prediction_files(folder: Path) -> tuple[dict[str, Path], list[CaseError]]:
    """Case id -> prediction file; duplicates (``x.nii`` and ``x.nii.gz``) are problems."""
    if not folder.is_dir():
        raise InputError("prediction directory does not exist", where=folder)
    grouped: dict[str, list[Path]] = {}
    for path in nifti_files(folder):
        grouped.setdefault(nifti_stem(path) or path.name, []).append(path)
    if not grouped:
        raise InputError("no <case_id>.nii.gz predictions in the prediction directory", folder)
    preds = {case_id: paths[0] for case_id, paths in grouped.items() if len(paths) == 1}
    problems = [
        CaseError(case_id, f"several predictions: {', '.join(p.name for p in paths)}", folder)
        for case_id, paths in grouped.items()
        if len(paths) > 1
    ]
    return preds, problems


def _score_case(
    record: CaseRecord,
    pred_path: Path,
    scheme: LabelScheme,
    tolerance_mm: float,
    lesion_wise: bool,
) -> dict[str, Any]:
    """Metrics of one case; CaseError naming the file for anything that prevents scoring."""
    case_id = record.case_id
    if record.label is None:
        folder = next(iter(record.images.values())).parent
        raise CaseError(case_id, "reference case has no label file", folder)
    if not pred_path.is_file():
        raise CaseError(case_id, "missing prediction for this reference case", pred_path)
    # dataset.json holds the reference to its values; a prediction only to the scheme (binary
    # foreground coded 1 by another tool, or by ablate before it wrote the dataset's code)
    ref, spacing, ref_affine = load_label(record.label, scheme, case_id, record.label_values)
    pred, _, pred_affine = load_label(pred_path, scheme, case_id)
    if pred.shape != ref.shape:
        message = (
            f"prediction shape {pred.shape} does not match the reference shape {ref.shape} "
            f"of {record.label}"
        )
        raise CaseError(case_id, message, pred_path)
    # same shape on another grid (shifted, resampled) would be scored voxel by voxel, wrongly
    check_affine(case_id, pred_path, "prediction and reference", pred_affine, ref_affine)
    metrics = case_metrics(pred, ref, spacing, internal_scheme(scheme), tolerance_mm)
    if lesion_wise:
        metrics.update(lesion_metrics(pred, ref, spacing, internal_scheme(scheme)))
    return {"case_id": case_id, **metrics}


def _orphans(preds: dict[str, Path], known: list[str], ref_root: Path) -> list[CaseError]:
    """Predictions whose case id is not in the reference dataset; one named like a case plus
    a suffix (``c0_seg``, nnU-Net's ``c0_0000``) says which name would be read."""
    known_ids = set(known)
    problems = []
    for case_id, path in preds.items():
        if case_id in known_ids:
            continue
        message = f"prediction has no reference case in {ref_root}"
        stems = [
            k for k in known if case_id.startswith(k) and case_id[len(k) : len(k) + 1] in "_-."
        ]
        if stems:
            stem = max(stems, key=len)
            message += f"; for case {stem} name it {stem}.nii.gz (without {case_id[len(stem) :]!r})"
        problems.append(CaseError(case_id, message, path))
    return problems


def _problem_dict(err: CaseError) -> dict[str, str | None]:
    return {"case_id": err.case_id, "file": err.path, "problem": err.message}


def _json_value(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.3f}"


def _align(rows: list[tuple[str, ...]]) -> str:
    """Left-align the first column, right-align the numbers."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            row[0].ljust(widths[0]),
            *(v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)
