"""``--smoke``: shrink any trial so it runs end to end on a CPU in about a minute.

Only sizes change (patch, widths, epochs, cases, a centre-crop validation region); every kind,
loss, optimizer, schedule and precision stays as configured, so a smoke run exercises the code
paths of the real trial.
"""

from __future__ import annotations

import math
from typing import Any

from trainables.config.dotted import apply_overrides
from trainables.config.trial import TrialConfig, parse_trial_config

SMOKE_EDGE = 32  # patch edge (voxels) before rounding up to the network's stride
SMOKE_EPOCHS = 2
SMOKE_ITERATIONS = 3
SMOKE_CASES = 6
SMOKE_SHAPE = (48, 48, 40)


def smoke_config(cfg: TrialConfig) -> TrialConfig:
    """A tiny copy of ``cfg``: small patch and widths, 2 epochs of 3 steps, 6 synthetic cases."""
    data = cfg.model_dump(mode="json")
    data["model"] = _shrink_widths(data["model"])
    return parse_trial_config(apply_overrides(data, _smoke_overrides(cfg)), source="--smoke")


def _smoke_overrides(cfg: TrialConfig) -> dict[str, Any]:
    """Dotted path -> shrunk value; warm-up and freezing shrink with the run they belong to."""
    patch = list(_smoke_patch(cfg))
    epochs = min(cfg.train.epochs, SMOKE_EPOCHS)
    overrides: dict[str, Any] = {
        "name": f"{cfg.name}-smoke",
        "sampling.patch_size": patch,
        # Validate on a centre crop of one patch: whole real volumes take minutes on a CPU.
        "sampling.validation": "center_crop",
        "sampling.val_crop_size": patch,
        "train.epochs": epochs,
        "schedule.warmup_epochs": min(cfg.schedule.warmup_epochs, epochs - 1),
        "train.iterations_per_epoch": SMOKE_ITERATIONS,
        "train.batch_size": min(cfg.train.batch_size, 2),
        "train.num_workers": 0,
        "train.compile": False,
        "train.init": None,
        "validation.max_cases": 2,
        # The held-out test pass predicts whole volumes (48x48x40 here: cheap); with --data a
        # real test split can be hundreds of volumes, so a smoke run tests 2 of them.
        "validation.test_max_cases": 2,
        "data.synthetic.cases": SMOKE_CASES,
        "data.synthetic.shape": list(SMOKE_SHAPE),
    }
    if cfg.train.freeze is not None:
        overrides["train.freeze.iterations"] = min(cfg.train.freeze.iterations, 2)
    return overrides


def _smoke_patch(cfg: TrialConfig) -> tuple[int, ...]:
    """Per axis: the smallest multiple of the network's stride >= 32 that leaves the bottleneck
    2 voxels wide (instance norm needs more than one); 8 slices along an unstrided axis."""
    out = []
    for d in cfg.model.divisor():
        out.append(8 if d == 1 else d * max(2, math.ceil(SMOKE_EDGE / d)))
    return tuple(out)


def _shrink_widths(node: Any) -> Any:
    """Divide every filter list by 8 (min 2), cap base/max widths and SwinUNETR's feature size
    (to 12, its smallest) and attention window (to 4 tokens), at any depth.

    Group-norm group counts shrink with the widths so they still divide every filter count.
    """
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "filters" and isinstance(value, list):
            out[key] = [max(2, int(v) // 8) for v in value]
        elif key == "base_filters" and isinstance(value, int):
            out[key] = min(value, 4)
        elif key == "max_filters" and isinstance(value, int):
            out[key] = min(value, 32)
        elif key == "feature_size" and isinstance(value, int):  # SwinUNETR: a multiple of 12
            out[key] = 12
        elif key == "window_size" and isinstance(value, int):  # SwinUNETR: attention is ~window^6
            out[key] = min(value, 4)
        else:
            out[key] = _shrink_widths(value)
    if "group_norm_groups" in out and "filters" in out:
        out["group_norm_groups"] = math.gcd(out["group_norm_groups"], *out["filters"])
    return out
