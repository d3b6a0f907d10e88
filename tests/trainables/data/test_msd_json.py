"""An MSD folder's dataset.json: channel entries and the label scheme its labels imply, and the
message for each malformed entry (naming the file and the entry)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.trainables.data.nifti_factory import (
    ct_dataset,
    msd_dataset,
    save_nifti,
    write_dataset_json,
)
from trainables.data.layouts import discover
from trainables.data.msd_json import declared_label_values
from trainables.data.nifti import load_case
from trainables.errors import CaseError, InputError

TASK01 = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}


def _refused(root: Path, meta: dict) -> str:
    write_dataset_json(root, meta)
    with pytest.raises(InputError) as err:
        discover(root)
    text = str(err.value)
    assert text.startswith(f"{root / 'dataset.json'}: ")
    return text.removeprefix(f"{root / 'dataset.json'}: ")


def test_label_counts_decide_the_scheme_in_both_dialects(tmp_path: Path) -> None:
    msd_dataset(tmp_path, ["BRATS_001"])
    for labels, scheme in [
        ({"0": "background", "1": "edema", "2": "non-enhancing", "3": "enhancing"}, "msd_brats"),
        ({"background": 0, "tumour": 1}, "binary"),  # nnU-Net v2: name -> value
    ]:
        write_dataset_json(tmp_path, {"channel_names": TASK01, "labels": labels})
        assert discover(tmp_path).cases[0].label_scheme == scheme
    write_dataset_json(tmp_path, {"modality": TASK01})  # no labels entry: never guessed
    assert _refused(tmp_path, {"modality": TASK01}).startswith('no "labels" entry')
    shutil.rmtree(tmp_path / "labelsTr")  # new scans for predict: Task01's codes written
    assert discover(tmp_path, partial=True).cases[0].label_scheme == "msd_brats"


def test_malformed_entries_are_named(tmp_path: Path) -> None:
    msd_dataset(tmp_path, ["BRATS_001"])
    assert _refused(tmp_path, {"modality": None}) == (
        '"modality" must map channel index to name, e.g. {"0": "FLAIR"}, got null'
    )
    assert _refused(tmp_path, {"channel_names": {}}).startswith('"channel_names" must map')
    assert _refused(tmp_path, {"modality": {"1": "CT"}}) == (
        '"modality" keys must be "0".."0", got [\'1\']'
    )
    assert _refused(tmp_path, {"modality": TASK01, "labels": "oops"}) == (
        '"labels" must map label value to name (MSD: {"0": "background", "1": "tumour"}; '
        'nnU-Net v2: name to value), got "oops"'
    )
    three = {"0": "background", "1": "left", "2": "right"}
    assert _refused(tmp_path, {"modality": TASK01, "labels": three}) == (
        '"labels" lists 3 labels (0, 1, 2); without a given scheme ablate reads 2 (background '
        "+ one: binary) or 4 (BraTS tumour labels): set data.label_scheme (ablate predict: "
        "--label-scheme) to say which"
    )


def test_a_given_scheme_reads_any_label_count(tmp_path: Path) -> None:
    msd_dataset(tmp_path, ["BRATS_001"])
    three = {"0": "background", "1": "left", "2": "right"}
    write_dataset_json(tmp_path, {"modality": TASK01, "labels": three})
    assert discover(tmp_path, label_scheme="msd_brats").cases[0].label_scheme == "msd_brats"


@pytest.mark.parametrize(
    ("labels", "scheme"),
    [
        ({"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
         "msd_brats"),  # Task01's own
        ({"background": 0, "necrotic": 1, "edema": 2, "enhancing": 3}, "brats2023"),
        ({"0": "Background", "1": "necrotic tumor core", "2": "peritumoral edematous tissue",
          "4": "GD-enhancing tumor"}, "brats2021"),
        ({"0": "background", "1": "NCR/NET", "2": "ED", "4": "ET"}, "brats2021"),
        ({"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
          "enhancing tumor": 3}, "msd_brats"),  # nnU-Net v2 regions: ED = WT - TC = 1
    ],
)  # fmt: skip
def test_four_labels_are_read_by_their_names(tmp_path: Path, labels: dict, scheme: str) -> None:
    """By count alone a dataset in BraTS order had necrosis and oedema swapped."""
    msd_dataset(tmp_path, ["BRATS_001"])
    write_dataset_json(tmp_path, {"modality": TASK01, "labels": labels})
    assert discover(tmp_path).cases[0].label_scheme == scheme


def test_four_unnamed_labels_are_refused(tmp_path: Path) -> None:
    msd_dataset(tmp_path, ["BRATS_001"])
    labels = {"0": "bg", "1": "a", "2": "b", "3": "c"}
    assert _refused(tmp_path, {"modality": TASK01, "labels": labels}) == (
        'cannot tell the tumour classes from the "labels" names {"0": "bg", "1": "a", "2": "b", '
        '"3": "c"}: expected names for necrosis (necrotic, non-enhancing, NCR), oedema (edema, '
        "ED) and enhancing tumour (enhancing, ET) with the codes of BraTS 2021 (1, 2, 4), BraTS "
        "2023 (1, 2, 3) or MSD Task01 (2, 1, 3); set data.label_scheme to say which"
    )


@pytest.mark.parametrize(
    ("labels", "declared"),
    [
        ({"0": "background", "1": "haemorrhage"}, (0, 1)),  # MSD: value -> name
        ({"background": 0, "lesion": 1}, (0, 1)),  # nnU-Net v2: name -> value
        ({"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
          "enhancing tumor": 3}, (0, 1, 2, 3)),  # nnU-Net v2 regions
        ({"background": "zero", "lesion": "one"}, ()),  # nothing readable: nothing held to
        ({"1": "haemorrhage"}, (0, 1)),  # background is 0, listed or not
        ({"background": 0, "lesion": 1.5}, ()),  # a fractional code declares nothing
    ],
)  # fmt: skip
def test_declared_label_values(tmp_path: Path, labels: dict, declared: tuple) -> None:
    assert declared_label_values({"labels": labels}, tmp_path / "dataset.json") == declared


def test_a_label_value_dataset_json_does_not_list_is_a_case_error(tmp_path: Path) -> None:
    """The binary scheme reads any positive value as foreground: a stray 255 (an "ignore"
    value, another dataset's code) trained as haemorrhage before."""
    cases = ct_dataset(tmp_path, ["CT_001", "CT_002"])
    stray = cases[0].label.copy()
    stray[0, 0, :2] = 255
    save_nifti(cases[0].files["seg"], stray, (0.5, 0.5, 5.0))
    first, second = discover(tmp_path).cases
    with pytest.raises(CaseError) as err:
        load_case(first, ["ct"])
    assert str(err.value) == (
        f"{cases[0].files['seg']}: label has values 255 that dataset.json does "
        "not list (it lists 0, 1)"
    )
    assert load_case(second, ["ct"]).label.max() == 1  # the other case still loads


def test_an_ignore_label_is_refused_whatever_the_scheme(tmp_path: Path) -> None:
    """nnU-Net v2's sparse annotations mark unannotated voxels "ignore": read as a class (or
    as foreground by the binary scheme), they would train as lesion."""
    ct_dataset(tmp_path, ["CT_001"])
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "bleed": 1, "ignore": 2}}
    expected = (
        '"labels" declares "ignore": 2, nnU-Net v2\'s unannotated voxels; ablate trains on fully '
        "annotated labels and would read them as a class: annotate them (or set them to "
        "background) and drop the entry"
    )
    assert _refused(tmp_path, meta) == expected
    with pytest.raises(InputError, match='declares "ignore"'):
        discover(tmp_path, label_scheme="binary")
