"""The files of a dataset folder as discovery sees them: visible NIfTI files, their stems,
broken links (named, not skipped) and duplicates. Shared by the BraTS and MSD layouts."""

from __future__ import annotations

import os
from pathlib import Path

from trainables.errors import CaseError

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")


def nifti_files(folder: Path) -> list[Path]:
    """Visible ``.nii.gz``/``.nii`` files directly inside ``folder``, sorted by name.

    Hidden files are skipped: MSD tarballs ship macOS ``._BRATS_001.nii.gz`` resource forks.
    """
    if not folder.is_dir():
        return []
    try:
        return sorted(p for p in visible(folder) if p.is_file() and nifti_stem(p) is not None)
    except OSError as err:  # a folder the user may not list or enter: that case, not all
        raise CaseError(folder.name, f"cannot read the folder: {err.strerror}", folder) from None


def nifti_stem(path: Path) -> str | None:
    """File name without its NIfTI suffix, or None if it is not a NIfTI file."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def broken_links(folder: Path) -> list[Path]:
    """NIfTI-named symbolic links in ``folder`` that lead to no file (target gone, or a loop):
    reported, where the listing above leaves them out, since a link is meant to be data."""
    if not folder.is_dir():
        return []
    return sorted(p for p in visible(folder) if is_broken_link(p) and nifti_stem(p) is not None)


def link_problem(path: Path) -> str:
    """What is wrong with a broken link, for a case problem: its target and why."""
    try:
        path.stat()
        reason = "unknown"  # repaired since it was listed
    except OSError as err:  # ENOENT for a target gone, ELOOP for a loop
        reason = err.strerror or type(err).__name__
    return f"{path.name} is a symbolic link to {os.readlink(path)}, which cannot be read ({reason})"


def is_broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def visible(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


def check_duplicates(case_id: str, found: dict[str, list[Path]]) -> None:
    """CaseError naming the folder when one key has several files (``x.nii`` and ``x.nii.gz``)."""
    dups = {key: paths for key, paths in found.items() if len(paths) > 1}
    if dups:
        text = "; ".join(f"{k}: {', '.join(p.name for p in v)}" for k, v in dups.items())
        where = next(iter(dups.values()))[0].parent
        raise CaseError(case_id, f"duplicate files ({text}); keep one of each", where)
