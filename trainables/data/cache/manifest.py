"""The cache manifest (``<cache>/manifest.json``): what a cache holds and how it was made."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from trainables.config import Frozen
from trainables.data.preprocess import PreprocessConfig, crop_shape
from trainables.errors import InputError

# Bump when the on-disk layout or the manifest schema changes; older caches are then refused by
# PreparedDataset and rebuilt by ensure_prepared.
# 2: CaseEntry.source_shape; 3: gzip CRC checked, constant scans refused; 4: 'foreground'
# normalisation with dataset-level statistics (preprocess holds them), never a case's own label
FORMAT_VERSION = 4
MANIFEST = "manifest.json"

Progress = Callable[[int, int, str], None]


class SourceFile(Frozen):
    """One source file as it was when the case was prepared (for change detection)."""

    path: str
    size: int
    mtime_ns: int


class CaseEntry(Frozen):
    """One prepared case.

    ``label_scheme`` is the case's source scheme; ``shape`` the cached (cropped) (X, Y, Z);
    ``source_shape`` the (X, Y, Z) of the source images before the crop;
    ``spacing`` mm of the cached arrays; ``source_spacing`` the source grid's when the arrays
    were resampled (``data.preprocess.resample``; the crop's source-grid label is then also
    stored, ``source_label.npy``), None when they are on the source grid;
    ``bbox`` the crop in source-grid voxels; ``affine`` the source files' (4, 4);
    ``fg_classes`` (internal class, stored locations) pairs in ``fg_locations.npy`` order.
    """

    case_id: str
    label_scheme: str
    modalities: tuple[str, ...]
    shape: tuple[int, int, int]
    source_shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    bbox: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None
    affine: tuple[tuple[float, float, float, float], ...]
    has_label: bool
    fg_classes: tuple[tuple[int, int], ...]
    sources: tuple[SourceFile, ...]
    source_spacing: tuple[float, float, float] | None = None  # absent from caches before it

    @property
    def crop_shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) of the crop on the source grid (the source shape when not cropped)."""
        x, y, z = crop_shape(self.bbox, self.source_shape)
        return (x, y, z)

    @property
    def grid_spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) of the source grid, where the reported metrics are measured."""
        return self.source_spacing or self.spacing


class SkippedCase(Frozen):
    """A case that could not be prepared, with the CaseError text."""

    case_id: str
    message: str
    sources: tuple[SourceFile, ...] = ()


class Manifest(Frozen):
    """What a cache holds and how it was made (``<cache>/manifest.json``).

    ``source`` is the absolute dataset directory; ``label_scheme`` the scheme requested ("auto"
    or a name), ``internal_scheme`` the name of the internal scheme the stored labels use;
    ``preprocess`` the preprocessing the stored arrays went through, dataset statistics included
    (``foreground`` normalisation's ``stats``, computed from this dataset when the request left
    them unset), and ``fingerprint`` that of the *requested* config (what the cache key uses);
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
