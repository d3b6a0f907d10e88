"""How much of a rotated or scaled training sample is padding, with and without the margin.

Usage::

    python benchmarks/margin_padding.py [--samples N]

For three patches (3-D 64^3, a dummy-2-D 80 x 80 x 20, 2-D 96^2), ``--samples`` samples that
drew a rotation or scale (nnU-Net's default ranges; every other transform off) are cut from a
constant image of ones, with ``augment.crop_margin`` off (the patch alone) and on (nnU-Net's
margin, ``source_shape``), and resampled into the patch by ``augment_sources``. A voxel below
0.5 came from the zero padding. Prints the mean share of such voxels per sample, the share of
samples with more than 1% of them, and the largest share.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from a checkout

from trainables.data.augment import (  # noqa: E402
    AugmentConfig,
    augment_sources,
    decision_columns,
    needs_margin,
    source_shape,
)
from trainables.data.sources import SampleDraws, collate_sources  # noqa: E402

PATCHES = ((64, 64, 64), (80, 80, 20), (96, 96))
OFF = ("noise", "blur", "brightness", "contrast", "lowres", "gamma_invert", "gamma", "flip")


def padding_shares(patch: tuple[int, ...], margin: bool, samples: int) -> np.ndarray:
    """Per resampled sample, the share of its voxels that came from the padding."""
    cfg = AugmentConfig(crop_margin=margin, **{f"{name}_prob": 0.0 for name in OFF})
    shape = source_shape(cfg, patch)
    rng = np.random.default_rng(0)
    shares: list[float] = []
    while len(shares) < samples:
        draws = SampleDraws(rng.random(decision_columns(len(patch))), rng.random((1, 2)))
        if not needs_margin(cfg, draws.decisions):
            continue
        sample = (torch.ones(1, *shape), torch.ones(shape, dtype=torch.uint8), draws)
        batch = collate_sources([sample], patch)
        generator = torch.Generator().manual_seed(len(shares))
        image, _ = augment_sources(batch, cfg, patch, generator)
        shares.append(float((image < 0.5).float().mean()))
    return np.array(shares)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args(argv)
    result = {}
    for patch in PATCHES:
        for margin in (False, True):
            shares = padding_shares(patch, margin, args.samples)
            name = f"{'x'.join(map(str, patch))} {'margin' if margin else 'no margin'}"
            result[name] = {
                "mean": float(shares.mean()),
                "over_1pct": float(np.mean(shares > 0.01)),
                "max": float(shares.max()),
            }
            row = result[name]
            print(f"{name:22s} padding: mean {row['mean']:.3f}, samples > 1% "
                  f"{row['over_1pct']:.2f}, max {row['max']:.3f}")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
