"""``ablate data plan`` side by side with nnU-Net v2's own planner, on the same NIfTI files.

Writes five small nnU-Net-v2-layout datasets chosen to reach every branch of the planner (thick
CT slices, isotropic 4-channel MRI, volumes large enough for a 3d_lowres, a coarse X axis that
moves nnU-Net's transpose, and a tiny dataset where the 5% batch cap decides), runs
``nnUNetv2_extract_fingerprint`` + ``nnUNetv2_plan_experiment`` on them in a Python that has
``nnunetv2`` (a separate virtual environment: its requirements pull a CUDA build of torch), and
compares every planned value with ablate's, axes mapped to ablate's (X, Y, Z). ``--fixture``
writes the inputs and nnU-Net's answers for tests/trainables/planning/test_nnunet_plans.py.

    python -m venv --system-site-packages /tmp/nnvenv
    /tmp/nnvenv/bin/pip install --no-deps nnunetv2 batchgenerators batchgeneratorsv2 acvl_utils
    /tmp/nnvenv/bin/pip install SimpleITK scikit-image yacs pandas scikit-learn tqdm \\
        dicom2nifti graphviz imagecodecs tifffile blosc2 connected-components-3d
    python benchmarks/plan_vs_nnunet.py --nnunet-python /tmp/nnvenv/bin/python --work /tmp/pc
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.data.inspect import inspect_dataset
from trainables.data.labels import get_scheme
from trainables.planning.render import batch_dice, plan_inspected

BRATS = {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
BINARY = {"background": 0, "lesion": 1}
# name: (cases, (lo, hi) voxels per axis, spacing per axis or None for thick-slice CT, labels,
#        channels, body radius range as a fraction of the field of view)
CT, MR = ["CT"], ["T1"]
BRATS_MR = ["t1", "t1ce", "t2", "flair"]
WIDE, FULL = (0.5, 0.95), (0.93, 1.0)
DATASETS: dict[str, tuple] = {
    "Dataset001_ThickCT": (12, ((160, 200), (160, 200), (20, 40)), None, BINARY, CT, WIDE),
    "Dataset002_IsoMR": (8, ((120, 160), (130, 170), (100, 130)), (1, 1, 1), BRATS, BRATS_MR, WIDE),
    "Dataset003_BigCT": (
        5,
        ((330, 360), (330, 360), (280, 300)),
        (0.6, 0.6, 0.8),
        BINARY,
        CT,
        FULL,
    ),
    "Dataset004_CoarseX": (
        6,
        ((30, 40), (150, 180), (140, 170)),
        (4.0, 0.9, 0.9),
        BINARY,
        MR,
        WIDE,
    ),
    "Dataset005_Small": (4, ((40, 56), (40, 56), (30, 40)), (1.0, 1.0, 1.5), BINARY, MR, WIDE),
}

NNUNET = """
import os, sys
for key, value in zip(("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"), sys.argv[1:4]):
    os.environ[key] = value
from nnunetv2.experiment_planning import plan_and_preprocess_api as api
if __name__ == "__main__":
    ids = [int(i) for i in sys.argv[4].split(",")]
    api.extract_fingerprints(ids, num_processes=2, check_dataset_integrity=False, clean=True)
    api.plan_experiments(ids)
"""


def write_dataset(root: Path, spec: tuple, rng: np.random.Generator) -> None:
    """One nnU-Net v2 raw dataset: ``imagesTr/<case>_000c.nii.gz``, ``labelsTr``, dataset.json.

    Each case is an ellipsoid body (zeros around it, so the crop to non-zero matters) holding
    an ellipsoid lesion with the dataset's label values."""
    count, extents, spacing, labels, channels, radii = spec
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    for i in range(count):
        shape = tuple(int(rng.integers(lo, hi)) for lo, hi in extents)
        mm = spacing or (0.7 + 0.1 * rng.random(), 0.7 + 0.1 * rng.random(), rng.choice([2.5, 5]))
        affine = np.diag([*map(float, mm), 1.0])
        grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
        radius = rng.uniform(*radii, 3)
        body = sum((g / r) ** 2 for g, r in zip(grid, radius, strict=True)) <= 1
        for c in range(len(channels)):
            image = np.where(body, rng.normal(100 + 10 * c, 20, shape), 0).astype(np.float32)
            nib.save(
                nib.Nifti1Image(image, affine), root / "imagesTr" / f"case_{i:03d}_{c:04d}.nii.gz"
            )
        lesion = sum((g / (r / 3)) ** 2 for g, r in zip(grid, radius, strict=True)) <= 1
        label = np.zeros(shape, np.uint8)
        codes = sorted(v for v in labels.values() if v)
        label[lesion] = codes[0]
        label[lesion & (grid[0] > 0)] = codes[min(1, len(codes) - 1)]
        label[lesion & (grid[0] > 0) & (grid[1] > 0)] = codes[-1]
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case_{i:03d}.nii.gz")
    meta = {
        "channel_names": {str(c): name for c, name in enumerate(channels)},
        "labels": labels,
        "numTraining": count,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))


