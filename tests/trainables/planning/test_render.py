"""From an inspected dataset to trial-config settings that validate and train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.trainables.data.nifti_factory import ct_dataset, msd_dataset
from trainables.config.trial import parse_trial_config
from trainables.data.inspect import inspect_dataset
from trainables.errors import InputError
from trainables.planning.dataset import DatasetPlan, plan_dataset
from trainables.planning.render import (
    augmentation_line,
    nested,
    plan_dict,
    plan_inspected,
    plan_overrides,
    plan_summary,
    plan_yaml,
    planned_trial,
)

REPO = Path(__file__).resolve().parents[3]
REFERENCE = json.loads((Path(__file__).parent / "nnunet_plans.json").read_text())
CT_BASE = REPO / "search_spaces" / "base" / "nnunet_ct.yaml"


@pytest.fixture
def thick_ct(tmp_path: Path) -> Path:
    """Four 48x40x12 CT cases at 0.5 x 0.5 x 5 mm (the factory's HU noise fills every voxel)."""
    ct_dataset(tmp_path / "ct", [f"ct_{i}" for i in range(4)], shape=(48, 40, 12))
    return tmp_path / "ct"


def test_the_plan_is_made_from_the_labelled_cases(thick_ct: Path) -> None:
    plan = plan_inspected(inspect_dataset(thick_ct))
    assert plan.num_cases == 4
    assert plan.target_spacing == (0.5, 0.5, 5.0)
    # 10x coarser Z: stride 1 and kernel 1 along Z until the in-plane spacing catches up
    assert plan.fullres.kernel_sizes[0] == (3, 3, 1)
    assert plan.fullres.strides[1] == (2, 2, 1)


@pytest.mark.parametrize("configuration", ["3d_fullres", "2d"])
def test_the_plan_applied_to_the_ct_base_is_a_valid_trial(thick_ct: Path, configuration) -> None:
    plan = plan_inspected(inspect_dataset(thick_ct))
    merged = planned_trial(CT_BASE, plan, configuration)
    cfg = parse_trial_config(merged)
    chosen = plan.fullres if configuration == "3d_fullres" else plan.slices
    assert cfg.model.kind == "plain_unet"
    assert tuple(cfg.sampling.patch_size) == chosen.patch_size
    assert cfg.model.strides == chosen.strides and cfg.model.kernel_sizes == chosen.kernel_sizes
    assert cfg.train.batch_size == chosen.batch_size
    assert cfg.data.preprocess.resample.spacing == plan.target_spacing
    assert cfg.data.preprocess.resample.in_plane_only is (configuration == "2d")
    # the rest of the base stays as it was: nnU-Net's planner does not choose the optimizer
    assert cfg.optimizer.kind == "sgd" and cfg.data.preprocess.normalization.kind == "ct_window"
    assert cfg.loss.batch_dice is (configuration == "2d" or plan.fullres_batch_dice)


def test_a_loss_without_batch_dice_keeps_its_own_settings(thick_ct: Path, tmp_path: Path) -> None:
    base = yaml.safe_load(CT_BASE.read_text())
    base["loss"] = {"kind": "bce"}
    path = tmp_path / "bce.yaml"
    path.write_text(yaml.safe_dump(base))
    merged = planned_trial(path, plan_inspected(inspect_dataset(thick_ct)), "3d_fullres")
    assert merged["loss"] == {"kind": "bce"}


def test_a_study_file_is_no_base(thick_ct: Path, tmp_path: Path) -> None:
    study = tmp_path / "study.yaml"
    study.write_text("name: s\nextends: base/nnunet_ct.yaml\ngrid: {optimizer.lr: [0.1]}\n")
    with pytest.raises(InputError, match="this is a study \\(search-space\\) file"):
        planned_trial(study, plan_inspected(inspect_dataset(thick_ct)), "3d_fullres")


def test_unlabelled_images_cannot_be_planned(tmp_path: Path) -> None:
    msd_dataset(tmp_path / "msd", ["a", "b"], labels=False)
    with pytest.raises(InputError, match="no usable labelled case to plan from"):
        plan_inspected(inspect_dataset(tmp_path / "msd"))


def test_yaml_and_json_say_the_same_plan(thick_ct: Path) -> None:
    plan = plan_inspected(inspect_dataset(thick_ct))
    overrides = plan_overrides(plan, "3d_fullres")
    lines = plan_summary(plan, "3d_fullres", thick_ct)
    text = plan_yaml(lines, nested(overrides))
    assert text.startswith("# nnU-Net 3d_fullres plan of ")
    assert "target spacing 0.50x0.50x5.00 mm" in text
    loaded = yaml.safe_load(text)
    assert list(loaded) == ["data", "sampling", "model", "loss", "train"]  # trial-config order
    assert loaded["model"]["strides"] == [list(s) for s in plan.fullres.strides]
    as_json = plan_dict(plan, "3d_fullres")
    assert as_json["settings"] == overrides
    assert as_json["configurations"]["2d"]["patch_size"] == list(plan.slices.patch_size)


def test_single_slice_images_are_planned_2d_only(tmp_path: Path) -> None:
    ct_dataset(tmp_path / "flat", ["a", "b"], shape=(48, 40, 1), spacing=(0.5, 0.5, 1.0))
    plan = plan_inspected(inspect_dataset(tmp_path / "flat"))
    with pytest.raises(InputError, match="the images are single slices \\(median shape 48x40x1"):
        plan_overrides(plan, "3d_fullres")
    assert plan_dict(plan, "2d")["configurations"]["3d_fullres"] is None


def test_a_2d_plan_says_when_nnunet_would_slice_another_axis(tmp_path: Path) -> None:
    ct_dataset(tmp_path / "x", ["a", "b"], shape=(12, 48, 40), spacing=(5.0, 0.5, 0.5))
    plan = plan_inspected(inspect_dataset(tmp_path / "x"))
    lines = plan_summary(plan, "2d", tmp_path / "x")
    assert lines[-1].startswith("note: axis X is the coarsest; nnU-Net's 2d would slice along it")
    assert not plan_summary(plan, "3d_fullres", tmp_path / "x")[-1].startswith("note")


def _big_ct_plan() -> DatasetPlan:
    """nnU-Net's answers for a dataset with a 3d_lowres (the fixture's large CT volumes)."""
    inputs = REFERENCE["Dataset003_BigCT"]["inputs"]
    return plan_dataset(
        inputs["spacings"], inputs["header_shapes"], inputs["crop_shapes"], inputs["num_classes"]
    )


def test_a_3d_lowres_plan_trains_at_nnunets_coarser_spacing() -> None:
    """The 3d_lowres settings are nnU-Net's 3d_lowres configuration (spacing, patch, network,
    batch; batch Dice off), merged into the CT base as a valid trial; its summary names the
    coarser spacing and the median shape at it."""
    plan = _big_ct_plan()
    nnunet = REFERENCE["Dataset003_BigCT"]["nnunet"]["3d_lowres"]
    cfg = parse_trial_config(planned_trial(CT_BASE, plan, "3d_lowres"))
    assert list(cfg.data.preprocess.resample.spacing) == nnunet["spacing"]
    assert list(cfg.sampling.patch_size) == nnunet["patch_size"]
    assert [list(s) for s in cfg.model.strides] == nnunet["strides"]
    assert cfg.train.batch_size == nnunet["batch_size"] and cfg.loss.batch_dice is False
    assert parse_trial_config(planned_trial(CT_BASE, plan, "3d_fullres")).loss.batch_dice is True
    summary = plan_summary(plan, "3d_lowres", "big")
    spacing = "x".join(f"{s:.2f}" for s in nnunet["spacing"])
    assert summary[0].startswith("nnU-Net 3d_lowres plan of big")
    assert f"target spacing {spacing} mm" in summary[1]
    assert plan_dict(plan, "3d_lowres")["settings"]["sampling.patch_size"] == nnunet["patch_size"]


def test_3d_lowres_is_refused_where_nnunet_makes_none(thick_ct: Path) -> None:
    plan = plan_inspected(inspect_dataset(thick_ct))
    assert plan.lowres is None
    with pytest.raises(InputError) as err:
        plan_overrides(plan, "3d_lowres")
    share = f"{100 * plan.fullres.patch_fraction:.1f}%"
    assert (
        f"nnU-Net makes no 3d_lowres for this dataset: the 3d_fullres patch covers {share} of "
        "the median image (it adds one below 25%, when the coarser image is at least half the "
        "size); plan --configuration 3d_fullres"
    ) in str(err.value)


def test_the_summary_says_what_the_default_augmentation_does_with_the_patch() -> None:
    """A cube: 30 degrees, no dummy 2-D, 128 -> 206; thick slices: dummy 2-D about Z, the slice
    axis cut without margin; 2-D: 180 degrees (aspect under 1.5)."""
    assert augmentation_line((128, 128, 128)) == (
        "default augmentation: rotation up to 30 degrees, dummy 2-D no; a rotated or scaled "
        "sample is cut as 206x206x206 (the patch with nnU-Net's margin)"
    )
    thick = augmentation_line((160, 160, 40))
    assert "180 degrees, dummy 2-D yes (in-plane, slices along Z)" in thick
    assert "cut as 266x266x40" in thick
    assert "rotation up to 180 degrees, dummy 2-D no; " in augmentation_line((224, 192))
