"""Decode one case's NIfTI files into arrays, validating everything that can be wrong with them.

Every check raises :class:`~trainables.errors.CaseError` naming the case and the offending file:
missing requested modality, corrupt or truncated file, wrong dimensionality (or channel count
of an MSD 4-D file), modalities on different grids (shape or affine), a label on another grid,
NaN/inf voxels, a constant (e.g. all-zero) image, and label values outside the dataset's
scheme.

Headers are checked before any voxel is cast, so a bad case fails fast; a gzipped file is
decompressed whole when opened, so a corrupted one fails its CRC check. Voxels are decoded
once and cast straight into the preallocated ``(C, X, Y, Z)`` float32 output, without the
intermediate float copies ``np.stack([img.get_fdata(), ...])`` would make.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
from nibabel.wrapstruct import WrapStructError

from trainables.config.base import look_up_option
from trainables.data.labels import LabelScheme, get_scheme
from trainables.data.nifti_grid import (
    AFFINE_TOLERANCE,
    affine_gap,
    check_affine,
    check_header_grid,
    header_repairs,
    spacing,
)
from trainables.data.nifti_voxels import (
    apply_scaling,
    check_finite,
    check_not_constant,
    check_real_valued,
    label_codes,
    map_label,
)
from trainables.data.types import MODALITIES, CaseRecord, LoadedCase
from trainables.errors import CaseError

# What nibabel, gzip and zlib raise on corrupt, truncated or non-NIfTI files.
READ_ERRORS: tuple[type[BaseException], ...] = (
    ImageFileError,
    HeaderDataError,
    WrapStructError,  # a decompressed stream too short for a NIfTI header
    OSError,
    EOFError,
    ValueError,
    zlib.error,
)

T = TypeVar("T")


@dataclass(frozen=True)
class _Source:
    """One requested modality: its file, opened header, and channel in a 4-D file (or None)."""

    modality: str
    path: Path
    img: nib.Nifti1Image
    channel: int | None
    file_channels: int  # channels of a 4-D file, 0 for a 3-D file


def load_case(
    record: CaseRecord, modalities: Sequence[str] | None = None, require_label: bool = False
) -> LoadedCase:
    """Decode and validate one case.

    Args:
        record: where the case's files are (from :func:`trainables.data.layouts.discover`).
        modalities: canonical modality names in the wanted channel order; None -> every
            modality of the record in canonical order.
        require_label: raise if the case has no label file.

    Returns:
        LoadedCase with image (C, X, Y, Z) float32, label (X, Y, Z) uint8 internal codes or
        None, spacing (mm) from the first image's header zooms, and that image's affine.

    Raises:
        CaseError: naming the file and the problem (see the module docstring).
    """
    return _load(record, modalities, require_label, want_values=False)[0]


def load_case_with_label_values(
    record: CaseRecord, modalities: Sequence[str] | None = None, require_label: bool = False
) -> tuple[LoadedCase, tuple[int, ...] | None]:
    """:func:`load_case` plus the label values present in the file, in source codes (sorted).

    Used by ``ablate data inspect``, which reports the source values the user will recognise.
    The second item is None when the case has no label.
    """
    return _load(record, modalities, require_label, want_values=True)


def _load(
    record: CaseRecord, modalities: Sequence[str] | None, require_label: bool, want_values: bool
) -> tuple[LoadedCase, tuple[int, ...] | None]:
    """Check every header, then decode; the source label values cost a pass, so are optional."""
    sources = _open_sources(record, _requested(record, modalities))
    shape, affine = _check_grid(record.case_id, sources)
    label_img = _open_label(record, shape, affine, require_label)
    image = _decode_images(record.case_id, sources, shape)
    label, values = None, None
    if label_img is not None and record.label is not None:
        source = _decode_label(label_img, record.label, record.case_id, shape)
        values = tuple(int(v) for v in np.unique(source)) if want_values else None
        scheme = get_scheme(record.label_scheme)
        label = map_label(source, scheme, record.case_id, record.label, record.label_values)
    spacing_mm = spacing(sources[0].img)
    mods = tuple(s.modality for s in sources)
    return LoadedCase(record.case_id, image, label, mods, spacing_mm, affine), values


def load_label(
    path: Path, scheme: LabelScheme, case_id: str, declared: tuple[int, ...] = ()
) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Decode one label map (a reference or a prediction) into internal codes.

    Args:
        path: the label NIfTI file, 3-D.
        scheme: the source label scheme of the file.
        case_id: named in errors.
        declared: the label values the dataset declares (CaseRecord.label_values); () any.

    Returns:
        (label (X, Y, Z) uint8 internal codes, spacing in mm, (4, 4) affine).

    Raises:
        CaseError: corrupt file, not 3-D, non-integer or non-finite values, values outside
            the scheme; the message names ``path``.
    """
    img = open_nifti(path, case_id)
    shape = _spatial_shape(img, path, case_id, channels=0)
    check_header_grid(case_id, path, "label map", img)
    source = _decode_label(img, path, case_id, shape)
    label = map_label(source, scheme, case_id, path, declared)
    return label, spacing(img), np.asarray(img.affine)


