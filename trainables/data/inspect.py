"""``ablate data inspect``: load every case of a dataset directory and report what was found.

Each case becomes one row: modalities, shape, spacing, the label values present (in the
dataset's own codes, so a researcher recognises them) or the problem that makes the case
unusable. A bad case never hides the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.data.layouts import discover
from trainables.data.nifti import load_case_with_label_values
from trainables.data.parallel import map_cases
from trainables.data.preprocess import crop_shape, nonzero_bbox
from trainables.data.resample import dataset_target_spacing
from trainables.data.types import CaseRecord
from trainables.errors import CaseError

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class CaseReport:
    """One row of the report.

    Attributes:
        case_id: the case name.
        modalities: canonical modalities found (empty when discovery already rejected the case).
        shape: (X, Y, Z) voxels, None if the case did not load.
        spacing: voxel size in mm along (X, Y, Z), None if the case did not load.
        crop_shape: (X, Y, Z) voxels of the box non-zero in any modality (what
            ``crop_to_nonzero`` keeps; nnU-Net's ``shapes_after_crop``), None if not loaded.
        labels: label values present in source codes, None without a (loadable) label.
        has_label: whether a label file was found.
        problem: why the case cannot be used, None when it loaded.
        problem_file: the file (or folder) the problem is in.
    """

    case_id: str
    modalities: tuple[str, ...]
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    crop_shape: tuple[int, int, int] | None = None
    labels: tuple[int, ...] | None = None
    has_label: bool = False
    problem: str | None = None
    problem_file: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {
            "case_id": self.case_id,
            "modalities": list(self.modalities),
            "shape": list(self.shape) if self.shape else None,
            "spacing": list(self.spacing) if self.spacing else None,
            "crop_shape": list(self.crop_shape) if self.crop_shape else None,
            "labels": list(self.labels) if self.labels is not None else None,
            "has_label": self.has_label,
            "ok": self.ok,
            "problem": self.problem,
            "problem_file": self.problem_file,
        }


@dataclass
class InspectReport:
    """What :func:`inspect_dataset` found: one :class:`CaseReport` per case, sorted by id."""

    root: Path
    layout: str
    label_scheme: str | None
    cases: list[CaseReport]

    @property
    def problems(self) -> list[CaseReport]:
        """Rows of the cases that cannot be used (empty when every case loaded)."""
        return [c for c in self.cases if not c.ok]

    @property
    def num_ok(self) -> int:
        return sum(c.ok for c in self.cases)

    @property
    def num_problems(self) -> int:
        return len(self.cases) - self.num_ok

    @property
    def target_spacing(self) -> tuple[float, float, float] | None:
        """What ``data.preprocess.resample: {kind: target_spacing}`` would resample this dataset
        to (nnU-Net's rule over the usable labelled cases, all usable ones when none is
        labelled); None when no case loaded. Shapes are the source files', as prepare reads."""
        usable = [c for c in self.cases if c.ok and c.spacing and c.shape]
        chosen = [c for c in usable if c.has_label] or usable
        if not chosen:
            return None
        spacings = [c.spacing for c in chosen if c.spacing]
        return dataset_target_spacing(spacings, [c.shape for c in chosen if c.shape])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for ``ablate data inspect --json``."""
        target = self.target_spacing
        return {
            "root": str(self.root),
            "layout": self.layout,
            "label_scheme": self.label_scheme,
            "num_cases": len(self.cases),
            "num_ok": self.num_ok,
            "num_problems": self.num_problems,
            "target_spacing": list(target) if target else None,
            "cases": [c.to_dict() for c in self.cases],
        }

    def spacing_line(self) -> str | None:
        """``spacing: 0.80x0.80x1.00 to 0.80x0.80x2.50 mm; ...target 0.80x0.80x1.75 mm``."""
        target = self.target_spacing
        if target is None:
            return None
        seen = sorted({c.spacing for c in self.cases if c.ok and c.spacing})
        if len(seen) == 1 and all(
            math.isclose(a, b, rel_tol=1e-5) for a, b in zip(seen[0], target, strict=True)
        ):
            return f"spacing: {_mm(target)} mm in every case (resampling would change nothing)"
        span = f"{_mm(seen[0])} to {_mm(seen[-1])}" if len(seen) > 1 else _mm(seen[0])
        return (
            f"spacing: {span} mm over {len(seen)} distinct grids; data.preprocess.resample "
            f"{{kind: target_spacing}} would resample to {_mm(target)} mm"
        )

    def format_table(self) -> str:
        """Human-readable report: a summary line, then one aligned line per case."""
        head = (
            f"{self.root} (layout {self.layout}, labels {self.label_scheme or '-'}): "
            f"{len(self.cases)} cases, {self.num_ok} usable, {self.num_problems} with problems"
        )
        header = ("case", "modalities", "shape", "spacing (mm)", "labels", "status")
        rows = [header, *(_row(c, self.root) for c in self.cases)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
        lines = [
            "  ".join([*(v.ljust(w) for v, w in zip(r[:-1], widths, strict=True)), r[-1]])
            for r in rows
        ]
        spacing = self.spacing_line()
        return "\n".join([head, *([spacing] if spacing else []), *lines])


def inspect_dataset(
    root: str | Path,
    progress: Progress | None = None,
    label_scheme: str = "auto",
    workers: int = 1,
) -> InspectReport:
    """Discover and load every case of ``root``.

    Args:
        root: dataset directory in any layout :func:`~trainables.data.layouts.discover` reads.
        progress: called as ``progress(done, total, case_id)`` after each case is loaded.
        label_scheme: "auto" or a scheme name, passed to ``discover``.
        workers: processes that load cases side by side (1: this process, one at a time).

    Raises:
        InputError: the directory is missing, empty or in no known layout.
    """
    index = discover(root, label_scheme)
    rows = [_problem_row(err, ()) for err in index.problems]
    jobs = [(record,) for record in index.cases]
    names = [record.case_id for record in index.cases]
    rows.extend(map_cases(_inspect_case, jobs, names, workers, progress))
    rows.sort(key=lambda r: r.case_id)
    return InspectReport(index.root, index.layout, index.label_scheme, rows)


def _inspect_case(record: CaseRecord) -> CaseReport:
    """Load one case; a CaseError becomes the row's problem."""
    try:
        case, values = load_case_with_label_values(record)
    except CaseError as err:
        return _problem_row(err, record.modalities, has_label=record.label is not None)
    shape = (int(case.image.shape[1]), int(case.image.shape[2]), int(case.image.shape[3]))
    return CaseReport(
        case_id=record.case_id,
        modalities=case.modalities,
        shape=shape,
        spacing=case.spacing,
        crop_shape=crop_shape(nonzero_bbox(case.image), shape),  # type: ignore[arg-type]
        labels=values,
        has_label=record.label is not None,
    )


def _problem_row(
    err: CaseError, modalities: tuple[str, ...], has_label: bool = False
) -> CaseReport:
    return CaseReport(
        case_id=err.case_id,
        modalities=modalities,
        has_label=has_label,
        problem=err.message,
        problem_file=err.path,
    )


def _row(case: CaseReport, root: Path) -> tuple[str, ...]:
    """Table cells of one case; paths shown relative to the dataset root."""
    shape = "x".join(str(n) for n in case.shape) if case.shape else "-"
    spacing = _mm(case.spacing) if case.spacing else "-"
    if case.labels is not None:
        labels = ",".join(str(v) for v in case.labels)
    else:
        labels = "none" if case.ok else "-"
    where = f"{_relative(case.problem_file, root)}: " if case.problem_file else ""
    status = "ok" if case.ok else f"ERROR {where}{case.problem}"
    return case.case_id, ",".join(case.modalities) or "-", shape, spacing, labels, status


def _mm(spacing: tuple[float, float, float]) -> str:
    return "x".join(f"{s:.2f}" for s in spacing)


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path
