"""Find the cases of a dataset directory in one of the supported layouts.

==========  ==================================================  ================================
layout      files                                               default label scheme
==========  ==================================================  ================================
brats2021   ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``     ``brats2021`` (0/1/2/4)
brats2023   ``<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``      ``brats2023`` (0/1/2/3)
msd         ``imagesTr/<case>.nii.gz`` + ``labelsTr/`` +        from ``dataset.json``; else
            optional ``dataset.json``; or nnU-Net v2's          ``msd_brats`` (4-D MRI) or
            ``imagesTr/<case>_0000.nii.gz``, ``_0001`` ...      ``binary`` (3-D CT)
==========  ==================================================  ================================

An MSD folder with only ``imagesTs/`` (unlabelled test images) is read from there; for prediction
(``partial``) a folder with both gives the images of both.

``.nii`` works wherever ``.nii.gz`` does. Discovery only lists files and, for an MSD folder
without modality information, reads one NIfTI header; it never decodes voxels and never writes
to the source directory. Problems confined to one case (a missing modality file, duplicate
files) become :class:`~trainables.errors.CaseError` entries while the good cases are returned.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from trainables.data.files import (
    broken_links,
    check_duplicates,
    is_broken_link,
    link_problem,
    nifti_files,
    nifti_stem,
    visible,
)
from trainables.data.labels import get_scheme
from trainables.data.layout_msd import discover_msd
from trainables.data.types import BRATS_MODALITIES, CaseRecord
from trainables.errors import CaseError, InputError

# One line per layout, listed in every "unknown layout" message.
LAYOUT_HELP: dict[str, str] = {
    "brats2021": "BraTS 2018-2021: <case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz",
    "brats2023": "BraTS 2023+: <case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz",
    "msd": "Medical Segmentation Decathlon: imagesTr/<case>.nii.gz, labelsTr/, dataset.json",
}

# Separator between case id and file tag, and tag -> canonical key ("seg" for the label).
_BRATS_TAGS: dict[str, tuple[str, dict[str, str]]] = {
    "brats2021": ("_", {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "seg": "seg"}),
    "brats2023": ("-", {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair", "seg": "seg"}),
}


@dataclass
class DatasetIndex:
    """What :func:`discover` found in a dataset directory.

    Attributes:
        root: the dataset directory (absolute).
        layout: "brats2021", "brats2023" or "msd".
        cases: usable cases, sorted by case id.
        problems: one :class:`CaseError` per case that cannot be used, sorted by case id.
    """

    root: Path
    layout: str
    cases: list[CaseRecord]
    problems: list[CaseError] = field(default_factory=list)

    @property
    def case_ids(self) -> list[str]:
        """Ids of the usable cases, sorted."""
        return [c.case_id for c in self.cases]

    @property
    def label_scheme(self) -> str | None:
        """Source label scheme shared by the cases (None when no case is usable)."""
        return self.cases[0].label_scheme if self.cases else None


def discover(root: str | Path, label_scheme: str = "auto", partial: bool = False) -> DatasetIndex:
    """List the cases of a dataset directory.

    Args:
        root: the dataset directory.
        label_scheme: "auto" (the layout's default) or a scheme name from
            :data:`trainables.data.labels.SCHEMES` to override it.
        partial: keep BraTS cases that lack some modality files (``ablate predict``: a model
            may need fewer than four; loading names what a case lacks), and read an MSD
            folder's ``imagesTs/`` beside its ``imagesTr/``.

    Raises:
        InputError: the directory does not exist, is empty, or matches no known layout (the
            message names the directory and lists the layouts understood).
    """
    root = _check_root(root)
    override = None if label_scheme == "auto" else get_scheme(label_scheme).name
    layout = detect_layout(root)
    if layout == "msd":
        cases, problems = discover_msd(root, override, partial)
    else:
        cases, problems = _discover_brats(root, layout, override or layout, partial)
    cases.sort(key=lambda c: c.case_id)
    problems.sort(key=lambda p: p.case_id)
    return DatasetIndex(root=root, layout=layout, cases=cases, problems=problems)


def layouts_help() -> str:
    """The supported layouts, one indented line each (for error messages and CLI help)."""
    return "\n".join(f"  {name}: {text}" for name, text in LAYOUT_HELP.items())


def dataset_layout(root: str | Path) -> str:
    """The layout of a dataset directory, read before its cases (``ablate test --data`` says
    an empty or unknown folder once, not once per run; each run reads the cases with its own
    label scheme).

    Raises:
        InputError: as :func:`discover` for a missing, empty or unknown directory.
    """
    return detect_layout(_check_root(root))


def _check_root(root: str | Path) -> Path:
    path = Path(root).expanduser().absolute()
    if not path.exists():
        raise InputError(
            f"dataset directory does not exist; layouts understood:\n{layouts_help()}", path
        )
    if not path.is_dir():
        raise InputError("is not a directory (expected a dataset directory)", where=path)
    try:
        entries = visible(path)
    except OSError as err:
        raise InputError(f"cannot read the dataset directory: {err.strerror}", path) from None
    if not entries:
        raise InputError(f"dataset directory is empty; layouts understood:\n{layouts_help()}", path)
    return path


def is_msd_folder(root: Path) -> bool:
    """Whether ``root`` is in the MSD layout (``imagesTr/`` or ``imagesTs/``): two ``stat``
    calls, no listing of its cases."""
    return (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir()


def detect_layout(root: Path) -> str:
    """Name the layout of ``root``: "msd" if it has imagesTr/, else the BraTS naming most files use.

    Raises:
        InputError: no known layout (the message lists the layouts understood and hints when
            ``root`` is itself a case folder).
    """
    if is_msd_folder(root):
        return "msd"
    votes: Counter[str] = Counter()
    for case_dir in _case_dirs(root):
        try:
            files = nifti_files(case_dir)
        except CaseError:  # an unreadable case has no vote; discovery names it
            continue
        for path in files:
            votes.update(name for name in _BRATS_TAGS if _brats_key(path, name) is not None)
    if votes:
        # Most votes wins; ties go to the older naming so the result is deterministic.
        return max(sorted(votes), key=lambda name: votes[name])
    hint = ""
    if any(_brats_key(p, name) for p in nifti_files(root) for name in _BRATS_TAGS):
        hint = " (it looks like a single case folder: pass the directory that contains it)"
    raise InputError(
        f"no known dataset layout found{hint}; layouts understood:\n{layouts_help()}", root
    )


def _case_dirs(root: Path) -> list[Path]:
    return sorted(p for p in visible(root) if p.is_dir())


def _brats_key(path: Path, layout: str) -> str | None:
    """Canonical key ("t1", ..., "seg") of a BraTS file name in ``layout``'s naming, or None."""
    sep, tags = _BRATS_TAGS[layout]
    stem = nifti_stem(path)
    if stem is None or sep not in stem:
        return None
    return tags.get(stem.rsplit(sep, 1)[1].lower())


def _discover_brats(
    root: Path, layout: str, scheme: str, partial: bool = False
) -> tuple[list[CaseRecord], list[CaseError]]:
    cases: list[CaseRecord] = []
    problems: list[CaseError] = []
    for case_dir in _case_dirs(root):
        try:
            cases.append(_brats_case(case_dir, layout, scheme, partial))
        except CaseError as err:
            problems.append(err)
    for link in sorted(p for p in visible(root) if is_broken_link(p)):  # case folders gone
        problems.append(CaseError(link.name, link_problem(link), link))
    return cases, problems


def _brats_case(case_dir: Path, layout: str, scheme: str, partial: bool = False) -> CaseRecord:
    """One BraTS case folder -> record; raises CaseError naming the folder and the files."""
    case_id = case_dir.name
    sep, tags = _BRATS_TAGS[layout]
    files = nifti_files(case_dir)  # first: a folder that cannot be listed is said so
    broken = broken_links(case_dir)
    if broken:
        raise CaseError(case_id, "; ".join(map(link_problem, broken)), case_dir)
    found: dict[str, list[Path]] = {}
    for path in files:
        key = _brats_key(path, layout)
        if key is not None:
            found.setdefault(key, []).append(path)
    if not found:
        names = ",".join(tags)
        raise CaseError(case_id, f"no files named like {case_id}{sep}{{{names}}}.nii.gz", case_dir)
    check_duplicates(case_id, found)
    _check_one_case(case_id, case_dir, [p for paths in found.values() for p in paths], sep)
    file_tag = {key: tag for tag, key in tags.items()}
    missing = [f"{case_id}{sep}{file_tag[m]}.nii.gz" for m in BRATS_MODALITIES if m not in found]
    if missing and not (partial and any(m in found for m in BRATS_MODALITIES)):
        raise CaseError(case_id, f"missing modality file(s): {', '.join(missing)}", case_dir)
    images = {m: found[m][0] for m in BRATS_MODALITIES if m in found}
    label = found["seg"][0] if "seg" in found else None
    return CaseRecord(case_id, layout, images=images, label=label, label_scheme=scheme)


def _check_one_case(case_id: str, case_dir: Path, files: list[Path], sep: str) -> None:
    """Every file in a case folder must name one case: a label copied in from another case
    (``case1/case2_seg.nii.gz``) would otherwise train as this case's label."""
    prefixes = {path: (nifti_stem(path) or "").rsplit(sep, 1)[0] for path in files}
    counts = Counter(prefixes.values())
    if len(counts) < 2:
        return
    # the folder's own name wins; otherwise the prefix most files share
    main = case_id if case_id in counts else counts.most_common(1)[0][0]
    odd = sorted(path.name for path, prefix in prefixes.items() if prefix != main)
    message = f"{', '.join(odd)}: named for another case than {main} (two cases in one folder)"
    raise CaseError(case_id, message, case_dir)
