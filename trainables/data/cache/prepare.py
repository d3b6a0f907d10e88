"""Prepare a dataset into the cache: decode, preprocess and write each case once."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from trainables.data.cache.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    CaseEntry,
    Manifest,
    Progress,
    SkippedCase,
    SourceFile,
)
from trainables.data.fingerprint import with_dataset_spacing, with_dataset_stats
from trainables.data.labels import (
    get_scheme,
    internal_scheme,
)
from trainables.data.layouts import discover
from trainables.data.nifti import load_case
from trainables.data.parallel import map_cases
from trainables.data.preprocess import PreprocessConfig, foreground_sample
from trainables.data.preprocess import preprocess as preprocess_case
from trainables.data.types import CaseRecord, LoadedCase
from trainables.errors import CaseError, InputError

_FLOAT16_MAX = float(np.finfo(np.float16).max)
_PREVIOUS = f".{MANIFEST}.previous"  # the earlier manifest while a new cache is prepared

# ---- prepare ----------------------------------------------------------------------------------


def prepare(
    source: str | Path,
    out: str | Path,
    preprocess: PreprocessConfig,
    label_scheme: str = "auto",
    progress: Progress | None = None,
    workers: int = 1,
) -> Manifest:
    """Decode, preprocess and store every case of ``source`` under ``out``.

    Args:
        source: dataset directory in any layout :func:`discover` knows.
        out: cache directory: new, empty, or an earlier cache (it is overwritten).
        preprocess: preprocessing applied to each case; ``foreground`` normalisation without
            ``stats`` first gets them from the dataset's labelled cases
            (:func:`~trainables.data.fingerprint.with_dataset_stats`, one more decoding pass),
            ``target_spacing`` resampling without ``spacing`` from their headers
            (:func:`~trainables.data.fingerprint.with_dataset_spacing`).
        label_scheme: source label scheme name or "auto".
        progress: called as ``progress(done, total, case_id)`` after each case.
        workers: processes decoding cases in parallel (1 = in this process).

    Returns:
        The manifest written to ``out/manifest.json`` (``preprocess``: the config applied, with
        the statistics; ``fingerprint``: the requested config's). Cases that fail are listed in
        ``manifest.skipped`` with their CaseError text; the others are prepared.

    Raises:
        InputError: ``out`` and ``source`` overlap, ``out`` holds other files, or no case could
            be prepared.
    """
    source, out = _checked_paths(source, out)
    index = discover(source, label_scheme)
    applied = with_dataset_stats(preprocess, index.cases, workers, progress)
    applied = with_dataset_spacing(applied, index.cases)
    _claim_output(out)
    jobs = [(record, out / "cases", applied) for record in index.cases]
    names = [record.case_id for record in index.cases]
    results = map_cases(_prepare_case, jobs, names, workers, progress)
    entries = [r for r in results if isinstance(r, CaseEntry)]
    skipped = [SkippedCase(case_id=p.case_id, message=str(p)) for p in index.problems]
    skipped += [r for r in results if isinstance(r, SkippedCase)]
    if not entries:  # nothing was written: the earlier cache, if any, is still whole
        if (out / _PREVIOUS).is_file():
            (out / _PREVIOUS).replace(out / MANIFEST)
        details = "; ".join(s.message for s in skipped[:5])
        raise InputError(f"no case could be prepared ({details})", where=source)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        source=str(source),
        layout=index.layout,
        label_scheme=label_scheme,
        internal_scheme=_internal_scheme_name(entries, source),
        preprocess=applied,
        fingerprint=preprocess.fingerprint(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        cases=tuple(entries),
        skipped=tuple(skipped),
    )
    _remove_stale(out / "cases", keep={e.case_id for e in entries})
    _write_manifest(out, manifest)
    (out / _PREVIOUS).unlink(missing_ok=True)
    return manifest


def _checked_paths(source: str | Path, out: str | Path) -> tuple[Path, Path]:
    """Absolute paths; refuse overlapping source and output (we must never write into data)."""
    src, dst = Path(source).expanduser().resolve(), Path(out).expanduser().resolve()
    if dst == src or src in dst.parents:
        raise InputError(f"the cache directory {dst} is inside the source directory {src}", dst)
    if dst in src.parents:
        raise InputError(f"the source directory {src} is inside the cache directory {dst}", dst)
    return src, dst


def _claim_output(out: Path) -> None:
    """Make ``out`` an (invalid until finished) cache dir; refuse dirs holding anything else."""
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a directory", where=out)
    if out.is_dir():
        ours = (MANIFEST, "cases")
        names = [p.name for p in out.iterdir()]
        foreign = sorted(n for n in names if n not in ours and not n.startswith(f".{MANIFEST}."))
        # Stale case dirs get deleted later: only ever delete .npy files this module could write.
        cases = out / "cases"
        ours_only = not cases.exists() or all(
            p.suffix == ".npy" for p in cases.rglob("*") if not p.is_dir()
        )
        if foreign or not ours_only:
            foreign = foreign or ["files other than .npy under cases/"]
            raise InputError(
                f"is not empty and not a prepared cache (found {', '.join(foreign[:3])}); "
                "choose a new or empty directory",
                where=out,
            )
        for name in names:  # drop an interrupted run's temp files (and a stale previous)
            if name not in ours:
                (out / name).unlink()
        if MANIFEST in names:  # invalid until the new manifest; kept aside to restore on failure
            (out / MANIFEST).replace(out / _PREVIOUS)
    (out / "cases").mkdir(parents=True, exist_ok=True)


def _prepare_case(
    record: CaseRecord, cases_dir: Path, cfg: PreprocessConfig
) -> CaseEntry | SkippedCase:
    """Decode, preprocess and write one case; a CaseError becomes a SkippedCase."""
    sources = source_files(record)  # stat before reading: a change during the read is caught
    try:
        loaded = load_case(record)
        case = preprocess_case(loaded, cfg)
        _check_float16_range(case)
    except CaseError as err:
        return SkippedCase(case_id=record.case_id, message=str(err), sources=sources)
    fg, fg_classes = foreground_sample(case.label, record.case_id)
    _write_case_dir(cases_dir, case, fg, _source_label(loaded, case))
    return CaseEntry(
        case_id=case.case_id,
        label_scheme=record.label_scheme,
        modalities=case.modalities,
        shape=case.image.shape[1:],
        source_shape=loaded.image.shape[1:],
        spacing=case.spacing,
        bbox=case.bbox,
        affine=np.asarray(case.affine, dtype=float).tolist(),
        has_label=case.label is not None,
        fg_classes=fg_classes,
        sources=sources,
        source_spacing=case.source_spacing,
    )


def _source_label(loaded: LoadedCase, case: LoadedCase) -> np.ndarray | None:
    """The label on the source grid's crop, kept for a resampled case (the test pass scores
    predictions brought back to this grid); None when the case was not resampled."""
    if case.source_spacing is None or loaded.label is None:
        return None
    if case.bbox is None:
        return loaded.label
    return loaded.label[tuple(slice(lo, hi) for lo, hi in case.bbox)]


def source_files(record: CaseRecord) -> tuple[SourceFile, ...]:
    """Size and mtime of the case's files (an MSD 4-D file once even if it holds 4 modalities)."""
    paths = sorted({*record.images.values(), *([record.label] if record.label else [])})
    files = []
    for path in paths:
        stat = Path(path).stat()
        files.append(SourceFile(path=str(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns))
    return tuple(files)


def _check_float16_range(case: LoadedCase) -> None:
    """Raw intensities (normalization "none") may overflow float16: refuse rather than store inf."""
    peak = float(np.abs(case.image).max()) if case.image.size else 0.0
    if peak > _FLOAT16_MAX:
        raise CaseError(
            case.case_id,
            f"intensity {peak:g} does not fit the cache's float16 (max {_FLOAT16_MAX:g}); "
            "use a normalization other than 'none'",
        )


def _write_case_dir(
    cases_dir: Path, case: LoadedCase, fg: np.ndarray, source_label: np.ndarray | None
) -> None:
    """Write the arrays into a temp dir, then rename it into place (replacing an old one)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{case.case_id}-", dir=cases_dir))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared between users' jobs
    np.save(tmp / "image.npy", case.image.astype(np.float16))
    if case.label is not None:
        np.save(tmp / "label.npy", np.ascontiguousarray(case.label, dtype=np.uint8))
    if source_label is not None:
        np.save(tmp / "source_label.npy", np.ascontiguousarray(source_label, dtype=np.uint8))
    np.save(tmp / "fg_locations.npy", fg)
    final = cases_dir / case.case_id
    if final.exists():
        old = cases_dir / f".old-{case.case_id}-{uuid.uuid4().hex[:8]}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)


def _internal_scheme_name(entries: Sequence[CaseEntry], source: Path) -> str:
    """The one internal scheme all prepared cases map onto (BraTS regions or binary)."""
    names = {internal_scheme(get_scheme(e.label_scheme)).name for e in entries}
    if len(names) > 1:
        raise InputError(f"cases mix label schemes that map onto {sorted(names)}", where=source)
    return names.pop()


def _remove_stale(cases_dir: Path, keep: set[str]) -> None:
    """Delete case dirs of an earlier run that are not in the new manifest (and temp leftovers)."""
    for path in cases_dir.iterdir():
        if path.name not in keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _write_manifest(out: Path, manifest: Manifest) -> None:
    tmp = out / f".{MANIFEST}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(manifest.model_dump_json(indent=1))
    os.replace(tmp, out / MANIFEST)
