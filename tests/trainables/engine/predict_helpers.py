"""Checkpoints and image-only datasets for the ``ablate predict`` tests.

Usage::

    ckpt = random_checkpoint(tmp_path / "best.pt")                 # tiny smoke model, BraTS
    ckpt = random_checkpoint(tmp_path / "ct.pt", modalities=["ct"])  # single-channel, binary
    write_image_case(root, "c1", layout="brats2023", affine=ROTATED)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import yaml

from trainables.config.dotted import apply_overrides
from trainables.config.trial import parse_trial_config
from trainables.engine.bench import configured_scheme
from trainables.engine.checkpoint import make_checkpoint, save_checkpoint
from trainables.engine.smoke import smoke_config
from trainables.losses import output_channels
from trainables.models import build_model

TINY = Path(__file__).resolve().parents[3] / "search_spaces" / "base" / "tiny.yaml"

# A voxel grid that is neither axis-aligned nor 1 mm: its affine must survive prediction.
ROTATED = np.array(
    [[0.0, -1.2, 0.0, 90.0], [1.1, 0.0, 0.0, -120.0], [0.0, 0.0, 1.5, -60.0], [0, 0, 0, 1]]
)


def random_checkpoint(path: Path, seed: int = 0, **overrides: Any) -> dict[str, Any]:
    """The smoke-shrunk tiny trial with seeded random weights, saved at ``path``.

    ``overrides`` are dotted trial paths with ``__`` for dots (``data__modalities=["ct"]``).
    """
    data = yaml.safe_load(TINY.read_text())
    dotted = {key.replace("__", "."): value for key, value in overrides.items()}
    cfg = smoke_config(parse_trial_config(apply_overrides(data, dotted), TINY))
    torch.manual_seed(seed)
    outputs = output_channels(cfg.loss, configured_scheme(cfg))
    model = build_model(cfg.model, len(cfg.data.modalities), outputs)
    checkpoint = make_checkpoint(cfg.model_dump(mode="json"), model.state_dict(), 1, 1)
    save_checkpoint(checkpoint, path)
    return checkpoint


def write_image_case(
    root: Path,
    case_id: str,
    layout: str = "brats2021",
    shape: tuple[int, int, int] = (30, 26, 22),
    affine: np.ndarray = ROTATED,
    skip: tuple[str, ...] = (),
    seed: int = 0,
) -> dict[str, Path]:
    """Image-only BraTS case: a random 'brain' box inside a zero border (so the crop matters),
    int16 files with qform and sform code 1 (scanner)."""
    sep, tags = (
        ("_", ("t1", "t1ce", "t2", "flair"))
        if layout == "brats2021"
        else (
            "-",
            ("t1n", "t1c", "t2w", "t2f"),
        )
    )
    rng = np.random.default_rng(seed)
    files = {}
    for mod, tag in zip(("t1", "t1ce", "t2", "flair"), tags, strict=True):
        if mod in skip:
            continue
        data = np.zeros(shape, dtype=np.int16)
        data[3:-5, 4:-2, 2:-3] = rng.integers(1, 500, size=data[3:-5, 4:-2, 2:-3].shape)
        img = nib.Nifti1Image(data, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        path = root / case_id / f"{case_id}{sep}{tag}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(img, path)
        files[mod] = path
    return files
