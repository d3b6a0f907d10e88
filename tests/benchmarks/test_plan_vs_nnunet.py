"""The planner side by side's own parts: its datasets, its axis mapping and its answers.

The comparison itself needs nnU-Net v2 in a separate environment (benchmarks/plan_vs_nnunet.py
says how); these tests keep the rest of the script from rotting in the meantime.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from trainables.planning.dataset import from_planning_order, plan_dataset, planning_order

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "plan_vs_nnunet.py"


def _script():
    spec = importlib.util.spec_from_file_location("plan_vs_nnunet", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["plan_vs_nnunet"] = module
    spec.loader.exec_module(module)
    return module


def test_nnunets_transposed_axes_map_back_as_the_planner_maps_them() -> None:
    script = _script()
    for target, transpose in (((1.0, 1.0, 1.0), [0, 1, 2]), ((4.0, 0.9, 0.9), [2, 0, 1])):
        values = ("a", "b", "c")
        assert tuple(script.to_ablate(values, transpose)) == from_planning_order(
            planning_order(target), values
        )


def test_nnunet_plans_json_is_read_into_ablates_axis_order() -> None:
    arch = {"strides": [[1, 1, 1], [1, 2, 2]], "kernel_sizes": [[1, 3, 3], [3, 3, 3]]}
    fullres = {"spacing": [5.0, 0.7, 0.6], "patch_size": [24, 160, 128], "batch_size": 2}
    fullres |= {"batch_dice": False, "architecture": {"arch_kwargs": arch}}
    slices = {"spacing": [0.7, 0.6], "patch_size": [256, 224], "batch_size": 12}
    slices |= {"batch_dice": True, "architecture": {"arch_kwargs": {
        "strides": [[1, 1], [2, 2]], "kernel_sizes": [[3, 3], [3, 3]]}}}  # fmt: skip
    plans = {
        "transpose_forward": [0, 1, 2],
        "configurations": {"3d_fullres": fullres, "2d": slices},
    }
    answers = _script().nnunet_answers(plans)
    assert answers["3d_fullres"]["patch_size"] == [128, 160, 24]
    assert answers["3d_fullres"]["strides"] == [[1, 1, 1], [2, 2, 1]]
    assert answers["3d_fullres"]["kernel_sizes"][0] == [3, 3, 1]
    assert answers["2d"]["spacing"] == [0.6, 0.7] and not answers["lowres"]


def test_its_datasets_are_cropped_and_planned_from_what_inspect_reads(tmp_path: Path) -> None:
    script = _script()
    spec = (3, ((40, 44), (36, 40), (10, 12)), None, script.BINARY, script.CT, script.WIDE)
    script.write_dataset(tmp_path / "Dataset009_T", spec, np.random.default_rng(0))
    ours, inputs = script.ablate_answers(tmp_path / "Dataset009_T")
    assert inputs["num_classes"] == 2 and len(inputs["spacings"]) == 3
    # the body fills part of the field of view: the crop is what the planner sees
    assert all(
        c <= h and np.prod(c) < np.prod(h)
        for c, h in zip(inputs["crop_shapes"], inputs["header_shapes"], strict=True)
    )
    plan = plan_dataset(inputs["spacings"], inputs["header_shapes"], inputs["crop_shapes"], 2)
    assert ours["3d_fullres"]["patch_size"] == list(plan.fullres.patch_size)
    assert ours["lowres"] is (plan.lowres is not None)
