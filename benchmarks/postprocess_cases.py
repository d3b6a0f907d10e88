"""Random (prediction, reference) datasets for the largest-component post-processing rule.

``benchmarks/postprocess_vs_nnunet.py`` decides each dataset with ablate's ``decide_postprocess``
and with nnU-Net v2's ``determine_postprocessing``. A dataset is 6-10 cases of internal label
maps about 32^3 voxels (28-36 per axis, never cubic, so an axis mix-up would show): BraTS codes
(necrosis 1, oedema 2, enhancing 3) or binary (lesion 1). Each dataset draws its own mix
(:class:`Profile`) of what the largest-component rule reacts to, so that every outcome
(foreground step yes/no, each region's step yes/no) occurs many times:

* spurious far-away specks in the prediction (necrosis, oedema, enhancing or mixed): the
  foreground step helps the regions they fall in;
* a genuine second lesion in the reference, found (more or less) by the prediction: the
  foreground step removes it and hurts;
* isolated voxels of other labels salted inside the predicted tumour (enhancing or necrotic
  specks in the oedema): disconnected ``tc``/``et`` components that only the per-region steps
  remove (the foreground step cannot: they touch the tumour);
* specks of oedema or necrosis together with a found second lesion that carries enhancing
  tumour: the foreground step can raise the mean Dice over regions while lowering ``et``, where
  nnU-Net's defensive rule says no;
* boundary jitter of every lesion, so no outcome is trivially decided.

Binary datasets mix lumpy lesions, found second lesions, specks in a shell around the predicted
lesion (some touching it) and far-away specks. Every reference holds every region (its main
lesion always has necrosis, oedema and an enhancing rim; binary: a lesion), so no region's Dice
is ever taken over two empty masks, where ablate scores 1 and nnU-Net leaves the case out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from trainables.data.labels import INTERNAL_BRATS

FULL = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity, as both sides use
NECROSIS, OEDEMA, ENHANCING = 1, 2, 3
SECOND_KINDS = ("full", "oedema", "et", "ncr", "et_only")
Case = tuple[np.ndarray, np.ndarray]  # (prediction, reference), uint8 internal codes


def ellipsoid(shape: Sequence[int], center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """The bool mask of voxels inside the axis-aligned ellipsoid."""
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii, strict=True)) <= 1.0


def place(
    rng: np.random.Generator,
    shape: Sequence[int],
    radii: Sequence[float],
    occupied: np.ndarray,
    gap: int = 2,
) -> np.ndarray | None:
    """An ellipsoid of ``radii`` at a random spot whose ``gap``-voxel neighbourhood misses
    ``occupied`` (not 26-adjacent to anything there), or None."""
    # the mask's neighbourhood misses occupied <=> the mask misses occupied's neighbourhood
    # (the structure is symmetric): one dilation a call, not one a try
    near = ndimage.binary_dilation(occupied, FULL, gap)
    for _ in range(100):
        center = [rng.uniform(r, s - 1 - r) for r, s in zip(radii, shape, strict=True)]
        mask = ellipsoid(shape, center, radii)
        if mask.any() and not (mask & near).any():
            return mask
    return None


def brats_lesion(
    shape: Sequence[int],
    center: Sequence[float],
    radii: Sequence[float],
    core: float,
    inner: float,
    kind: str,
) -> np.ndarray:
    """A tumour: oedema ellipsoid, a core inside (necrosis) with an enhancing rim; ``kind``
    ``full``, ``oedema`` (no core), ``et`` (oedema + enhancing core), ``ncr`` (oedema +
    necrotic core) or ``et_only``."""
    out = np.zeros(shape, np.uint8)
    radii = np.asarray(radii, float)
    wt = ellipsoid(shape, center, radii)
    tc = ellipsoid(shape, center, np.maximum(radii * core, 0.6))
    inside = ellipsoid(shape, center, np.maximum(radii * core * inner, 0.5))
    if kind == "et_only":
        out[wt] = ENHANCING
        return out
    out[wt] = OEDEMA
    if kind == "full":
        out[tc] = ENHANCING
        out[inside] = NECROSIS
    elif kind == "et":
        out[tc] = ENHANCING
    elif kind == "ncr":
        out[tc] = NECROSIS
    return out


@dataclass
class Profile:
    """What one dataset's cases tend to have (drawn per dataset)."""

    cases: int
    p_second: float  # reference has a genuine second lesion
    p_found: float  # the prediction finds it
    specks: float  # mean number of far-away false-positive specks per case
    speck_labels: np.ndarray  # probabilities of necrosis, oedema, enhancing, mixed
    salt: float  # share of predicted tumour voxels relabelled at random
    salt_labels: np.ndarray  # probabilities of necrosis, oedema, enhancing for salt
    second_kinds: np.ndarray  # probabilities of the second lesion's kinds


