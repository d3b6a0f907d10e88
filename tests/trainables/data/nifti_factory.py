"""Write tiny NIfTI datasets in every supported layout, good and broken, for tests.

Usage::

    from tests.trainables.data.nifti_factory import brats_case, msd_dataset, truncate

    case = brats_case(tmp_path, "case_000")              # BraTS 2021 layout, labels 0/1/2/4
    case = brats_case(tmp_path, "c1", layout="brats2023", seg_dtype=np.int16)
    cases = msd_dataset(tmp_path / "Task01", ["BRATS_001", "BRATS_002"])
    cases = ct_dataset(tmp_path / "ct", ["ct_001"])
    truncate(case.files["t1"])                           # corrupt one file

Every writer returns :class:`WrittenCase` (or a list of them) with the file paths and the exact
arrays written, so tests can compare what the loader returns with what is on disk. Volumes are
8x8x6 voxels by default; labels hold one nested blob per tumour class in the layout's codes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE: tuple[int, int, int] = (8, 8, 6)

# Source label codes of (NCR, ED, ET) per layout; CT writes a single foreground code 1.
LABEL_CODES: dict[str, tuple[int, int, int]] = {
    "brats2021": (1, 2, 4),
    "brats2023": (1, 2, 3),
    "msd": (2, 1, 3),  # MSD Task01: 1 oedema, 2 non-enhancing, 3 enhancing
}

# File tag of each canonical modality in the two BraTS namings, and the separator before it.
BRATS_TAGS: dict[str, tuple[str, dict[str, str]]] = {
    "brats2021": ("_", {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "seg": "seg"}),
    "brats2023": ("-", {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"}),
}

MSD_MODALITY_JSON = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
MSD_CHANNELS = ("flair", "t1", "t1ce", "t2")  # Task01's channel order in canonical names


@dataclass
class WrittenCase:
    """What a writer put on disk for one case.

    Attributes:
        case_id: the case name.
        files: canonical modality (or "seg") -> file. MSD: "image" and "seg".
        images: canonical modality -> (X, Y, Z) float32 voxels as written.
        label: (X, Y, Z) source label codes as written, or None.
    """

    case_id: str
    files: dict[str, Path] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    label: np.ndarray | None = None


def save_nifti(
    path: Path,
    array: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    affine: np.ndarray | None = None,
) -> Path:
    """Write ``array`` (3-D or 4-D) with its own dtype; affine defaults to diag(spacing)."""
    if affine is None:
        affine = np.diag([*spacing, 1.0])
    img = nib.Nifti1Image(array, affine)
    img.header.set_data_dtype(array.dtype)
    img.header.set_zooms(tuple(spacing) + tuple(1.0 for _ in range(array.ndim - 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def image_volume(shape: Sequence[int] = SHAPE, seed: int = 0) -> np.ndarray:
    """(X, Y, Z) float32 intensities in [0, 100), whole numbers so int16 files round-trip."""
    return np.random.default_rng(seed).integers(0, 100, size=tuple(shape)).astype(np.float32)


def tumour_label(
    shape: Sequence[int] = SHAPE, codes: Sequence[int] = (1, 2, 4), dtype: type = np.uint8
) -> np.ndarray:
    """(X, Y, Z) label with nested boxes: ED outside, NCR inside, ET in the centre.

    Args:
        codes: source values of (NCR, ED, ET); a single code writes one foreground box.
        dtype: on-disk dtype (uint8, int16, float32...).
    """
    x, y, z = shape
    label = np.zeros(tuple(shape), dtype=dtype)
    if len(codes) == 1:
        label[1 : x - 1, 1 : y - 1, 1 : z - 1] = codes[0]
        return label
    ncr, ed, et = codes
    label[1 : x - 1, 1 : y - 1, 1 : z - 1] = ed
    label[2 : x - 2, 2 : y - 2, 2 : z - 2] = ncr
    label[3 : x - 3, 3 : y - 3, 2 : z - 2] = et
    return label


def brats_case(
    root: Path,
    case_id: str,
    *,
    layout: str = "brats2021",
    shape: Sequence[int] = SHAPE,
    seg: bool = True,
    seg_dtype: type = np.uint8,
    image_dtype: type = np.int16,
    ext: str = ".nii.gz",
    skip: Sequence[str] = (),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
) -> WrittenCase:
    """Write ``root/<case>/<case>{_,-}<tag>.nii.gz`` in the BraTS 2021 or 2023 naming.

    Args:
        layout: "brats2021" (``_t1``, ``_t1ce``, ``_t2``, ``_flair``, ``_seg``) or "brats2023"
            (``-t1n``, ``-t1c``, ``-t2w``, ``-t2f``, ``-seg``).
        seg: write the label file.
        skip: canonical modalities not to write (to make a case with a missing file).
        ext: ".nii.gz" or ".nii".
    """
    sep, tags = BRATS_TAGS[layout]
    case_dir = Path(root) / case_id
    written = WrittenCase(case_id)
    for i, mod in enumerate(("t1", "t1ce", "t2", "flair")):
        if mod in skip:
            continue
        data = image_volume(shape, seed=seed * 10 + i)
        path = case_dir / f"{case_id}{sep}{tags[mod]}{ext}"
        written.files[mod] = save_nifti(path, data.astype(image_dtype), spacing)
        written.images[mod] = data
    if seg:
        label = tumour_label(shape, LABEL_CODES[layout], seg_dtype)
        path = case_dir / f"{case_id}{sep}seg{ext}"
        written.files["seg"] = save_nifti(path, label, spacing)
        written.label = label
    return written


def msd_dataset(
    root: Path,
    case_ids: Sequence[str],
    *,
    shape: Sequence[int] = SHAPE,
    dataset_json: bool = True,
    labels: bool = True,
    seg_dtype: type = np.uint8,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> list[WrittenCase]:
    """Write an MSD Task01 folder: ``imagesTr/<case>.nii.gz`` (X, Y, Z, 4) + ``labelsTr/``.

    Channels are Task01's (FLAIR, T1w, t1gd, T2w); labels use MSD codes (1 ED, 2 NCR, 3 ET).
    """
    root = Path(root)
    if dataset_json:
        meta = {"name": "BrainTumour", "modality": MSD_MODALITY_JSON}
        meta["labels"] = {"0": "background", "1": "edema", "2": "non-enhancing", "3": "enhancing"}
        write_dataset_json(root, meta)
    out = []
    for n, case_id in enumerate(case_ids):
        vols = [image_volume(shape, seed=n * 10 + c) for c in range(len(MSD_CHANNELS))]
        written = WrittenCase(case_id, images=dict(zip(MSD_CHANNELS, vols, strict=True)))
        image_path = root / "imagesTr" / f"{case_id}.nii.gz"
        written.files["image"] = save_nifti(image_path, np.stack(vols, axis=-1), spacing)
        if labels:
            written.label = tumour_label(shape, LABEL_CODES["msd"], seg_dtype)
            label_path = root / "labelsTr" / f"{case_id}.nii.gz"
            written.files["seg"] = save_nifti(label_path, written.label, spacing)
        out.append(written)
    return out


def ct_dataset(
    root: Path,
    case_ids: Sequence[str],
    *,
    shape: Sequence[int] = SHAPE,
    dataset_json: bool = True,
    spacing: Sequence[float] = (0.5, 0.5, 5.0),
) -> list[WrittenCase]:
    """Write an MSD-style CT folder: 3-D ``imagesTr/<case>.nii.gz`` (HU) + binary labels."""
    root = Path(root)
    if dataset_json:
        meta = {"name": "Haemorrhage", "modality": {"0": "CT"}}
        meta["labels"] = {"0": "background", "1": "haemorrhage"}
        write_dataset_json(root, meta)
    out = []
    for n, case_id in enumerate(case_ids):
        hu = image_volume(shape, seed=n) - 50.0
        written = WrittenCase(case_id, images={"ct": hu}, label=tumour_label(shape, (1,)))
        written.files["image"] = save_nifti(root / "imagesTr" / f"{case_id}.nii.gz", hu, spacing)
        label_path = root / "labelsTr" / f"{case_id}.nii.gz"
        written.files["seg"] = save_nifti(label_path, written.label, spacing)
        out.append(written)
    return out


def write_dataset_json(root: Path, meta: dict) -> Path:
    """Write ``root/dataset.json``."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "dataset.json"
    path.write_text(json.dumps(meta, indent=2))
    return path


def truncate(path: Path, keep_bytes: int | None = None) -> Path:
    """Cut a file short, like an interrupted download.

    By default only the last 16 bytes go (the gzip trailer and the end of the voxels): a
    ``.nii.gz`` then fails to inflate (``EOFError``), a ``.nii`` to read its voxels
    (``OSError``). ``keep_bytes=20`` always cuts into the header (``ImageFileError`` for a
    ``.nii``, ``EOFError`` for a ``.nii.gz``).
    """
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 16 if keep_bytes is None else keep_bytes])
    return path


def fingerprint(root: Path) -> dict[str, tuple[int, str]]:
    """Relative path -> (mtime in ns, sha256) of every file under ``root``, to prove no writes."""
    root = Path(root)
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
