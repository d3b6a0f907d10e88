"""The prepared cache: every case decoded and preprocessed once, stored as memory-mappable .npy.

Decoding a BraTS case's four .nii.gz files costs ~0.25 s of CPU (gzip + scaling); reading the
same preprocessed case back from an uncompressed float16 ``.npy`` costs a few ms, and memory
mapping lets a patch sampler touch only the pages it needs. Layout::

    <cache>/manifest.json                     Manifest (written last: no manifest = no cache)
    <cache>/cases/<case_id>/image.npy         (C, X, Y, Z) float16, all modalities, canonical order
    <cache>/cases/<case_id>/label.npy         (X, Y, Z) uint8 internal codes (absent if unlabelled)
    <cache>/cases/<case_id>/fg_locations.npy  (N, 3) int32 foreground voxel coordinates

``fg_locations`` holds, **per internal class** 1..K, a random subsample of up to 10k
(:data:`~trainables.data.preprocess.FG_SAMPLES_PER_CLASS`) voxel coordinates of that class,
concatenated in class order (the manifest's ``fg_classes`` gives the count per class). Per class
rather than for the whole foreground so a small class (enhancing tumour) is as well represented
as a large one: a uniform draw over all rows picks each class about equally often once classes
exceed the cap. Coordinates index the cached (cropped) arrays.

Every case is written into a temporary directory and renamed into place, and the manifest is
written last, so an interrupted run never leaves a cache that looks complete. The cache never
writes into the source directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from trainables.config import Frozen
from trainables.data.labels import (
    INTERNAL_BINARY,
    INTERNAL_BRATS,
    LabelScheme,
    get_scheme,
    internal_scheme,
)
from trainables.data.layouts import discover
from trainables.data.nifti import load_case
from trainables.data.preprocess import PreprocessConfig, foreground_sample
from trainables.data.preprocess import preprocess as preprocess_case
from trainables.data.types import CaseRecord, LoadedCase
from trainables.errors import CaseError, InputError

# Bump when the on-disk layout or the manifest schema changes; older caches are then refused by
# PreparedDataset and rebuilt by ensure_prepared.
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_FLOAT16_MAX = float(np.finfo(np.float16).max)

Progress = Callable[[int, int, str], None]


class SourceFile(Frozen):
    """One source file as it was when the case was prepared (for change detection)."""

    path: str
    size: int
    mtime_ns: int


class CaseEntry(Frozen):
    """One prepared case.

    ``label_scheme`` is the case's source scheme; ``shape`` the cached (cropped) (X, Y, Z);
    ``spacing`` mm; ``bbox`` the crop in source-grid voxels; ``affine`` the source files' (4, 4);
    ``fg_classes`` (internal class, stored locations) pairs in ``fg_locations.npy`` order.
    """

    case_id: str
    label_scheme: str
    modalities: tuple[str, ...]
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    bbox: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None
    affine: tuple[tuple[float, float, float, float], ...]
    has_label: bool
    fg_classes: tuple[tuple[int, int], ...]
    sources: tuple[SourceFile, ...]


class SkippedCase(Frozen):
    """A case that could not be prepared, with the CaseError text."""

    case_id: str
    message: str
    sources: tuple[SourceFile, ...] = ()


class Manifest(Frozen):
    """What a cache holds and how it was made (``<cache>/manifest.json``).

    ``source`` is the absolute dataset directory; ``label_scheme`` the scheme requested ("auto"
    or a name), ``internal_scheme`` the name of the internal scheme the stored labels use;
    ``skipped`` lists cases that could not be prepared (discovery problems and CaseErrors).
    """

    format_version: int
    source: str
    layout: str
    label_scheme: str
    internal_scheme: str
    preprocess: PreprocessConfig
    fingerprint: str
    created: str
    cases: tuple[CaseEntry, ...]
    skipped: tuple[SkippedCase, ...]


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
        preprocess: preprocessing applied to each case.
        label_scheme: source label scheme name or "auto".
        progress: called as ``progress(done, total, case_id)`` after each case.
        workers: processes decoding cases in parallel (1 = in this process).

    Returns:
        The manifest written to ``out/manifest.json``. Cases that fail are listed in
        ``manifest.skipped`` with their CaseError text; the others are prepared.

    Raises:
        InputError: ``out`` and ``source`` overlap, ``out`` holds other files, or no case could
            be prepared.
    """
    source, out = _checked_paths(source, out)
    index = discover(source, label_scheme)
    _claim_output(out)
    results = _prepare_all(index.cases, out / "cases", preprocess, progress, workers)
    entries = [r for r in results if isinstance(r, CaseEntry)]
    skipped = [SkippedCase(case_id=p.case_id, message=str(p)) for p in index.problems]
    skipped += [r for r in results if isinstance(r, SkippedCase)]
    if not entries:
        details = "; ".join(s.message for s in skipped[:5])
        raise InputError(f"no case could be prepared ({details})", where=source)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        source=str(source),
        layout=index.layout,
        label_scheme=label_scheme,
        internal_scheme=_internal_scheme_name(entries, source),
        preprocess=preprocess,
        fingerprint=preprocess.fingerprint(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        cases=tuple(entries),
        skipped=tuple(skipped),
    )
    _remove_stale(out / "cases", keep={e.case_id for e in entries})
    _write_manifest(out, manifest)
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
        for name in names:  # invalid until the new manifest; drop an interrupted run's temp
            if name != "cases":
                (out / name).unlink()
    (out / "cases").mkdir(parents=True, exist_ok=True)


