"""From an inspected dataset to a plan, and from a plan to trial-config settings.

The settings a plan fixes, as the trial config names them: the target spacing
(``data.preprocess.resample``), the patch (``sampling.patch_size``), nnU-Net's plain U-Net with
the planned stages, strides and kernels (``model``), the batch (``train.batch_size``) and
nnU-Net v2's batch-Dice choice (``loss.batch_dice``). A 3d_lowres plan is the same network
planned at the coarser spacing nnU-Net's lowres search found; trained alone, its predictions
are resampled back to each case's own grid as every prediction is (nnU-Net's cascade, which
feeds them to a second full-resolution network, is not built). Everything else (loss,
optimizer, schedule, normalisation, augmentation) stays with the base config: nnU-Net's
planner does not choose it either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml

from trainables.config.dotted import apply_overrides
from trainables.config.trial import TrialConfig, load_yaml, parse_trial_config
from trainables.data.augment_config import AugmentConfig, source_shape, spatial_plan
from trainables.data.inspect import InspectReport
from trainables.data.labels import get_scheme
from trainables.data.resample import rounded_spacing
from trainables.errors import InputError
from trainables.planning.configuration import BASE_FEATURES, ConfigurationPlan
from trainables.planning.dataset import DatasetPlan, plan_dataset, planning_order

Configuration = Literal["3d_fullres", "3d_lowres", "2d"]


def plan_inspected(report: InspectReport, gpu_memory_gb: float = 8.0) -> DatasetPlan:
    """Plan from the usable labelled cases of an ``ablate data inspect`` report.

    Raises:
        InputError: no usable labelled case (nnU-Net plans from its training cases).
    """
    rows = [
        (c.spacing, c.shape, c.crop_shape)
        for c in report.cases
        if c.ok and c.has_label and c.spacing and c.shape and c.crop_shape
    ]
    if not rows or report.label_scheme is None:
        raise InputError(
            "no usable labelled case to plan from (nnU-Net plans from the training cases: "
            "images with a label)",
            report.root,
        )
    spacings, shapes, crop_shapes = zip(*rows, strict=True)
    return plan_dataset(
        spacings,
        shapes,
        crop_shapes,
        num_classes=len(get_scheme(report.label_scheme).to_internal),
        gpu_memory_gb=gpu_memory_gb,
    )


def configuration_of(plan: DatasetPlan, configuration: Configuration) -> ConfigurationPlan:
    """The chosen configuration's plan.

    Raises:
        InputError: a 3-D configuration of single-slice images (nnU-Net plans only 2d for
            them); 3d_lowres where nnU-Net makes none.
    """
    if configuration == "2d":
        return plan.slices
    if plan.fullres is None:
        shape = "x".join(f"{n:g}" for n in plan.median_shape)
        raise InputError(
            f"the images are single slices (median shape {shape} voxels): nnU-Net plans no "
            "3-D configuration for them; plan --configuration 2d"
        )
    if configuration == "3d_fullres":
        return plan.fullres
    if plan.lowres is None:
        raise InputError(
            f"nnU-Net makes no 3d_lowres for this dataset: the 3d_fullres patch covers "
            f"{100 * plan.fullres.patch_fraction:.1f}% of the median image (it adds one below "
            "25%, when the coarser image is at least half the size); plan --configuration "
            "3d_fullres"
        )
    return plan.lowres


def plan_overrides(plan: DatasetPlan, configuration: Configuration) -> dict[str, Any]:
    """The plan as dotted trial-config settings (module doc)."""
    chosen = configuration_of(plan, configuration)
    slices = configuration == "2d"
    resample = {"kind": "target_spacing", "spacing": list(_spacing(plan, configuration))}
    if slices:  # nnU-Net's 2d keeps each case's slice spacing
        resample["in_plane_only"] = True
    overrides: dict[str, Any] = {
        "data.preprocess.resample": resample,
        "sampling.patch_size": list(chosen.patch_size),
        "model": {
            "kind": "plain_unet",
            "spatial_dims": 2 if slices else 3,
            "base_filters": BASE_FEATURES,
            "num_stages": chosen.num_stages,
            "max_filters": chosen.max_features,
            "strides": [list(s) for s in chosen.strides],
            "kernel_sizes": [list(k) for k in chosen.kernel_sizes],
        },
        "train.batch_size": chosen.batch_size,
    }
    overrides["loss.batch_dice"] = batch_dice(plan, configuration)
    return overrides


def batch_dice(plan: DatasetPlan, configuration: Configuration) -> bool:
    """nnU-Net v2's choice: 2d always; 3d_fullres exactly when a 3d_lowres exists; 3d_lowres
    never."""
    if configuration == "2d":
        return True
    return plan.fullres_batch_dice if configuration == "3d_fullres" else False


def planned_trial(
    base: str | Path, plan: DatasetPlan, configuration: Configuration
) -> dict[str, Any]:
    """The base trial YAML's settings with the plan merged in, validated by every trial-config
    rule (the patch divides by the strides, a slice model resamples in-plane only...).

    Raises:
        InputError: the base is not a trial config, or the plan does not fit it (naming the
            field).
    """
    overrides = plan_overrides(plan, configuration)
    data = load_yaml(base)
    loss = parse_trial_config(data, base).loss
    if "batch_dice" not in type(loss).model_fields:  # a loss without the choice keeps its own
        overrides.pop("loss.batch_dice")
    merged = apply_overrides(data, overrides)
    parse_trial_config(merged, f"{base} with the plan applied")
    return merged


def plan_summary(plan: DatasetPlan, configuration: Configuration, root: str | Path) -> list[str]:
    """Comment lines that say where the plan came from and what it covers."""
    chosen = configuration_of(plan, configuration)
    lowres = "yes" if plan.lowres else "no"
    coarsest = planning_order(plan.target_spacing)[0]  # the axis nnU-Net's 2d slices along
    slicing = []
    if configuration == "2d" and plan.target_spacing[coarsest] > plan.target_spacing[2]:
        slicing = [
            f"note: axis {'XYZ'[coarsest]} is the coarsest; nnU-Net's 2d would slice along it, "
            "ablate's slice models cut along Z (the plan is for the X-Y plane they see)"
        ]
    return [
        f"nnU-Net {configuration} plan of {root} ({plan.num_cases} labelled cases, "
        f"{plan.gpu_memory_gb:g} GB GPU memory target)",
        f"target spacing {_x(_spacing(plan, configuration), '.2f')} mm; median shape after "
        f"crop and resampling {_x(_median(plan, configuration), '.0f')} voxels",
        f"patch {_x(chosen.patch_size, 'd')} covers {100 * chosen.patch_fraction:.1f}% of the "
        f"median image; {chosen.num_stages} stages; batch {chosen.batch_size}; nnU-Net would "
        f"add 3d_lowres: {lowres}",
        augmentation_line(chosen.patch_size),
        *slicing,
    ]


def augmentation_line(patch: tuple[int, ...]) -> str:
    """What nnU-Net's augmentation rule (the default ``augment``) does with this patch: the
    rotation bound, dummy 2-D, and the region a rotated or scaled sample is cut with."""
    cfg = AugmentConfig()
    degrees, slice_axis = spatial_plan(cfg, tuple(patch))
    dummy = "no" if slice_axis is None else f"yes (in-plane, slices along {'XYZ'[slice_axis]})"
    region = _x(source_shape(cfg, tuple(patch)), "d")
    return (
        f"default augmentation: rotation up to {degrees:g} degrees, dummy 2-D {dummy}; "
        f"a rotated or scaled sample is cut as {region} (the patch with nnU-Net's margin)"
    )


def plan_yaml(lines: list[str], settings: dict[str, Any]) -> str:
    """``settings`` as YAML under ``# `` comment ``lines``."""
    body = yaml.safe_dump(settings, sort_keys=False, default_flow_style=None)
    return "".join(f"# {line}\n" for line in lines) + body


