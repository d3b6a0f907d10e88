"""An MSD-style folder: ``imagesTr/`` (or ``imagesTs/``), ``labelsTr/``, ``dataset.json``.

Two ways to store a case's channels are read:

* MSD: one file per case, 4-D for several channels (``BRATS_001.nii.gz``, X x Y x Z x 4), 3-D
  for one (CT), channel order from dataset.json (required for 4-D images and for training);
* nnU-Net v2: one 3-D file per channel, ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz`` ...,
  which channel is which modality from dataset.json's ``channel_names`` (required: nnU-Net's
  BraTS order is not Task01's).

Labels are ``labelsTr/<case>.nii.gz``; their scheme comes from dataset.json
(:mod:`trainables.data.msd_json`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainables.data.files import (
    broken_links,
    check_duplicates,
    link_problem,
    nifti_files,
    nifti_stem,
)
from trainables.data.msd_json import (
    CHANNEL_KEYS,
    declared_label_values,
    msd_channels,
    msd_scheme,
    read_dataset_json,
)
from trainables.data.types import CaseRecord
from trainables.errors import CaseError, InputError

_NNUNET_CHANNEL = re.compile(r"_0000$")
_CHANNEL_SUFFIX = re.compile(r"^(.+)_(\d{4})$")  # nnU-Net v2: <case>_<channel>


def discover_msd(
    root: Path, override: str | None, partial: bool = False
) -> tuple[list[CaseRecord], list[CaseError]]:
    """The cases of an MSD-style folder and the problems of the others.

    A folder without imagesTr/ is read from imagesTs/ (unlabelled test images); ``partial``
    (prediction) reads both, since every image there is one to segment."""
    dirs = [d for d in (root / "imagesTr", root / "imagesTs") if d.is_dir()]
    images_dir, image_dirs = dirs[0], dirs if partial else dirs[:1]
    labels = _group_by_case(nifti_files(root / "labelsTr"), strip_channel=False)
    first = nifti_files(images_dir)
    if not first:
        raise InputError(f"{images_dir.name}/ holds no .nii.gz images", images_dir)
    meta = read_dataset_json(root)  # once: channels, labels and the layout's form read it
    per_channel = _channel_files([p for d in image_dirs for p in nifti_files(d)], meta, labels)
    if per_channel is not None:
        trains = bool(labels) and not partial
        return _channel_file_cases(root, meta, image_dirs, per_channel, labels, override, trains)
    images = _group_by_case(first, labelled=set(labels))
    for extra in image_dirs[1:]:
        for case_id, paths in _group_by_case(nifti_files(extra)).items():
            images.setdefault(case_id, []).extend(paths)  # one id in both: a duplicate below
    where = root / "dataset.json"
    trains = bool(labels) and not partial  # predict reads images only: labels never matter
    channels = msd_channels(meta, where, [paths[0] for paths in images.values()], trains)
    declared = declared_label_values(meta, where)  # first: an "ignore" label, whatever scheme
    scheme = override or msd_scheme(meta, where, channels, trains)
    problems = _broken_cases(root, image_dirs, images, labels, _msd_case_of(labels))
    cases: list[CaseRecord] = []
    for case_id, paths in images.items():
        try:
            check_duplicates(case_id, {"image": paths, "label": labels.get(case_id, [])})
        except CaseError as err:
            problems.append(err)
            continue
        label = labels[case_id][0] if case_id in labels else None
        cases.append(_msd_record(case_id, paths[0], label, channels, scheme, declared))
    return cases, problems + _unmatched_labels(labels, images, images_dir)


def _channel_file_cases(
    root: Path,
    meta: dict[str, Any],
    image_dirs: list[Path],
    per_channel: dict[str, dict[int, list[Path]]],
    labels: dict[str, list[Path]],
    override: str | None,
    trains: bool,
) -> tuple[list[CaseRecord], list[CaseError]]:
    """nnU-Net v2's one file per channel: each case's files by dataset.json's channel names
    (``trains``: the labels are read, so dataset.json must name them)."""
    where = root / "dataset.json"
    if not any(key in meta for key in CHANNEL_KEYS):
        raise InputError(
            f"{image_dirs[0].name}/ holds one file per channel (<case>_0000, <case>_0001, ...): "
            'dataset.json needs "channel_names" (nnU-Net v2) or "modality" (MSD) to say which '
            'modality each channel is, e.g. {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}',
            where,
        )
    channels = msd_channels(meta, where, [], trains)
    declared = declared_label_values(meta, where)  # first: an "ignore" label, whatever scheme
    scheme = override or msd_scheme(meta, where, channels, trains)
    modality_of = {index: modality for modality, index in channels.items()}
    problems = _broken_cases(root, image_dirs, per_channel, labels, _channel_case_of)
    cases: list[CaseRecord] = []
    for case_id, by_index in per_channel.items():
        try:
            images = _case_channels(case_id, by_index, modality_of, labels.get(case_id, []))
        except CaseError as err:
            problems.append(err)
            continue
        label = labels[case_id][0] if case_id in labels else None
        cases.append(CaseRecord(case_id, "msd", images, label, scheme, label_values=declared))
    return cases, problems + _unmatched_labels(labels, per_channel, image_dirs[0])


def _case_channels(
    case_id: str, by_index: dict[int, list[Path]], modality_of: dict[int, str], label: list[Path]
) -> dict[str, Path]:
    """Modality -> file of one case; CaseError for a missing, extra or duplicate channel."""
    found = {f"channel {i:04d}": paths for i, paths in by_index.items()}
    check_duplicates(case_id, {**found, "label": label})
    folder = next(iter(by_index.values()))[0].parent
    missing = [f"{case_id}_{i:04d}.nii.gz" for i in sorted(modality_of) if i not in by_index]
    if missing:
        raise CaseError(case_id, f"missing channel file(s): {', '.join(missing)}", folder)
    extra = [by_index[i][0].name for i in sorted(by_index) if i not in modality_of]
    if extra:
        message = f"{', '.join(extra)}: beyond dataset.json's {len(modality_of)} channels"
        raise CaseError(case_id, message, folder)
    return {modality_of[i]: by_index[i][0] for i in sorted(modality_of)}


def _channel_files(
    paths: list[Path], meta: dict[str, Any], labels: dict[str, list[Path]]
) -> dict[str, dict[int, list[Path]]] | None:
    """Case -> channel index -> files when every image is ``<case>_<4 digits>`` and some
    channel is not 0000 (nnU-Net v2 with several channels); None otherwise, and where the
    digits are the case id's own: a label has the image's stem (MSD cases ``SynthCT_0001``),
    or dataset.json lists a single channel."""
    matches = [(p, _CHANNEL_SUFFIX.match(nifti_stem(p) or "")) for p in paths]
    if not matches or not all(m for _, m in matches):
        return None
    if any(m.group(0) in labels for _, m in matches if m):
        return None
    listed = [v for k, v in meta.items() if k in CHANNEL_KEYS]
    if listed and isinstance(listed[0], dict) and len(listed[0]) == 1:
        return None
    if all(m.group(2) == "0000" for _, m in matches if m):
        return None  # one channel: MSD naming with nnU-Net's suffix, read as before
    grouped: dict[str, dict[int, list[Path]]] = {}
    for path, m in matches:
        if m:
            grouped.setdefault(m.group(1), {}).setdefault(int(m.group(2)), []).append(path)
    return dict(sorted(grouped.items()))


def _msd_case_of(labels: dict[str, list[Path]]) -> Callable[[str], str]:
    """An MSD image stem's case id: nnU-Net's ``_0000`` dropped unless a label has the stem."""
    return lambda stem: stem if stem in labels else _NNUNET_CHANNEL.sub("", stem)


def _channel_case_of(stem: str) -> str:
    """A ``<case>_<channel>`` image stem's case id."""
    match = _CHANNEL_SUFFIX.match(stem)
    return match.group(1) if match else stem