def _prepare_all(
    records: Sequence[CaseRecord],
    cases_dir: Path,
    cfg: PreprocessConfig,
    progress: Progress | None,
    workers: int,
) -> list[CaseEntry | SkippedCase]:
    """Prepare every record, in order, serially or with a process pool."""
    total = len(records)
    if workers <= 1 or total <= 1:
        results = []
        for done, record in enumerate(records, start=1):
            results.append(_prepare_case(record, cases_dir, cfg))
            if progress:
                progress(done, total, record.case_id)
        return results
    # spawn, not fork: callers (Ray workers, torch) run threads that fork would copy mid-lock.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_prepare_case, r, cases_dir, cfg): i for i, r in enumerate(records)}
        slots: list[CaseEntry | SkippedCase | None] = [None] * total
        for done, future in enumerate(as_completed(futures), start=1):
            slots[futures[future]] = future.result()
            if progress:
                progress(done, total, records[futures[future]].case_id)
    return [s for s in slots if s is not None]


def _prepare_case(
    record: CaseRecord, cases_dir: Path, cfg: PreprocessConfig
) -> CaseEntry | SkippedCase:
    """Decode, preprocess and write one case; a CaseError becomes a SkippedCase."""
    sources = _source_files(record)  # stat before reading: a change during the read is caught
    try:
        case = preprocess_case(load_case(record), cfg)
        _check_float16_range(case)
    except CaseError as err:
        return SkippedCase(case_id=record.case_id, message=str(err), sources=sources)
    fg, fg_classes = foreground_sample(case.label, record.case_id)
    _write_case_dir(cases_dir, case, fg)
    return CaseEntry(
        case_id=case.case_id,
        label_scheme=record.label_scheme,
        modalities=case.modalities,
        shape=case.image.shape[1:],
        spacing=case.spacing,
        bbox=case.bbox,
        affine=np.asarray(case.affine, dtype=float).tolist(),
        has_label=case.label is not None,
        fg_classes=fg_classes,
        sources=sources,
    )


def _source_files(record: CaseRecord) -> tuple[SourceFile, ...]:
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


