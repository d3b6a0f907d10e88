"""What the synthetic MRI and CT generators share on disk: argument checks, one random stream
per case, the choice of lesion-free cases, and the ``synth.json`` marker that guards the output
directory (a non-empty directory without it is never overwritten)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data.synth_anatomy import Shape
from trainables.errors import InputError

MARKER = "synth.json"
GENERATOR = "ablate.trainables.data.synth"
MIN_DIM = 16
_CASE_ID = re.compile(r"Synth_\d{4,}")


def case_stream(seed: int, *key: int) -> np.random.Generator:
    """An independent generator per ``key``: (1,) is the tumour-free phase, (0, i) is case i,
    so case i never depends on how many cases are generated."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


def check_shape(shape: Sequence[int], where: str) -> Shape:
    """Three integer dimensions, each >= MIN_DIM (smaller heads have no room for shells)."""
    dims = tuple(shape)
    if len(dims) != 3 or not all(isinstance(d, int | np.integer) for d in dims):
        raise InputError(f"must be three integers (X, Y, Z), got {shape!r}", where=where)
    if min(dims) < MIN_DIM:
        raise InputError(f"every dimension must be >= {MIN_DIM} voxels, got {dims}", where=where)
    return int(dims[0]), int(dims[1]), int(dims[2])


def check_params(
    cases: int, seed: int, tumour_free_fraction: float, spacing: Sequence[float]
) -> tuple[float, float, float]:
    """Validate the scalar arguments of :func:`synthesize_dataset`; returns the spacing."""
    if not isinstance(cases, int | np.integer) or cases < 1:
        raise InputError(f"must be an integer >= 1, got {cases!r}", where="cases")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"must be an integer >= 0, got {seed!r}", where="seed")
    fraction = tumour_free_fraction
    if not isinstance(fraction, int | float | np.floating) or not 0.0 <= fraction <= 1.0:
        raise InputError(f"must be in [0, 1], got {fraction!r}", where="tumour_free_fraction")
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(np.isfinite(s) and s > 0 for s in values):
        raise InputError(f"must be three positive sizes in mm, got {spacing!r}", where="spacing")
    return values[0], values[1], values[2]


def is_lesion_free(i: int, fraction: float, phase: float) -> bool:
    """Low-discrepancy pick: every prefix of cases has round(fraction * n) ± 1 tumour-free ones,
    and which cases they are shifts with the seed (through ``phase`` in [0, 1))."""
    return int(np.floor((i + 1) * fraction + phase)) > int(np.floor(i * fraction + phase))


def claim_out_dir(out: Path) -> None:
    """Refuse a non-empty directory that is not a synth output; clear an old synth output."""
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a directory", where=out)
    if out.is_dir() and any(out.iterdir()):
        marker = out / MARKER
        if not marker.is_file():
            raise InputError(
                f"directory is not empty and has no {MARKER} marker, so it is not a synthetic "
                "dataset; refusing to overwrite it (choose a new or empty directory)",
                where=out,
            )
        for case_id in _read_marker(marker).get("case_ids", []):
            # Only names this module writes, so a tampered marker cannot delete other paths.
            if isinstance(case_id, str) and _CASE_ID.fullmatch(case_id):
                shutil.rmtree(out / case_id, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _read_marker(marker: Path) -> dict[str, Any]:
    """The parsed marker; InputError if it is not one this module wrote."""
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"unreadable synth marker ({err}); refusing to overwrite", marker) from err
    if not isinstance(meta, dict) or meta.get("generator") != GENERATOR:
        raise InputError("not a synth marker written by ablate; refusing to overwrite", marker)
    return meta


def write_marker(out: Path, meta: dict[str, Any]) -> None:
    (out / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