def nested(overrides: dict[str, Any]) -> dict[str, Any]:
    """Dotted settings as nested sections (what a trial YAML or a study's ``base:`` holds), in
    the trial config's section order."""
    sections = apply_overrides({}, overrides) if overrides else {}
    order = list(TrialConfig.model_fields)
    return dict(sorted(sections.items(), key=lambda item: order.index(item[0])))


def plan_dict(plan: DatasetPlan, configuration: Configuration) -> dict[str, Any]:
    """JSON-ready: both configurations, the lowres verdict and the chosen one's settings."""
    return {
        "num_cases": plan.num_cases,
        "gpu_memory_gb": plan.gpu_memory_gb,
        "target_spacing": list(plan.target_spacing),
        "median_shape": list(plan.median_shape),
        "configurations": {
            "3d_fullres": None if plan.fullres is None else _config(plan.fullres),
            "2d": _config(plan.slices),
        },
        "lowres": None if plan.lowres is None else _config(plan.lowres),
        "fullres_batch_dice": plan.fullres_batch_dice,
        "chosen": configuration,
        "settings": plan_overrides(plan, configuration),
    }


def _spacing(plan: DatasetPlan, configuration: Configuration) -> tuple[float, ...]:
    if configuration == "3d_lowres":  # rounded to 1 nm as the 3d_fullres target is
        return rounded_spacing(configuration_of(plan, configuration).spacing)
    return plan.target_spacing


def _median(plan: DatasetPlan, configuration: Configuration) -> tuple[float, ...]:
    if configuration == "3d_lowres":
        return configuration_of(plan, configuration).median_shape
    return plan.median_shape


def _config(chosen: ConfigurationPlan) -> dict[str, Any]:
    return {
        "spacing": list(chosen.spacing),
        "median_shape": list(chosen.median_shape),
        "patch_size": list(chosen.patch_size),
        "strides": [list(s) for s in chosen.strides],
        "kernel_sizes": [list(k) for k in chosen.kernel_sizes],
        "batch_size": chosen.batch_size,
        "num_stages": chosen.num_stages,
        "max_features": chosen.max_features,
        "activations": chosen.activations,
        "patch_fraction": round(chosen.patch_fraction, 4),
    }


def _x(values: Any, fmt: str) -> str:
    return "x".join(format(v, fmt) for v in values)
