"""An MSD folder's ``dataset.json``: its channel names and the label scheme its labels imply.

MSD writes ``"modality": {"0": "FLAIR", ...}`` and ``"labels": {"0": "background", ...}``;
nnU-Net v2 writes ``"channel_names"`` and ``"labels": {"background": 0, ...}``. Either is
read. Without the file (or without a channel entry) the channels come from the first image
header: 3-D is single-channel CT, 4-D is Task01's order. ablate reads two label sets: binary
(two labels: background and one foreground) and Task01's BraTS labels (four); any other count
is refused unless the scheme is given (``data.label_scheme``, ``--label-scheme``), since reading
it as either would train on the wrong classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib

from trainables.data.nifti import READ_ERRORS
from trainables.data.types import CT_MODALITY
from trainables.errors import InputError

# Lower-case modality names used by the supported datasets -> canonical names.
MODALITY_ALIASES: dict[str, str] = {
    "t1": "t1",
    "t1ce": "t1ce",
    "t2": "t2",
    "flair": "flair",
    "t1n": "t1",  # BraTS 2023+
    "t1c": "t1ce",
    "t2w": "t2",
    "t2f": "flair",
    "t1w": "t1",  # MSD Task01 dataset.json
    "t1gd": "t1ce",
    "ct": CT_MODALITY,
}

# MSD Task01's channel order, used when dataset.json is absent or has no modality entry.
MSD_DEFAULT_CHANNELS: dict[str, int] = {"flair": 0, "t1": 1, "t1ce": 2, "t2": 3}
CHANNEL_KEYS = ("modality", "channel_names")  # MSD's, nnU-Net v2's
LABEL_COUNT_SCHEMES = {2: "binary", 4: "msd_brats"}


def read_dataset_json(root: Path) -> dict:
    """``root/dataset.json`` as a dict ({} when absent); InputError naming it when invalid."""
    path = root / "dataset.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read dataset.json ({exc})", path) from None
    if not isinstance(meta, dict):
        raise InputError("dataset.json must hold a JSON object", path)
    return meta


def msd_channels(root: Path, images: list[Path]) -> dict[str, int]:
    """Canonical modality -> channel index of an MSD folder's images.

    From dataset.json's "modality" (MSD) or "channel_names" (nnU-Net v2) entry when present;
    otherwise from the first readable image header: 3-D means single-channel CT, 4-D means
    Task01's order (FLAIR, T1w, t1gd, T2w).
    """
    meta = read_dataset_json(root)
    for key in CHANNEL_KEYS:
        if key in meta:
            return _channels_from_json(key, meta[key], root / "dataset.json")
    return {CT_MODALITY: 0} if _first_image_is_3d(images) else dict(MSD_DEFAULT_CHANNELS)


def _channels_from_json(key: str, names: object, where: Path) -> dict[str, int]:
    if not isinstance(names, dict) or not names:  # null, [], "" or {}: a mistake, not absence
        raise InputError(
            f'"{key}" must map channel index to name, e.g. {{"0": "FLAIR"}}, got '
            f"{json.dumps(names)}; remove the key to read the channels from the image header",
            where,
        )
    if sorted(str(k) for k in names) != sorted(str(i) for i in range(len(names))):
        raise InputError(f'"{key}" keys must be "0".."{len(names) - 1}", got {list(names)}', where)
    channels: dict[str, int] = {}
    for index, name in sorted(names.items(), key=lambda kv: int(kv[0])):
        canonical = MODALITY_ALIASES.get(str(name).lower())
        if canonical is None:
            known = ", ".join(sorted(MODALITY_ALIASES))
            raise InputError(f"modality {name!r} is not one of the known names ({known})", where)
        if canonical in channels:
            raise InputError(f"two channels are the same modality {canonical!r}", where)
        channels[canonical] = int(index)
    return channels


def _first_image_is_3d(images: list[Path]) -> bool:
    """Whether the first image whose header reads is 3-D (trailing singleton axes ignored)."""
    for path in images:
        try:
            shape = nib.load(path).shape  # header only: voxels are not decoded
        except READ_ERRORS:  # a corrupt file is reported when its case is loaded
            continue
        while len(shape) > 3 and shape[-1] == 1:
            shape = shape[:-1]
        return len(shape) == 3
    raise InputError("no readable NIfTI header in imagesTr/", images[0].parent)


def msd_scheme(root: Path, channels: dict[str, int]) -> str:
    """The label scheme of an MSD folder whose scheme is not given.

    CT, or two labels in dataset.json -> binary; four labels, or none listed -> Task01's BraTS
    labels. ``"labels"`` that is not an object, or lists another count, is an InputError.
    """
    where = root / "dataset.json"
    meta = read_dataset_json(root)
    labels = meta.get("labels")
    if "labels" in meta and (not isinstance(labels, dict) or not labels):
        raise InputError(
            f'"labels" must map label value to name (MSD: {{"0": "background", "1": '
            f'"tumour"}}; nnU-Net v2: name to value), got {json.dumps(labels)}',
            where,
        )
    if CT_MODALITY in channels:
        return "binary"
    if labels and len(labels) not in LABEL_COUNT_SCHEMES:
        raise InputError(
            f'"labels" lists {len(labels)} labels ({", ".join(map(str, labels))}); without a '
            "given scheme ablate reads 2 (background + one: binary) or 4 (MSD Task01's BraTS "
            "labels): set data.label_scheme (ablate predict: --label-scheme) to say which",
            where,
        )
    return LABEL_COUNT_SCHEMES[len(labels)] if labels else "msd_brats"