def _write_case_dir(cases_dir: Path, case: LoadedCase, fg: np.ndarray) -> None:
    """Write the arrays into a temp dir, then rename it into place (replacing an old one)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{case.case_id}-", dir=cases_dir))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared between users' jobs
    np.save(tmp / "image.npy", case.image.astype(np.float16))
    if case.label is not None:
        np.save(tmp / "label.npy", np.ascontiguousarray(case.label, dtype=np.uint8))
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


# ---- reading ----------------------------------------------------------------------------------


class PreparedDataset:
    """Read-only view of a prepared cache; cheap to pickle (paths and the manifest only).

    Args:
        cache_dir: directory written by :func:`prepare`.

    Raises:
        InputError: the directory is not a cache, or one of another format version.
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.root = Path(cache_dir).expanduser().resolve()
        self.manifest = read_manifest(self.root)
        self._entries = {entry.case_id: entry for entry in self.manifest.cases}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def scheme(self) -> LabelScheme:
        """Internal label scheme of the stored labels (BraTS regions WT/TC/ET, or binary FG)."""
        binary = self.manifest.internal_scheme == INTERNAL_BINARY.name
        return INTERNAL_BINARY if binary else INTERNAL_BRATS

    @property
    def case_ids(self) -> tuple[str, ...]:
        """Prepared case ids in manifest (discovery) order."""
        return tuple(self._entries)

    def entry(self, case_id: str) -> CaseEntry:
        """The manifest entry of one case; InputError naming the cache for an unknown id."""
        if case_id not in self._entries:
            raise InputError(
                f"case {case_id!r} is not in this cache ({len(self)} cases)", where=self.root
            )
        return self._entries[case_id]

    def modalities(self, case_id: str) -> tuple[str, ...]:
        """Modalities stored for a case, in canonical (channel) order."""
        return self.entry(case_id).modalities

    def load(
        self, case_id: str, modalities: Sequence[str] | None = None, mmap: bool = True
    ) -> LoadedCase:
        """Load one prepared case.

        Args:
            case_id: a prepared case.
            modalities: channels to return, in this order; None = all stored.
            mmap: True returns memory maps (pages are read when touched); False reads the
                arrays into memory.

        Returns:
            LoadedCase with image (C, X, Y, Z) float16 (a ``np.memmap`` when ``mmap`` and the
            channels are all stored ones or a contiguous run of them in stored order; other
            selections are read into memory, touching only the chosen channels), label
            (X, Y, Z) uint8 internal codes or None, and the source geometry and crop box.
        """
        entry = self.entry(case_id)
        indices = self._channel_indices(entry, modalities)
        folder = self.root / "cases" / case_id
        image = _read_channels(folder / "image.npy", indices, len(entry.modalities), mmap)
        label = None
        if entry.has_label:
            label = np.load(folder / "label.npy", mmap_mode="r" if mmap else None)
        return LoadedCase(
            case_id=case_id,
            image=image,
            label=label,
            modalities=tuple(entry.modalities[i] for i in indices),
            spacing=entry.spacing,
            affine=np.asarray(entry.affine, dtype=np.float64),
            bbox=entry.bbox,
        )

    def foreground_locations(self, case_id: str, label: int | None = None) -> np.ndarray:
        """Stored foreground voxel coordinates, (N, 3) int32 in the cached grid.

        Args:
            case_id: a prepared case.
            label: one internal class, or None for all classes (grouped by class).
        """
        entry = self.entry(case_id)
        coords = np.load(self.root / "cases" / case_id / "fg_locations.npy")
        if label is None:
            return coords
        start = 0
        for cls, count in entry.fg_classes:
            if cls == label:
                return coords[start : start + count]
            start += count
        return coords[:0]

    def _channel_indices(self, entry: CaseEntry, modalities: Sequence[str] | None) -> list[int]:
        if modalities is None:
            return list(range(len(entry.modalities)))
        if not modalities:
            raise CaseError(entry.case_id, "no modality requested", self.root / "cases")
        missing = [m for m in modalities if m not in entry.modalities]
        if missing:
            raise CaseError(
                entry.case_id,
                f"modalities {missing} are not in the cache (stored: {list(entry.modalities)})",
                path=self.root / "cases" / entry.case_id,
            )
        return [entry.modalities.index(m) for m in modalities]


def _read_channels(path: Path, indices: list[int], stored: int, mmap: bool) -> np.ndarray:
    """(len(indices), X, Y, Z) float16 from a (stored, X, Y, Z) .npy, not reading other channels.

    Each channel is one contiguous block of the C-ordered file, so a slice of the memory map only
    reads the pages of the chosen channels.
    """
    if indices == list(range(stored)):  # all: a memmap, or one sequential read (fastest)
        return np.load(path, mmap_mode="r" if mmap else None)
    mapped = np.load(path, mmap_mode="r")
    if indices == list(range(indices[0], indices[-1] + 1)):
        run = mapped[indices[0] : indices[-1] + 1]
        return run if mmap else np.array(run)
    return np.stack([mapped[i] for i in indices])