def draw_profile(rng: np.random.Generator) -> Profile:
    """One dataset's mix; a quarter of them tuned towards nnU-Net's defensive refusal."""
    if rng.random() < 0.25:  # oedema/necrosis specks (wt and tc gain from the foreground
        # step) and found second lesions with enhancing tumour (et loses)
        return Profile(
            cases=int(rng.integers(6, 11)),
            p_second=float(rng.uniform(0.3, 0.8)),
            p_found=float(rng.uniform(0.7, 1.0)),
            specks=float(rng.uniform(0.5, 3.0)),
            speck_labels=rng.dirichlet([1.0, 2.0, 0.2, 0.2]),
            salt=float(rng.uniform(0.0, 0.02)) * float(rng.random() < 0.5),
            salt_labels=rng.dirichlet(np.full(3, 0.7)),
            second_kinds=rng.dirichlet([1.0, 0.2, 1.0, 0.2, 1.0]),
        )
    return Profile(
        cases=int(rng.integers(6, 11)),
        p_second=float(rng.uniform(0.0, 0.7)),
        p_found=float(rng.uniform(0.3, 1.0)),
        specks=float(rng.uniform(0.0, 2.5)) * float(rng.random() < 0.8),
        speck_labels=rng.dirichlet(np.full(4, 0.7)),
        salt=float(rng.uniform(0.0, 0.04)) * float(rng.random() < 0.7),
        salt_labels=rng.dirichlet(np.full(3, 0.7)),
        second_kinds=rng.dirichlet(np.full(len(SECOND_KINDS), 0.7)),
    )


def jitter(
    rng: np.random.Generator, center: Sequence[float], radii: Sequence[float], spread: float = 0.15
) -> tuple[np.ndarray, np.ndarray]:
    """``center`` moved by up to a voxel per axis, ``radii`` scaled by 1 +- ``spread``."""
    c = np.asarray(center, float) + rng.integers(-1, 2, size=3)
    return c, np.asarray(radii, float) * rng.uniform(1 - spread, 1 + spread, size=3)


def _shape(rng: np.random.Generator) -> tuple[int, ...]:
    """28-36 voxels per axis, all three different."""
    shape = tuple(int(s) for s in rng.integers(28, 37, size=3))
    while len(set(shape)) < 3:
        shape = tuple(int(s) for s in rng.integers(28, 37, size=3))
    return shape