def open_nifti(path: Path, case_id: str, header_only: bool = False) -> nib.Nifti1Image:
    """Open a NIfTI file; CaseError naming the file if unreadable.

    A gzipped file is decompressed whole here, which checks its CRC and length: nibabel alone
    reads only the bytes the voxels need and never reaches the gzip trailer, so a corrupted
    block would decode as garbage voxels without a word. ``header_only`` (the voxels are not
    used) skips that and reads lazily.
    """
    path = Path(path)
    if not path.is_file():
        raise CaseError(case_id, "file not found", path)
    size: int | None = path.stat().st_size  # of the voxels' bytes, once known
    if size == 0:
        raise CaseError(case_id, "empty file (0 bytes)", path)
    if header_only:
        size = None  # the voxels are not read, so not checked
    with header_repairs(case_id, path):
        if path.name.endswith(".gz") and not header_only:
            img, size = _guard(path, case_id, lambda: _from_gzip(path))
        else:
            img = _guard(path, case_id, lambda: nib.load(path))
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise CaseError(case_id, f"not a NIfTI image ({type(img).__name__})", path)
    if size is not None:
        _check_voxel_bytes(img, size, path, case_id)
    return img


def _check_voxel_bytes(img: nib.Nifti1Image, size: int, path: Path, case_id: str) -> None:
    """The file must hold the voxels its header promises: checked before any array of the
    header's shape is allocated (a wrong shape would otherwise read as out of memory)."""
    shape, dtype = img.header.get_data_shape(), img.get_data_dtype()
    needed = (
        int(img.header.get_data_offset()) + int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    )
    if size < needed:
        message = (
            f"the header promises {'x'.join(map(str, shape))} {dtype} voxels ({needed:,} bytes) "
            f"but the file holds {size:,}: truncated, or a wrong header"
        )
        raise CaseError(case_id, message, path)


def _from_gzip(path: Path) -> tuple[nib.Nifti1Image | nib.Nifti2Image, int]:
    """A gzipped NIfTI-1 or -2 file decompressed whole (gzip checks its CRC and length), and
    its decompressed size in bytes."""
    data = gzip.decompress(path.read_bytes())
    nifti2 = int.from_bytes(data[:4], "little") == 540 or int.from_bytes(data[:4], "big") == 540
    return (nib.Nifti2Image if nifti2 else nib.Nifti1Image).from_bytes(data), len(data)


def _guard(path: Path, case_id: str, read: Callable[[], T]) -> T:
    """Run ``read``; turn decoder errors into a CaseError that names the file."""
    try:
        return read()
    except PermissionError as exc:  # the file is fine, the user may not read it
        raise CaseError(case_id, f"cannot read the file: {exc.strerror}", path) from exc
    except READ_ERRORS as exc:
        message = f"corrupt or truncated NIfTI file ({type(exc).__name__}: {exc})"
        raise CaseError(case_id, message, path) from exc


def _requested(record: CaseRecord, modalities: Sequence[str] | None) -> tuple[str, ...]:
    """Validate the requested modality names against the canonical names and the record."""
    if modalities is None:
        return record.modalities
    for name in modalities:
        look_up_option(name, MODALITIES, field="data.modalities")
    missing = [m for m in modalities if m not in record.images]
    if missing:
        have = ", ".join(record.modalities) or "none"
        where = _case_folder(record)
        message = f"missing modality {', '.join(missing)} (the case has {have})"
        raise CaseError(record.case_id, message, where)
    return tuple(modalities)


def _case_folder(record: CaseRecord) -> Path | None:
    files = [*record.images.values(), record.label]
    return next((p.parent for p in files if p is not None), None)


def _open_sources(record: CaseRecord, modalities: tuple[str, ...]) -> list[_Source]:
    """Open each requested file once (an MSD 4-D file serves every channel)."""
    # One channel (or none) listed means a plain 3-D file, as for BraTS.
    n_channels = len(record.channels) if len(record.channels) > 1 else 0
    opened: dict[Path, nib.Nifti1Image] = {}
    sources = []
    for mod in modalities:
        path = record.images[mod]
        if path not in opened:
            opened[path] = open_nifti(path, record.case_id)
        channel = record.channels[mod] if n_channels else None
        sources.append(_Source(mod, path, opened[path], channel, n_channels))
    if not sources:
        raise CaseError(record.case_id, "no modality requested", _case_folder(record))
    return sources