def read_manifest(cache_dir: Path) -> Manifest:
    """Parse ``cache_dir/manifest.json``; InputError naming the directory if it is not a cache."""
    path = cache_dir / MANIFEST
    if not path.is_file():
        raise InputError(
            f"not a prepared cache (no {MANIFEST}); create one with `ablate data prepare`",
            where=cache_dir,
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"unreadable {MANIFEST} ({err})", where=cache_dir) from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != FORMAT_VERSION:
        raise InputError(
            f"cache format version {version}, this version of ablate reads {FORMAT_VERSION}; "
            "prepare it again",
            where=cache_dir,
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as err:
        raise InputError(f"invalid {MANIFEST}: {err.errors()[0]['msg']}", where=cache_dir) from None


# ---- reuse ------------------------------------------------------------------------------------


def default_cache_root() -> Path:
    """``$ABLATE_CACHE`` if set, else ``~/.cache/ablate``."""
    env = os.environ.get("ABLATE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ablate"


def safe_name(source: str | Path) -> str:
    """File-name-safe short form of the dataset folder's name (``BraTS 2021`` -> ``BraTS_2021``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).expanduser().resolve().name)
    return name.strip("._")[:40] or "dataset"


def cache_key(source: str | Path, preprocess: PreprocessConfig, label_scheme: str = "auto") -> str:
    """sha256 hex of what makes a cache: absolute source, preprocessing, label scheme, format."""
    payload = {
        "source": str(Path(source).expanduser().resolve()),
        "fingerprint": preprocess.fingerprint(),
        "label_scheme": label_scheme,
        "format": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def ensure_prepared(
    source: str | Path,
    cache_root: str | Path,
    preprocess: PreprocessConfig,
    label_scheme: str = "auto",
    progress: Progress | None = None,
    workers: int = 1,
) -> PreparedDataset:
    """Reuse ``<cache_root>/<name>-<key12>`` if it is current, else (re)prepare it.

    Safe to call from many processes at once (e.g. Ray trials on one machine): an exclusive
    ``flock`` on ``<cache_root>/.<name>-<key12>.lock`` lets one of them prepare while the others
    wait and then reuse its result. "Current" means same manifest settings and the same set of
    discovered cases with unchanged source file sizes and mtimes. ``workers`` as in
    :func:`prepare`.
    """
    source = Path(source).expanduser().resolve()
    root = Path(cache_root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    name = f"{safe_name(source)}-{cache_key(source, preprocess, label_scheme)[:12]}"
    cache_dir = root / name
    with _exclusive_lock(root / f".{name}.lock"):
        if not _is_current(cache_dir, source, preprocess, label_scheme):
            prepare(source, cache_dir, preprocess, label_scheme, progress, workers)
        return PreparedDataset(cache_dir)


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (released by the kernel if we crash)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_current(cache_dir: Path, source: Path, cfg: PreprocessConfig, label_scheme: str) -> bool:
    """Whether the cache matches the settings and the source files as they are now."""
    try:
        manifest = PreparedDataset(cache_dir).manifest
    except InputError:
        return False
    cases_dir = cache_dir / "cases"
    if not all((cases_dir / e.case_id / "image.npy").is_file() for e in manifest.cases):
        return False  # someone deleted case files: rebuild rather than fail at training time
    same_settings = (
        manifest.source == str(source)
        and manifest.fingerprint == cfg.fingerprint()
        and manifest.label_scheme == label_scheme
    )
    if not same_settings:
        return False
    index = discover(source, label_scheme)
    now = {r.case_id: _source_files(r) for r in index.cases}
    now.update({p.case_id: () for p in index.problems})
    recorded = {e.case_id: e.sources for e in (*manifest.cases, *manifest.skipped)}
    return now == recorded
