"""ablate's planner against nnU-Net v2's own plans of the same datasets.

``nnunet_plans.json`` holds, for five datasets written by benchmarks/plan_vs_nnunet.py, the
inputs ablate planned from (each case's spacing, stored shape and crop to non-zero, read by
``ablate data inspect``) and what nnU-Net 2.8.1's ``nnUNetv2_plan_experiment`` planned from the
same files, axes mapped to ablate's (X, Y, Z). The benchmark checked that the crop shapes match
nnU-Net's fingerprint. The datasets reach every branch: thick CT slices (kernel 1 and stride 1
along Z early on), 4-channel isotropic MRI, volumes large enough for a 3d_lowres (whose whole
configuration is compared too; and so batch Dice for 3d_fullres), a coarse X axis (nnU-Net's
transpose moves it first), and a small dataset where the 5%-of-the-data cap sets the 2d batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trainables.planning.configuration import ConfigurationPlan
from trainables.planning.dataset import plan_dataset
from trainables.planning.render import batch_dice

REFERENCE = json.loads((Path(__file__).parent / "nnunet_plans.json").read_text())


def _as_reference(conf: ConfigurationPlan, batch_dice: bool) -> dict[str, Any]:
    return {
        "spacing": [round(s, 6) for s in conf.spacing],
        "patch_size": list(conf.patch_size),
        "strides": [list(s) for s in conf.strides],
        "kernel_sizes": [list(k) for k in conf.kernel_sizes],
        "batch_size": conf.batch_size,
        "batch_dice": batch_dice,
    }


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_every_configuration_matches_nnunet(name: str) -> None:
    inputs, nnunet = REFERENCE[name]["inputs"], REFERENCE[name]["nnunet"]
    plan = plan_dataset(
        inputs["spacings"], inputs["header_shapes"], inputs["crop_shapes"], inputs["num_classes"]
    )
    assert _as_reference(plan.fullres, plan.fullres_batch_dice) == nnunet["3d_fullres"]
    assert (plan.lowres is not None) == nnunet["lowres"]
    if plan.lowres is not None:  # the whole 3d_lowres configuration, batch Dice off
        assert _as_reference(plan.lowres, batch_dice(plan, "3d_lowres")) == nnunet["3d_lowres"]
    if "2d" in nnunet:  # absent where nnU-Net slices along another axis than ablate's Z
        assert _as_reference(plan.slices, True) == nnunet["2d"]


def test_the_reference_covers_each_branch() -> None:
    """The fixture still holds the cases the module doc promises (a regenerated one might not)."""
    plans = {name: entry["nnunet"] for name, entry in REFERENCE.items()}
    assert any(p["lowres"] and p["3d_fullres"]["batch_dice"] for p in plans.values())
    assert all(("3d_lowres" in p) == p["lowres"] for p in plans.values())
    assert any(1 in p["3d_fullres"]["kernel_sizes"][0] for p in plans.values())
    assert any("2d" not in p for p in plans.values())
    small = plans["Dataset005_Small"]["2d"]
    assert small["batch_size"] < 12  # the cap, not the memory, decided it