def _spatial_shape(
    img: nib.Nifti1Image, path: Path, case_id: str, channels: int
) -> tuple[int, int, int]:
    """(X, Y, Z) of a 3-D file (``channels`` 0) or of a 4-D file with ``channels`` channels.

    Trailing singleton axes are ignored: some writers store 3-D volumes as (X, Y, Z, 1).
    """
    shape = tuple(int(n) for n in img.shape)
    ndim = 4 if channels > 1 else 3
    while len(shape) > ndim and shape[-1] == 1:
        shape = shape[:-1]
    if ndim == 3 and len(shape) != 3:
        raise CaseError(case_id, f"expected a 3-D image, got shape {shape}", path)
    if ndim == 4 and (len(shape) != 4 or shape[3] != channels):
        message = f"expected a 4-D image with {channels} channels, got shape {shape}"
        raise CaseError(case_id, message, path)
    if 0 in shape:
        raise CaseError(case_id, f"has a zero-length axis (shape {shape}): no voxels", path)
    return shape[0], shape[1], shape[2]


def _check_grid(case_id: str, sources: list[_Source]) -> tuple[tuple[int, int, int], np.ndarray]:
    """Every modality must share one shape and affine; returns (shape, affine).

    The reference is the grid most modalities share (the first one's on a tie), so the message
    names the odd file out rather than whichever good file happened to be checked first.
    """
    shapes = [_spatial_shape(s.img, s.path, case_id, s.file_channels) for s in sources]
    ref = _majority(sources, lambda a, b: shapes[a] == shapes[b])
    for i, src in enumerate(sources):
        if shapes[i] != shapes[ref]:
            others = _names(sources, [j for j in range(len(sources)) if shapes[j] == shapes[ref]])
            message = f"{src.modality} has shape {shapes[i]} but {others} {shapes[ref]}"
            raise CaseError(case_id, message, src.path)
    for src in sources:
        check_header_grid(case_id, src.path, src.modality, src.img)
    affines = [np.asarray(s.img.affine) for s in sources]
    ref = _majority(sources, lambda a, b: affine_gap(affines[a], affines[b]) <= AFFINE_TOLERANCE)
    reference = affines[ref]
    for src, affine in zip(sources, affines, strict=True):
        check_affine(case_id, src.path, f"{src.modality} and {sources[ref].modality}", affine,
                     reference)  # fmt: skip
    return shapes[ref], reference


def _majority(sources: list[_Source], same: Callable[[int, int], bool]) -> int:
    """Index of the source the most others agree with under ``same``; the earliest on a tie."""
    votes = [sum(same(i, j) for j in range(len(sources))) for i in range(len(sources))]
    return votes.index(max(votes))


def _names(sources: list[_Source], indices: list[int]) -> str:
    """``t1 has`` or ``t1, t1ce and t2 have``, for a message."""
    names = [sources[i].modality for i in indices]
    if len(names) == 1:
        return f"{names[0]} has"
    return f"{', '.join(names[:-1])} and {names[-1]} have"


def _open_label(
    record: CaseRecord,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    require_label: bool,
) -> nib.Nifti1Image | None:
    """Open and check the label header against the image grid; None when there is no label."""
    if record.label is None:
        if require_label:
            message = "no label (seg) file, but this use needs labelled cases"
            raise CaseError(record.case_id, message, _case_folder(record))
        return None
    img = open_nifti(record.label, record.case_id)
    label_shape = _spatial_shape(img, record.label, record.case_id, channels=0)
    if label_shape != shape:
        message = f"label shape {label_shape} does not match the image shape {shape}"
        raise CaseError(record.case_id, message, record.label)
    check_header_grid(record.case_id, record.label, "label", img)
    check_affine(record.case_id, record.label, "label and image", img.affine, affine)
    return img


def _decode_images(case_id: str, sources: list[_Source], shape: tuple[int, int, int]) -> np.ndarray:
    """Decode into one (C, X, Y, Z) float32 array: raw ints are cast straight into place."""
    out = np.empty((len(sources), *shape), dtype=np.float32)
    raw_by_file: dict[Path, np.ndarray] = {}
    for i, src in enumerate(sources):
        check_real_valued(case_id, src.path, src.modality, src.img.get_data_dtype())
        if src.path not in raw_by_file:
            raw_by_file[src.path] = _guard(src.path, case_id, src.img.dataobj.get_unscaled)
        raw = raw_by_file[src.path]
        with np.errstate(over="ignore"):  # an overflow to inf is reported by check_finite
            if src.channel is None:
                out[i] = raw.reshape(shape)
            else:
                out[i] = raw.reshape(*shape, src.file_channels)[..., src.channel]
            apply_scaling(out[i], src.img)
        check_finite(case_id, src.path, src.modality, out[i], src.img)
        check_not_constant(case_id, src.path, src.modality, out[i])
    return out


def _decode_label(
    img: nib.Nifti1Image, path: Path, case_id: str, shape: tuple[int, int, int]
) -> np.ndarray:
    """Label voxels as an integer array of ``shape`` in source codes (:func:`label_codes`)."""
    # C order like the images; it also spares np.unique a flattening copy of an F-order array.
    data = np.ascontiguousarray(_guard(path, case_id, lambda: np.asanyarray(img.dataobj)))
    return label_codes(data.reshape(shape), path, case_id)