def brats_case(rng: np.random.Generator, p: Profile) -> Case:
    """(prediction, reference), uint8 internal BraTS codes."""
    shape = _shape(rng)
    center = np.array(shape) / 2 + rng.uniform(-2, 2, size=3)
    radii = rng.uniform(5.5, 8.5, size=3)
    core, inner = rng.uniform(0.5, 0.7), rng.uniform(0.45, 0.65)
    ref = brats_lesion(shape, center, radii, core, inner, "full")
    c, r = jitter(rng, center, radii)
    pred = brats_lesion(
        shape, c, r, core * rng.uniform(0.9, 1.1), inner * rng.uniform(0.85, 1.15), "full"
    )
    if rng.random() < p.p_second:  # genuine second lesion
        r2 = rng.uniform(1.8, 3.8, size=3)
        mask = place(rng, shape, r2, (ref > 0) | (pred > 0), gap=3)
        if mask is not None:
            kind = SECOND_KINDS[rng.choice(len(SECOND_KINDS), p=p.second_kinds)]
            c2 = np.argwhere(mask).mean(axis=0)
            ref = np.where(mask, brats_lesion(shape, c2, r2, 0.6, 0.5, kind), ref)
            if rng.random() < p.p_found:
                c3, r3 = jitter(rng, c2, r2, 0.25)
                found = brats_lesion(shape, c3, r3, rng.uniform(0.45, 0.75), 0.5, kind)
                # only inside its neighbourhood: never touching the main lesion
                near = ndimage.binary_dilation(mask, FULL, 1)
                pred = np.where(near & (found > 0), found, pred)
    if p.salt > 0:  # isolated relabelled voxels inside the predicted tumour
        tumour = pred > 0
        flip = tumour & (rng.random(shape) < p.salt)
        labels = rng.choice([NECROSIS, OEDEMA, ENHANCING], size=shape, p=p.salt_labels)
        pred = np.where(flip, labels, pred).astype(np.uint8)
    for _ in range(rng.poisson(p.specks)):  # far-away false positives
        rs = rng.uniform(0.7, 2.6, size=3)
        mask = place(rng, shape, rs, (ref > 0) | (pred > 0), gap=2)
        if mask is None:
            continue
        which = rng.choice(4, p=p.speck_labels)
        if which < 3:
            pred[mask] = (NECROSIS, OEDEMA, ENHANCING)[which]
        else:
            cs = np.argwhere(mask).mean(axis=0)
            pred[mask] = OEDEMA
            pred[mask & ellipsoid(shape, cs, np.maximum(rs * 0.6, 0.5))] = ENHANCING
    for codes in INTERNAL_BRATS.regions.values():  # the Dice-convention guard (see above)
        assert np.isin(ref, codes).any()
    return pred.astype(np.uint8), ref.astype(np.uint8)


def blob(
    rng: np.random.Generator, shape: Sequence[int], center: np.ndarray, radii: np.ndarray
) -> np.ndarray:
    """A lumpy lesion: the union of an ellipsoid and 0-2 overlapping smaller ones."""
    mask = ellipsoid(shape, center, radii)
    for _ in range(rng.integers(0, 3)):
        offset = rng.uniform(-0.6, 0.6, size=3) * radii
        mask |= ellipsoid(shape, center + offset, radii * rng.uniform(0.4, 0.7, size=3))
    return mask


def binary_case(rng: np.random.Generator, p: Profile) -> Case:
    """(prediction, reference), uint8 internal binary codes."""
    shape = _shape(rng)
    center = np.array(shape) / 2 + rng.uniform(-2, 2, size=3)
    radii = rng.uniform(4.0, 8.0, size=3)
    ref = blob(rng, shape, center, radii)
    pred = blob(rng, shape, *jitter(rng, center, radii))
    if rng.random() < p.p_second:
        r2 = rng.uniform(1.5, 4.0, size=3)
        mask = place(rng, shape, r2, ref | pred, gap=3)
        if mask is not None:
            ref |= mask
            if rng.random() < p.p_found:
                c3, r3 = jitter(rng, np.argwhere(mask).mean(axis=0), r2, 0.3)
                pred |= ellipsoid(shape, c3, r3) & ndimage.binary_dilation(mask, FULL, 1)
    if p.salt > 0:  # specks in a shell around the prediction, some touching it
        shell = ndimage.binary_dilation(pred, FULL, 3) & ~pred
        pred |= shell & (rng.random(shape) < p.salt)
    for _ in range(rng.poisson(p.specks)):
        mask = place(rng, shape, rng.uniform(0.7, 2.6, size=3), ref | pred, gap=2)
        if mask is not None:
            pred |= mask
    assert ref.any()
    return pred.astype(np.uint8), ref.astype(np.uint8)


def draw_dataset(rng: np.random.Generator, kind: str) -> list[Case]:
    """One dataset of ``kind`` (``brats`` or ``binary``): a profile, then its cases."""
    make = brats_case if kind == "brats" else binary_case
    profile = draw_profile(rng)
    return [make(rng, profile) for _ in range(profile.cases)]
