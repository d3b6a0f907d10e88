"""Decoding .nii.gz vs loading from the prepared cache, per case, side by side in one run.

Usage::

    python benchmarks/bench_cache.py [--data DIR] [--repeats N] [--cases N]

Without ``--data`` it uses the real BraTS sample at ``../shared/data/brats-sample`` (beside the
checkout) when present, else generates BraTS-sized synthetic cases (240x240x155, 4 modalities,
written with nibabel) into a temporary directory. The dataset is prepared into a temporary cache,
then for each case it times (a) ``load_case`` decoding its NIfTI files and (b)
``PreparedDataset.load(..., mmap=False)``, a full read into memory so both sides end with the
arrays in RAM. Each time is the median over ``--repeats``. Target (DESIGN.md): ratio >= 20.

Note: (b) reads the page cache when the cache was just written (as in training, where the same
cases are read every epoch); (a) is CPU-bound gzip decoding either way.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from a checkout

from trainables.data.cache import PreparedDataset, prepare  # noqa: E402
from trainables.data.layouts import discover  # noqa: E402
from trainables.data.nifti import load_case  # noqa: E402
from trainables.data.preprocess import PreprocessConfig  # noqa: E402
from trainables.data.synth import synthesize_dataset  # noqa: E402

REAL_SAMPLE = REPO.parent / "shared" / "data" / "brats-sample"
TARGET_RATIO = 20.0


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls (the result is dropped each time)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pick_data(arg: str | None, tmp: Path, cases: int) -> tuple[Path, str]:
    """The dataset to measure and a description of it."""
    if arg:
        return Path(arg), "given"
    if any(REAL_SAMPLE.glob("*/*_seg.nii*")):
        return REAL_SAMPLE, "real BraTS sample"
    out = tmp / "synth"
    print(f"real sample not found at {REAL_SAMPLE}; generating {cases} synthetic cases...")
    synthesize_dataset(out, cases=cases, seed=0, shape=(240, 240, 155))
    return out, "synthetic 240x240x155"


def measure(data: Path, cache_dir: Path, repeats: int) -> list[tuple[str, float, float, tuple]]:
    """Prepare ``data`` into ``cache_dir``; per case (id, decode s, cache s, cached shape)."""
    start = time.perf_counter()
    manifest = prepare(data, cache_dir, PreprocessConfig())
    print(f"prepared {len(manifest.cases)} cases in {time.perf_counter() - start:.2f} s")
    for skipped in manifest.skipped:
        print(f"  skipped {skipped.case_id}: {skipped.message}")
    dataset = PreparedDataset(cache_dir)
    records = {r.case_id: r for r in discover(data).cases}
    rows = []
    for case_id in dataset.case_ids:
        record = records[case_id]
        decode = median_seconds(lambda r=record: load_case(r), repeats)
        cached = median_seconds(lambda c=case_id: dataset.load(c, mmap=False), repeats)
        rows.append((case_id, decode, cached, dataset.load(case_id).image.shape))
    return rows


def report(rows: list[tuple[str, float, float, tuple]], source: str, repeats: int) -> float:
    """Print the table and the environment; return the overall ratio (sum decode / sum cache)."""
    print(f"\ndata: {source}; median of {repeats} repeats per case")
    print(
        f"{'case':<28} {'decode .nii.gz':>15} {'cache (full read)':>18} {'ratio':>7}  cached shape"
    )
    for case_id, decode, cached, shape in rows:
        print(
            f"{case_id:<28} {decode * 1e3:>12.1f} ms {cached * 1e3:>15.2f} ms "
            f"{decode / cached:>7.1f}  {shape}"
        )
    total_decode = sum(r[1] for r in rows)
    total_cache = sum(r[2] for r in rows)
    ratio = total_decode / total_cache
    print(
        f"{'mean':<28} {total_decode / len(rows) * 1e3:>12.1f} ms "
        f"{total_cache / len(rows) * 1e3:>15.2f} ms {ratio:>7.1f}"
    )
    verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
    print(f"\nratio {ratio:.1f} {verdict} the target of {TARGET_RATIO:.0f}x")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, nibabel {nib.__version__}; "
        f"{platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset directory (default: real sample or synthetic)")
    parser.add_argument("--repeats", type=int, default=5, help="timings per case (median)")
    parser.add_argument("--cases", type=int, default=3, help="synthetic cases when generating")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as tmp:
        data, source = pick_data(args.data, Path(tmp), args.cases)
        rows = measure(data, Path(tmp) / "cache", max(1, args.repeats))
        ratio = report(rows, source, max(1, args.repeats))
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
