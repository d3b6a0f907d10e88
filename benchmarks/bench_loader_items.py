"""What a loader item costs with nnU-Net's margin around rotated and scaled samples.

Usage::

    python benchmarks/bench_loader_items.py [--items N] [--patch X Y Z] [--shape X Y Z]
                                            [--repeats R] [--augment-batches N]
                                            [--json FILE]

One memory-mapped float16 case of 4 x ``shape`` (BraTS: 240 x 240 x 155) in a temporary
directory, read through ``PatchDataset`` in three ways, the three alternating in each repeat:

- ``float32 patches``: every item the float32 patch (the loader before the margin; today's
  path without augmentation or with the workers augmenting);
- ``float16, no margin``: the cache's float16 patch, ``augment.crop_margin: false``;
- ``float16, margin``: the default: the ~36% of items that drew a rotation or scale are cut
  with the margin (``source_shape``), the others at the patch size.

It prints, per mode, the median time per item over ``--repeats`` (each the mean over ``--items``
items, one process, the page cache warm) and the mean bytes per item (image and int64 label)
that go through pinned memory and the host-to-device copy. This is the loader's side only; how
the GPU absorbs the bytes is the device check's ``pipeline`` stage. ``--augment-batches N``
also times ``augment_sources`` on this CPU for N batches of 2 drawn by the loader, with and
without the margin (each the mean over the N batches, the two alternating ``--repeats`` times).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from a checkout

from trainables.data.augment import AugmentConfig, augment_sources, source_shape  # noqa: E402
from trainables.data.loader import PatchDataset  # noqa: E402
from trainables.data.sampling import SamplingConfig  # noqa: E402

MODES = ("float32 patches", "float16, no margin", "float16, margin")


def make_case(root: Path, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A float16 4-channel memmap and a uint8 label with a central lesion, like the cache's."""
    rng = np.random.default_rng(0)
    image = np.lib.format.open_memmap(root / "image.npy", "w+", np.float16, (4, *shape))
    for c in range(4):
        image[c] = rng.standard_normal(shape).astype(np.float16)
    image.flush()
    label = np.zeros(shape, np.uint8)
    centre = tuple(s // 2 for s in shape)
    label[tuple(slice(c - 20, c + 20) for c in centre)] = 2
    np.save(root / "label.npy", label)
    return np.load(root / "image.npy", mmap_mode="r"), np.load(root / "label.npy", mmap_mode="r")


def dataset(
    case: tuple[np.ndarray, np.ndarray], mode: str, patch: tuple[int, ...], items: int
) -> PatchDataset:
    image, label = case
    fg = np.argwhere(np.asarray(label) > 0)
    augment = None
    if mode != MODES[0]:
        augment = AugmentConfig(crop_margin=mode == MODES[2])
    return PatchDataset(
        lambda _i: (image, label, fg),
        num_cases=1,
        samples_per_epoch=items,
        cfg=SamplingConfig(patch_size=patch),
        seed=0,
        batch_size=2,
        augment=augment,
    )


def expected_mib(patch: tuple[int, ...]) -> float:
    """Mean MiB per item of the default over infinitely many items: the share of items that
    draw a rotation or scale (1 - 0.8 x 0.8 = 0.36) cut with the margin (float16 image of 4
    channels, uint8 label), the others at the patch size (float16 image, int64 label)."""
    cfg = AugmentConfig()
    share = 1 - (1 - cfg.rotation_prob) * (1 - cfg.scale_prob)
    wide = np.prod(source_shape(cfg, patch)) * (4 * 2 + 1)
    plain = np.prod(patch) * (4 * 2 + 8)
    return float(share * wide + (1 - share) * plain) / 2**20


def time_items(data: PatchDataset, items: int) -> tuple[float, float]:
    """(seconds per item, mean bytes per item) over ``items`` items."""
    total_bytes = 0
    start = time.perf_counter()
    for k in range(items):
        image, label, _ = data[k]
        total_bytes += image.numel() * image.element_size() + label.numel() * label.element_size()
    return (time.perf_counter() - start) / items, total_bytes / items


def time_augmentation(data: PatchDataset, batches: int, batch_size: int = 2) -> float:
    """Mean ms of ``augment_sources`` per batch of ``batch_size`` items, on this CPU."""
    assert data.augment is not None
    patch = tuple(data.cfg.patch_size)
    seconds = []
    for b in range(batches):
        items = [data[b * batch_size + i] for i in range(batch_size)]
        batch = data.collate(items)
        generator = torch.Generator().manual_seed(b)
        start = time.perf_counter()
        augment_sources(batch, data.augment, patch, generator)
        seconds.append(time.perf_counter() - start)
    return 1000 * statistics.mean(seconds)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--patch", type=int, nargs=3, default=(128, 128, 128))
    parser.add_argument("--shape", type=int, nargs=3, default=(240, 240, 155))
    parser.add_argument(
        "--augment-batches",
        type=int,
        default=0,
        help="also time the CPU augmentation of this many batches of 2, with and without "
        "the margin (alternating, --repeats times)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    patch = tuple(args.patch)
    with tempfile.TemporaryDirectory() as tmp:
        case = make_case(Path(tmp), tuple(args.shape))
        sets = {mode: dataset(case, mode, patch, args.items) for mode in MODES}
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        sizes: dict[str, float] = {}
        for _ in range(args.repeats):
            for mode in MODES:
                seconds, size = time_items(sets[mode], args.items)
                times[mode].append(seconds)
                sizes[mode] = size
        augment_ms: dict[str, list[float]] = {mode: [] for mode in MODES[1:]}
        for _ in range(args.repeats if args.augment_batches else 0):
            for mode in MODES[1:]:
                data = dataset(case, mode, patch, 2 * args.augment_batches)
                augment_ms[mode].append(time_augmentation(data, args.augment_batches))
    result = {
        "patch": list(patch),
        "source_shape": list(source_shape(AugmentConfig(), patch)),
        "shape": list(args.shape),
        "items": args.items,
        "repeats": args.repeats,
        "ms_per_item": {m: 1000 * statistics.median(t) for m, t in times.items()},
        "mb_per_item": {m: sizes[m] / 2**20 for m in MODES},
        "mb_per_item_expected": expected_mib(patch),
        "augment_batches": args.augment_batches,
        "augment_ms_per_batch": augment_ms if args.augment_batches else None,
        "machine": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    region = tuple(result["source_shape"])
    print(f"patch {patch}, margin region {region}, case 4 x {tuple(args.shape)}")
    for mode in MODES:
        ms, mb = result["ms_per_item"][mode], result["mb_per_item"][mode]
        print(f"{mode:20s} {ms:8.1f} ms/item {mb:8.1f} MiB/item")
    for mode, runs in (augment_ms if args.augment_batches else {}).items():
        text = ", ".join(f"{ms:.1f}" for ms in runs)
        print(f"{mode:20s} CPU augmentation of a batch of 2: {text} ms (mean per repeat)")
    print(
        f"float16, margin: {result['mb_per_item_expected']:.1f} MiB/item expected over many items"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
