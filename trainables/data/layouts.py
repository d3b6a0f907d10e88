"""Find the cases of a dataset directory in one of the supported layouts.

==========  ==================================================  ================================
layout      files                                               default label scheme
==========  ==================================================  ================================
brats2021   ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``     ``brats2021`` (0/1/2/4)
brats2023   ``<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``      ``brats2023`` (0/1/2/3)
msd         ``imagesTr/<case>.nii.gz`` + ``labelsTr/`` +        ``msd_brats`` (4-D MRI) or
            optional ``dataset.json``                           ``binary`` (3-D CT)
==========  ==================================================  ================================

An MSD folder with only ``imagesTs/`` (unlabelled test images) is read from there; for prediction
(``partial``) a folder with both gives the images of both.

``.nii`` works wherever ``.nii.gz`` does. Discovery only lists files and, for an MSD folder
without modality information, reads one NIfTI header; it never decodes voxels and never writes
to the source directory. Problems confined to one case (a missing modality file, duplicate
files) become :class:`~trainables.errors.CaseError` entries while the good cases are returned.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from trainables.data.labels import get_scheme
from trainables.data.msd_json import msd_channels, msd_scheme
from trainables.data.types import BRATS_MODALITIES, CaseRecord
from trainables.errors import CaseError, InputError

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")

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

_NNUNET_CHANNEL = re.compile(r"_0000$")


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
        cases, problems = _discover_msd(root, override, partial)
    else:
        cases, problems = _discover_brats(root, layout, override or layout, partial)
    cases.sort(key=lambda c: c.case_id)
    problems.sort(key=lambda p: p.case_id)
    return DatasetIndex(root=root, layout=layout, cases=cases, problems=problems)


def layouts_help() -> str:
    """The supported layouts, one indented line each (for error messages and CLI help)."""
    return "\n".join(f"  {name}: {text}" for name, text in LAYOUT_HELP.items())


def _check_root(root: str | Path) -> Path:
    path = Path(root).expanduser().absolute()
    if not path.exists():
        raise InputError(
            f"dataset directory does not exist; layouts understood:\n{layouts_help()}", path
        )
    if not path.is_dir():
        raise InputError("is not a directory (expected a dataset directory)", where=path)
    try:
        visible = _visible(path)
    except OSError as err:
        raise InputError(f"cannot read the dataset directory: {err.strerror}", path) from None
    if not visible:
        raise InputError(f"dataset directory is empty; layouts understood:\n{layouts_help()}", path)
    return path


def detect_layout(root: Path) -> str:
    """Name the layout of ``root``: "msd" if it has imagesTr/, else the BraTS naming most files use.

    Raises:
        InputError: no known layout (the message lists the layouts understood and hints when
            ``root`` is itself a case folder).
    """
    if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
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


def nifti_files(folder: Path) -> list[Path]:
    """Visible ``.nii.gz``/``.nii`` files directly inside ``folder``, sorted by name.

    Hidden files are skipped: MSD tarballs ship macOS ``._BRATS_001.nii.gz`` resource forks.
    """
    if not folder.is_dir():
        return []
    try:
        return sorted(p for p in _visible(folder) if p.is_file() and nifti_stem(p) is not None)
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
    return sorted(p for p in _visible(folder) if _is_broken_link(p) and nifti_stem(p) is not None)


def link_problem(path: Path) -> str:
    """What is wrong with a broken link, for a case problem: its target and why."""
    try:
        path.stat()
        reason = "unknown"  # repaired since it was listed
    except OSError as err:  # ENOENT for a target gone, ELOOP for a loop
        reason = err.strerror or type(err).__name__
    return f"{path.name} is a symbolic link to {os.readlink(path)}, which cannot be read ({reason})"


def _is_broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def _visible(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


def _case_dirs(root: Path) -> list[Path]:
    return sorted(p for p in _visible(root) if p.is_dir())


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
    for link in sorted(p for p in _visible(root) if _is_broken_link(p)):  # case folders gone
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
    _check_duplicates(case_id, found)
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


def _check_duplicates(case_id: str, found: dict[str, list[Path]]) -> None:
    """CaseError naming the folder when one key has several files (``x.nii`` and ``x.nii.gz``)."""
    dups = {key: paths for key, paths in found.items() if len(paths) > 1}
    if dups:
        text = "; ".join(f"{k}: {', '.join(p.name for p in v)}" for k, v in dups.items())
        where = next(iter(dups.values()))[0].parent
        raise CaseError(case_id, f"duplicate files ({text}); keep one of each", where)


def _discover_msd(
    root: Path, override: str | None, partial: bool = False
) -> tuple[list[CaseRecord], list[CaseError]]:
    """MSD-style folder: one file per case in imagesTr/, labels of the same name in labelsTr/.

    A folder without imagesTr/ is read from imagesTs/ (unlabelled test images); ``partial``
    (prediction) reads both, since every image there is one to segment."""
    dirs = [d for d in (root / "imagesTr", root / "imagesTs") if d.is_dir()]
    images_dir = dirs[0]
    labels = _group_by_case(nifti_files(root / "labelsTr"), strip_channel=False)
    images = _group_by_case(nifti_files(images_dir), labelled=set(labels))
    if not images:
        raise InputError(f"{images_dir.name}/ holds no .nii.gz images", images_dir)
    for extra in dirs[1:] if partial else []:
        for case_id, paths in _group_by_case(nifti_files(extra)).items():
            images.setdefault(case_id, []).extend(paths)  # one id in both: a duplicate below
    channels = msd_channels(root, [paths[0] for paths in images.values()])
    scheme = override or msd_scheme(root, channels)
    cases: list[CaseRecord] = []
    problems = _broken_msd_cases(root, dirs if partial else dirs[:1], images, labels)
    for case_id, paths in images.items():
        try:
            _check_duplicates(case_id, {"image": paths, "label": labels.get(case_id, [])})
        except CaseError as err:
            problems.append(err)
            continue
        label = labels[case_id][0] if case_id in labels else None
        cases.append(_msd_record(case_id, paths[0], label, channels, scheme))
    for case_id, paths in labels.items():
        if case_id not in images:
            message = f"label has no image in {images_dir.name}/"
            problems.append(CaseError(case_id, message, paths[0]))
    return cases, problems


def _broken_msd_cases(
    root: Path, image_dirs: list[Path], images: dict[str, list[Path]], labels: dict[str, list[Path]]
) -> list[CaseError]:
    """One problem per case with a broken image or label link; the case is dropped from
    ``images`` and ``labels`` (an image whose label link is broken is not unlabelled)."""
    links = [(p, False) for d in image_dirs for p in broken_links(d)]
    links += [(p, True) for p in broken_links(root / "labelsTr")]
    problems: list[CaseError] = []
    for path, is_label in links:
        stem = nifti_stem(path) or path.name
        case_id = stem if is_label or stem in labels else _NNUNET_CHANNEL.sub("", stem)
        images.pop(case_id, None)
        labels.pop(case_id, None)
        problems.append(CaseError(case_id, link_problem(path), path))
    return problems


def _msd_record(
    case_id: str, image: Path, label: Path | None, channels: dict[str, int], scheme: str
) -> CaseRecord:
    # A single-channel dataset stores plain 3-D files: no channel index (see CaseRecord).
    channel_map = channels if len(channels) > 1 else {}
    images = dict.fromkeys(channels, image)
    return CaseRecord(case_id, "msd", images, label, scheme, channels=channel_map)


def _group_by_case(
    paths: list[Path], strip_channel: bool = True, labelled: set[str] | None = None
) -> dict[str, list[Path]]:
    """Case id -> files. nnU-Net's ``_0000`` channel suffix is dropped when every image has it,
    unless the labels are named with it (``labelled``: the label stems), as they are for a
    case whose id itself ends in ``_0000`` (one case ``SynthCT_0000`` of MSD naming)."""
    stems = {p: nifti_stem(p) or p.name for p in paths}
    suffixed = stems and all(_NNUNET_CHANNEL.search(s) for s in stems.values())
    if strip_channel and suffixed and not set(stems.values()) & (labelled or set()):
        stems = {p: _NNUNET_CHANNEL.sub("", s) for p, s in stems.items()}
    grouped: dict[str, list[Path]] = {}
    for path, stem in stems.items():
        grouped.setdefault(stem, []).append(path)
    return dict(sorted(grouped.items()))