def _broken_cases(
    root: Path,
    image_dirs: list[Path],
    images: dict[str, Any],
    labels: dict[str, list[Path]],
    case_of: Callable[[str], str],
) -> list[CaseError]:
    """One problem per case with a broken image or label link; the case is dropped from
    ``images`` and ``labels`` (an image whose label link is broken is not unlabelled).
    ``case_of`` gives an image file stem's case id."""
    links = [(p, False) for d in image_dirs for p in broken_links(d)]
    links += [(p, True) for p in broken_links(root / "labelsTr")]
    problems: list[CaseError] = []
    for path, is_label in links:
        stem = nifti_stem(path) or path.name
        case_id = stem if is_label else case_of(stem)
        images.pop(case_id, None)
        labels.pop(case_id, None)
        problems.append(CaseError(case_id, link_problem(path), path))
    return problems


def _unmatched_labels(
    labels: dict[str, list[Path]], images: dict[str, Any], images_dir: Path
) -> list[CaseError]:
    """A problem per label whose case has no image."""
    message = f"label has no image in {images_dir.name}/"
    return [CaseError(c, message, paths[0]) for c, paths in labels.items() if c not in images]


def _msd_record(
    case_id: str,
    image: Path,
    label: Path | None,
    channels: dict[str, int],
    scheme: str,
    declared: tuple[int, ...],
) -> CaseRecord:
    # A single-channel dataset stores plain 3-D files: no channel index (see CaseRecord).
    channel_map = channels if len(channels) > 1 else {}
    images = dict.fromkeys(channels, image)
    return CaseRecord(
        case_id, "msd", images, label, scheme, channels=channel_map, label_values=declared
    )


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
