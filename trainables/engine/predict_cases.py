"""``ablate predict``'s loop: every case of an input folder -> ``<out>/<case>.nii.gz``.

Input folders hold images only (labels are ignored when present) in any layout
:func:`~trainables.data.layouts.discover` knows. Problems found before any voxel is read (the
model's channels or label scheme do not fit the input, an output folder that already holds
files) are :class:`InputError`; a case that cannot be predicted (a modality the model needs is
missing, an unreadable file) becomes a problem naming it while the other cases are predicted.
Each label map is written through a temporary file and renamed, so a file named like a case is
always complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trainables.data.labels import LabelScheme, get_scheme, internal_scheme, scheme_kind
from trainables.data.layouts import DatasetIndex, discover
from trainables.data.nifti import open_nifti
from trainables.data.restore import restore_geometry, to_source_labels, write_label_nifti
from trainables.data.types import CaseRecord
from trainables.engine.predict import Predictor, prepare_input, source_grid_of
from trainables.errors import CaseError, InputError

Progress = Callable[[str], None]


@dataclass
class PredictReport:
    """What one ``ablate predict`` wrote.

    Attributes:
        out_dir: the output folder (absolute).
        label_scheme: the source label scheme the files are written in (e.g. brats2021).
        written: one ``<case>.nii.gz`` per predicted case, in case order.
        problems: one :class:`CaseError` per case that was not predicted.
        seconds: wall time per predicted case (s), in the same order as ``written``.
    """

    out_dir: Path
    label_scheme: str
    written: list[Path] = field(default_factory=list)
    problems: list[CaseError] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def predict_directory(
    predictor: Predictor,
    input_dir: str | Path,
    out_dir: str | Path,
    tta: bool = False,
    overwrite: bool = False,
    label_scheme: str = "auto",
    progress: Progress | None = None,
) -> PredictReport:
    """Predict every case of ``input_dir`` into ``out_dir`` (see the module docstring).

    Args:
        label_scheme: the input's label convention for the output files; "auto" takes the
            layout's (BraTS <= 2021 0/1/2/4, BraTS 2023 0/1/2/3, MSD Task01, binary CT).

    Raises:
        InputError: no usable case, channels or label scheme the model cannot serve, an
            output folder inside the input or already holding files (without ``overwrite``).
    """
    index = discover(input_dir, label_scheme, partial=True)
    if not index.cases:
        detail = f" ({index.problems[0]})" if index.problems else ""
        raise InputError(f"no usable case to predict{detail}", index.root)
    scheme = get_scheme(index.label_scheme or "auto")
    check_compatible(predictor, index, scheme)
    out = check_output(out_dir, index.root, overwrite)
    report = PredictReport(out, scheme.name, problems=list(index.problems))
    started = time.monotonic()
    for done, record in enumerate(index.cases, start=1):
        tic, status = time.monotonic(), "written"
        try:
            report.written.append(predict_record(predictor, record, scheme, out, tta))
            report.seconds.append(time.monotonic() - tic)
        except CaseError as err:
            report.problems.append(err)
            status = f"not predicted: {err.message}"
        if progress is not None:
            progress(_progress_line(done, len(index.cases), record.case_id, started, status))
    report.problems.sort(key=lambda p: p.case_id)
    return report


def predict_record(
    predictor: Predictor, record: CaseRecord, scheme: LabelScheme, out: Path, tta: bool
) -> Path:
    """One case: preprocess, predict, undo the resampling and the crop, map to ``scheme``'s
    values, write."""
    case = prepare_input(record, predictor)  # first: names a missing modality (CaseError)
    reference = open_nifti(record.images[predictor.modalities[0]], record.case_id, header_only=True)
    shape = reference.shape[:3]
    labels = predictor.predict(case.image, tta, source_grid_of(case, shape))
    full = restore_geometry(labels, shape, case.bbox)
    source = to_source_labels(full, scheme, record.label_values)
    return write_label_nifti(source, reference, out / f"{record.case_id}.nii.gz")


def check_compatible(predictor: Predictor, index: DatasetIndex, scheme: LabelScheme) -> None:
    """The model's outputs must map onto the input's labels, and some case must have every
    modality the model reads (a config that does not match the input's channels)."""
    if internal_scheme(scheme).name != predictor.scheme.name:
        kind = scheme_kind(predictor.scheme)
        raise InputError(
            f"the model predicts {kind} labels, but the input is {index.layout} with "
            f"{scheme.name} labels; use a model trained on this kind of data",
            index.root,
        )
    have = sorted({m for case in index.cases for m in case.images})
    absent = [m for m in predictor.modalities if not any(m in c.images for c in index.cases)]
    if absent:
        raise InputError(
            f"the model reads {', '.join(predictor.modalities)} but no input case has "
            f"{', '.join(absent)} (the cases have {', '.join(have)}): the model's config does "
            "not match the input's channels",
            index.root,
        )


def check_output(
    out_dir: str | Path, input_root: Path, overwrite: bool, create: bool = True
) -> Path:
    """The output folder, created unless ``create`` is False (a check before the model loads);
    refused inside the input, or holding files without ``overwrite`` (then only the files of
    the predicted cases are replaced)."""
    out = Path(out_dir).expanduser().absolute()
    if out == input_root or input_root in out.parents:
        raise InputError(f"the output folder is inside the input folder {input_root}", out)
    if out.exists() and not out.is_dir():
        raise InputError("the output path exists and is not a folder", out)
    existing = (
        sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.is_dir() else []
    )
    if existing and not overwrite:
        shown = ", ".join(existing[:3]) + (", ..." if len(existing) > 3 else "")
        raise InputError(
            f"the output folder already holds {len(existing)} files ({shown}); pass --overwrite "
            "to replace predictions, or choose an empty folder",
            out,
        )
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out


def _progress_line(done: int, total: int, case_id: str, started: float, status: str) -> str:
    """``predict 2/5 case: written; 12.3 s elapsed, about 18 s left`` (mean time per case)."""
    elapsed = time.monotonic() - started
    left = elapsed / done * (total - done)
    return (
        f"predict {done}/{total} {case_id}: {status}; {elapsed:.1f} s elapsed, "
        f"about {left:.0f} s left"
    )
