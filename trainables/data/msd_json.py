"""An MSD folder's ``dataset.json``: its channel names and the label scheme its labels imply.

MSD writes ``"modality": {"0": "FLAIR", ...}`` and ``"labels": {"0": "background", ...}``;
nnU-Net v2 writes ``"channel_names"`` and ``"labels": {"background": 0, ...}``. Either is
read. As in nnU-Net, a labelled folder needs it: the channel entry says which channel is which
modality (CT is normalised unlike MRI) and ``"labels"`` what each code means (Task01's 1 is
oedema, BraTS 2023's 1 is necrosis), and a guess would train on the wrong inputs or classes
silently. Only unlabelled 3-D images (new scans for ``ablate predict``) may go without it: one
channel, read as CT. ablate reads two label sets: binary (two labels: background and one
foreground) and BraTS tumour labels (four, whose codes - Task01's, BraTS 2021's or 2023's - are
read from their names); any other count, or names that do not say, is refused unless the scheme
is given (``data.label_scheme``, ``--label-scheme``).
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

CHANNEL_KEYS = ("modality", "channel_names")  # MSD's, nnU-Net v2's
LABEL_COUNTS = (2, 4)  # binary; BraTS tumour classes (read from their names)


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


def msd_channels(meta: dict, where: Path, images: list[Path], labelled: bool) -> dict[str, int]:
    """Canonical modality -> channel index of an MSD folder's images.

    From dataset.json's (``meta``, read from ``where``) "modality" (MSD) or "channel_names"
    (nnU-Net v2) entry. Without one, only unlabelled 3-D ``images`` are read (single-channel
    CT); otherwise an InputError says what to write.
    """
    for key in CHANNEL_KEYS:
        if key in meta:
            return _channels_from_json(key, meta[key], where)
    is_3d = _first_image_is_3d(images)
    if is_3d and not labelled:
        return {CT_MODALITY: 0}
    what = "missing" if not where.is_file() else 'no "modality" or "channel_names" entry'
    why = (
        "the images are 4-D, so which channel is which modality"
        if not is_3d
        else "training normalises CT and MRI differently, so what the images are"
    )
    raise InputError(
        f'{what}: {why} must be written there as "modality" (MSD) or "channel_names" (nnU-Net '
        'v2), e.g. {"0": "CT"} or {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}',
        where,
    )


def _channels_from_json(key: str, names: object, where: Path) -> dict[str, int]:
    if not isinstance(names, dict) or not names:  # null, [], "" or {}: a mistake, not absence
        raise InputError(
            f'"{key}" must map channel index to name, e.g. {{"0": "FLAIR"}}, got '
            f"{json.dumps(names)}",
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


def msd_scheme(meta: dict, where: Path, channels: dict[str, int], labelled: bool) -> str:
    """The label scheme of an MSD folder whose scheme is not given, from its dataset.json
    (``meta``, read from ``where``).

    CT, or two labels -> binary; four labels -> the BraTS scheme their names say
    (:func:`tumour_scheme`); none listed -> Task01's for unlabelled images (what ``ablate
    predict`` writes), an InputError for a ``labelled`` folder. ``"labels"`` that is not an
    object, or lists another count, is an InputError.
    """
    labels = meta.get("labels")
    if "labels" in meta and (not isinstance(labels, dict) or not labels):
        raise InputError(
            f'"labels" must map label value to name (MSD: {{"0": "background", "1": '
            f'"tumour"}}; nnU-Net v2: name to value), got {json.dumps(labels)}',
            where,
        )
    if CT_MODALITY in channels:
        return "binary"
    if labels and len(labels) not in LABEL_COUNTS:
        raise InputError(
            f'"labels" lists {len(labels)} labels ({", ".join(map(str, labels))}); without a '
            "given scheme ablate reads 2 (background + one: binary) or 4 (BraTS tumour labels): "
            "set data.label_scheme (ablate predict: --label-scheme) to say which",
            where,
        )
    if not labels and labelled:  # Task01's 1 is oedema, BraTS 2023's necrosis: never guessed
        raise InputError(
            'no "labels" entry: dataset.json must say what each label value means, e.g. '
            '{"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing '
            'tumour"} (MSD Task01), or give the scheme: data.label_scheme in the trial config, '
            "--label-scheme of ablate data prepare, predict and evaluate",
            where,
        )
    if not labels:
        return "msd_brats"
    return "binary" if len(labels) == 2 else tumour_scheme(labels, where)


def declared_label_values(meta: dict, where: Path) -> tuple[int, ...]:
    """The label values dataset.json's ``"labels"`` (read from ``where``) declares, sorted:
    MSD's value -> name keys or nnU-Net v2's name -> value (or region list) values; () when
    none are readable.

    The binary scheme reads any positive value as foreground, so without this a stray value
    (another dataset's code) would train as lesion. nnU-Net v2's ``"ignore"`` label (voxels
    left unannotated) is an InputError: ablate trains on dense labels, and would read them as
    a class.
    """
    labels = meta.get("labels")
    if not isinstance(labels, dict):
        return ()
    values = {0}  # background, listed or not: every convention here codes it 0
    for value, name in _value_name_pairs(labels):
        if str(name).strip().lower() == "ignore":
            raise InputError(
                f'"labels" declares "ignore": {json.dumps(value)}, nnU-Net v2\'s unannotated '
                "voxels; ablate trains on fully annotated labels and would read them as a "
                "class: annotate them (or set them to background) and drop the entry",
                where,
            )
        codes = _ints(value)
        if not codes:
            return ()  # a value that is no integer: nothing declared that we can hold files to
        values.update(codes)
    return tuple(sorted(values))


def _value_name_pairs(labels: dict) -> list[tuple[object, object]]:
    """(value, name) pairs of MSD's value -> name or nnU-Net v2's name -> value labels."""
    return [(v, k) if not str(k).lstrip("-").isdigit() else (k, v) for k, v in labels.items()]


def tumour_scheme(labels: dict, where: Path) -> str:
    """The BraTS scheme whose codes the four named labels use, read from their names.

    Task01 codes oedema 1 and necrosis 2; BraTS 2023 the other way round; BraTS <= 2021 codes
    enhancing tumour 4. Reading the codes by count alone swapped necrosis and oedema for a
    dataset in BraTS order. nnU-Net v2's region form (``"whole tumor": [1, 2, 3]``, ``"tumor
    core": [2, 3]``, ``"enhancing tumor": 3``) gives the classes as region differences.
    """
    codes = _class_codes(labels)
    scheme = {(1, 2, 4): "brats2021", (1, 2, 3): "brats2023", (2, 1, 3): "msd_brats"}.get(codes)
    if scheme is None:
        raise InputError(
            f'cannot tell the tumour classes from the "labels" names {json.dumps(labels)}: '
            "expected names for necrosis (necrotic, non-enhancing, NCR), oedema (edema, ED) and "
            "enhancing tumour (enhancing, ET) with the codes of BraTS 2021 (1, 2, 4), BraTS 2023 "
            "(1, 2, 3) or MSD Task01 (2, 1, 3); set data.label_scheme to say which",
            where,
        )
    return scheme


def _class_codes(labels: dict) -> tuple[int, ...] | None:
    """(necrosis, oedema, enhancing) codes of MSD's value -> name or nnU-Net v2's name -> value
    labels; None when the names do not say."""
    pairs = _value_name_pairs(labels)
    if any(isinstance(value, list) for value, _ in pairs):  # nnU-Net v2 regions
        regions = {_word(name, _REGION_WORDS): set(_ints(v)) for v, name in pairs}
        if not {"wt", "tc", "et"} <= set(regions):
            return None
        wt, tc, et = regions["wt"], regions["tc"], regions["et"]
        classes = {"ncr": tc - et, "ed": wt - tc, "et": et}
    else:
        classes = {}
        for value, name in pairs:
            classes.setdefault(_word(name, _CLASS_WORDS), set()).update(_ints(value))
    found = [classes.get(c, set()) for c in ("ncr", "ed", "et")]
    return tuple(next(iter(f)) for f in found) if all(len(f) == 1 for f in found) else None


# Words in label names for each tumour class (checked in this order: "non-enhancing" holds
# "enhancing") and for nnU-Net v2's regions.
_CLASS_WORDS = {
    "ncr": ("necro", "non enhancing", "nonenhancing", "ncr", "net"),
    "ed": ("edema", "oedema", "ed"),
    "et": ("enhancing", "et"),
}
_REGION_WORDS = {"wt": ("whole", "wt"), "tc": ("core", "tc"), "et": ("enhancing", "et")}


def _word(name: object, words: dict[str, tuple[str, ...]]) -> str | None:
    """The key of ``words`` whose word starts one of the name's words (``"NCR/NET"`` -> ncr)."""
    tokens = str(name).lower().replace("_", " ").replace("/", " ").replace("-", " ").split()
    text = " ".join(tokens)
    for key, options in words.items():
        for option in options:
            if " " in option and option in text:
                return key
            if any(token.startswith(option) and (len(option) > 3 or token == option)
                   for token in tokens):  # fmt: skip
                return key
    return None


def _ints(value: object) -> list[int]:
    """A label code or a list of them, as ints (``"1"`` and ``1.0`` too); [] for anything
    else, a fractional code (``1.5``) included."""
    items = value if isinstance(value, list) else [value]
    try:
        numbers = [float(v) for v in items]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    return [int(n) for n in numbers] if all(n.is_integer() for n in numbers) else []
