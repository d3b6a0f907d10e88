"""Read a prepared cache: :class:`PreparedDataset`, memory-mapped cases."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trainables.data.cache.manifest import CaseEntry, read_manifest
from trainables.data.labels import (
    INTERNAL_BINARY,
    INTERNAL_BRATS,
    LabelScheme,
)
from trainables.data.types import LoadedCase
from trainables.errors import CaseError, InputError

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

    @property
    def left_out(self) -> list[str]:
        """``<file>: <problem>`` of each case the source had but the cache could not prepare."""
        return [case.message for case in self.manifest.skipped]

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
            source_spacing=entry.source_spacing,
        )

    def source_label(self, case_id: str) -> np.ndarray:
        """(X, Y, Z) uint8 internal codes on the source grid's crop (``CaseEntry.crop_shape``):
        the stored label, or for a resampled case the label as it was before resampling."""
        entry = self.entry(case_id)
        if not entry.has_label:
            raise InputError(f"case {case_id!r} has no label", where=self.root)
        name = "label.npy" if entry.source_spacing is None else "source_label.npy"
        return np.load(self.root / "cases" / case_id / name, mmap_mode="r")

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