def to_ablate(values: Any, transpose: list[int]) -> list:
    """nnU-Net's transposed (Z, Y, X) order back to ablate's (X, Y, Z)."""
    zyx: list = [None] * 3
    for k, axis in enumerate(transpose):
        zyx[axis] = values[k]
    return zyx[::-1]


def nnunet_answers(plans: dict[str, Any]) -> dict[str, Any]:
    """nnU-Net's configurations in ablate's axis order (2d: its two axes reversed)."""
    out: dict[str, Any] = {"lowres": "3d_lowres" in plans["configurations"]}
    for name in ("3d_fullres", "3d_lowres", "2d"):
        if name not in plans["configurations"]:
            continue
        conf = plans["configurations"][name]
        arch = conf["architecture"]["arch_kwargs"]
        axes = (lambda v: to_ablate(v, plans["transpose_forward"])) if name != "2d" else (
            lambda v: list(v)[::-1]
        )  # fmt: skip
        out[name] = {
            "spacing": [round(float(s), 6) for s in axes(conf["spacing"])],
            "patch_size": [int(n) for n in axes(conf["patch_size"])],
            "strides": [[int(s) for s in axes(st)] for st in arch["strides"]],
            "kernel_sizes": [[int(k) for k in axes(ks)] for ks in arch["kernel_sizes"]],
            "batch_size": int(conf["batch_size"]),
            "batch_dice": bool(conf["batch_dice"]),
        }
    return out


def ablate_answers(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """ablate's plan of ``root`` in the same form, and the inputs it planned from."""
    report = inspect_dataset(root)
    plan = plan_inspected(report)
    out: dict[str, Any] = {"lowres": plan.lowres is not None}
    configurations = (("3d_fullres", plan.fullres), ("3d_lowres", plan.lowres), ("2d", plan.slices))
    for name, conf in configurations:
        if conf is None:
            continue
        out[name] = {
            "spacing": [round(float(s), 6) for s in conf.spacing],
            "patch_size": list(conf.patch_size),
            "strides": [list(s) for s in conf.strides],
            "kernel_sizes": [list(k) for k in conf.kernel_sizes],
            "batch_size": conf.batch_size,
            "batch_dice": batch_dice(plan, name),
        }
    cases = [c for c in report.cases if c.ok]
    inputs = {
        "spacings": [list(c.spacing or ()) for c in cases],
        "header_shapes": [list(c.shape or ()) for c in cases],
        "crop_shapes": [list(c.crop_shape or ()) for c in cases],
        "num_classes": len(get_scheme(report.label_scheme or "binary").to_internal),
    }
    return out, inputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--work", type=Path, required=True, help="folder for raw/ and preprocessed/"
    )
    parser.add_argument("--nnunet-python", default=sys.executable, help="a Python with nnunetv2")
    parser.add_argument("--fixture", type=Path, help="write inputs and nnU-Net's plans here")
    args = parser.parse_args()
    raw, pre, res = (args.work / d for d in ("raw", "preprocessed", "results"))
    for folder in (raw, pre, res):
        folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name, spec in DATASETS.items():
        if not (raw / name / "dataset.json").exists():
            write_dataset(raw / name, spec, rng)
    ids = ",".join(str(int(name[7:10])) for name in DATASETS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [args.nnunet_python, "-c", NNUNET, str(raw), str(pre), str(res), ids], check=True, env=env
    )
    fixture, differences = {}, 0
    for name in DATASETS:
        plans = json.loads((pre / name / "nnUNetPlans.json").read_text())
        theirs = nnunet_answers(plans)
        ours, inputs = ablate_answers(raw / name)
        # nnU-Net slices along its coarsest axis, ablate along Z: compare 2d only where they agree
        slices_comparable = plans["transpose_forward"][0] == 0
        for conf in ("3d_fullres", "3d_lowres", "2d"):
            if conf not in ours and conf not in theirs:
                continue
            same = ours.get(conf) == theirs.get(conf)
            if conf == "2d" and not slices_comparable:
                print(f"{name} {conf}: not comparable (nnU-Net slices along another axis)")
                continue
            differences += not same
            mine = ours.get(conf) or {"patch_size": None, "batch_size": None, "strides": ()}
            verdict = "agree" if same else "DIFFER"
            print(
                f"{name} {conf}: {verdict}; patch {mine['patch_size']} batch {mine['batch_size']} "
                f"stages {len(mine['strides'])}"
            )
            if not same:
                print(f"  ablate  {ours.get(conf)}\n  nnU-Net {theirs.get(conf)}")
        differences += ours["lowres"] != theirs["lowres"]
        print(f"{name} 3d_lowres: ablate {ours['lowres']}, nnU-Net {theirs['lowres']}")
        if not slices_comparable:
            theirs.pop("2d")
        fixture[name] = {"inputs": inputs, "nnunet": theirs}
    if args.fixture:
        args.fixture.write_text(json.dumps(fixture, indent=1) + "\n")
        print(f"wrote {args.fixture}")
    print(f"{differences} differences")
    return 1 if differences else 0


if __name__ == "__main__":
    raise SystemExit(main())
