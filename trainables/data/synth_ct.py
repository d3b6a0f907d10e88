"""Synthetic head CT with intracranial haemorrhage, for the CT seed papers' trials.

The anatomy (scalp, skull, CSF, grey/white matter, lesion shapes) is the MRI generator's; only
the rendering differs. Intensities are Hounsfield units: air -1000, bone ~1000, brain 25-40,
CSF ~8, and the lesion of an MRI case becomes a haemorrhage: the tumour core (BraTS labels 1
and 4) is hyperdense clot (60-90 HU) and the surrounding oedema a hypodense rim (~15 HU). The
label is binary (1 = haemorrhage), so the haemorrhage paper's CT window (centre 96, width 59)
shows mostly the clot, as it does on real scans.

Files follow the Medical Segmentation Decathlon layout with a ``dataset.json`` that says CT:
``imagesTr/<case>.nii.gz`` (int16 HU) and ``labelsTr/<case>.nii.gz`` (uint8 0/1).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from trainables.data.synth_anatomy import head_and_lesion
from trainables.data.synth_files import (
    GENERATOR,
    case_stream,
    check_params,
    check_shape,
    claim_out_dir,
    is_lesion_free,
    write_marker,
)

# Hounsfield units per tissue class, in synth_anatomy.CLASSES order:
#                   bg     scalp  skull  csf  gm    wm    ed    ncr   et
_HU = np.array([-1000.0, 40.0, 1000.0, 8.0, 38.0, 28.0, 15.0, 68.0, 82.0], dtype=np.float32)
_NOISE_HU = 4.0
HAEMORRHAGE_CODES = (1, 4)  # BraTS codes of the MRI lesion core that become clot


def synthesize_ct_case(
    case_id: str, shape: tuple[int, int, int], rng: np.random.Generator, lesion: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """One CT case: ((X, Y, Z) float32 integer HU, (X, Y, Z) uint8 haemorrhage mask)."""
    shape = check_shape(shape, f"synth CT case {case_id}: shape")
    frac, seg = head_and_lesion(shape, rng, lesion=lesion)
    hu = np.tensordot(_HU * rng.uniform(0.97, 1.03, _HU.shape).astype(np.float32), frac, axes=1)
    hu += _NOISE_HU * rng.standard_normal(shape, dtype=np.float32)
    return np.rint(np.clip(hu, -1024, 3071)).astype(np.float32), np.isin(
        seg, HAEMORRHAGE_CODES
    ).astype(np.uint8)


def synthesize_ct_dataset(
    out_dir: str | Path,
    cases: int,
    seed: int = 0,
    shape: tuple[int, int, int] = (64, 64, 48),
    lesion_free_fraction: float = 0.15,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    progress: Callable[[int, int, str], None] | None = None,
) -> list[Path]:
    """Write ``cases`` synthetic CT cases in the MSD layout; returns the image paths.

    Deterministic per seed, like :func:`trainables.data.synth.synthesize_dataset`, and guarded
    by the same ``synth.json`` marker (a non-empty directory without it is refused).
    """
    shape = check_shape(shape, "shape")
    spacing = check_params(cases, seed, lesion_free_fraction, spacing)
    out = Path(out_dir)
    meta = {"generator": GENERATOR, "version": 1, "modality": "ct", "seed": int(seed)}
    meta |= {"shape": list(shape), "cases": int(cases), "spacing": list(spacing), "case_ids": []}
    claim_out_dir(out)
    for sub in ("imagesTr", "labelsTr"):  # an older CT output: its cases are replaced whole
        shutil.rmtree(out / sub, ignore_errors=True)
    write_marker(out, {**meta, "complete": False})
    _write_dataset_json(out)
    phase = case_stream(seed, 1).random()
    affine = np.diag([*spacing, 1.0])
    paths = []
    for i in range(cases):
        case_id = f"SynthCT_{i:04d}"
        free = is_lesion_free(i, lesion_free_fraction, phase)
        image, label = synthesize_ct_case(case_id, shape, case_stream(seed, 2, i), lesion=not free)
        paths.append(_save(out / "imagesTr" / f"{case_id}.nii.gz", image.astype(np.int16), affine))
        _save(out / "labelsTr" / f"{case_id}.nii.gz", label, affine)
        if progress is not None:
            progress(i + 1, cases, case_id)
    write_marker(out, {**meta, "complete": True})
    return paths


def _write_dataset_json(out: Path) -> None:
    meta = {
        "name": "SynthCT",
        "description": "synthetic head CT with intracranial haemorrhage (ablate)",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "haemorrhage"},
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")


def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)
    return path
