"""Our metrics and sliding-window inference vs MONAI's, side by side in one run.

Usage::

    python benchmarks/bench_monai.py [--repeats N] [--volume X Y Z] [--roi R] [--json FILE]

Metrics: Dice, HD95 and surface Dice (1 mm) of one 240x240x155 mask pair (the WT of a real BraTS
case from ``../shared/data/brats-sample`` and a grown copy of its oedema plus enhancing tumour,
or a synthetic pair of blobs when the sample is absent); ours take numpy bool masks, MONAI's
take (1, 1, X, Y, Z) tensors. Sliding window: a small 3-D U-Net (filters 8-16-32, instance
norm) on a 4-channel volume, roi 64^3, overlap 0.5, Gaussian weights, 4 windows per forward
pass, on CPU, placements chosen so both implementations run the same windows. Each figure is
the median of ``--repeats`` runs, the two sides alternating within each repeat.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from a checkout

from trainables.engine.inference import sliding_window_logits  # noqa: E402
from trainables.metrics import dice, hd95, surface_dice  # noqa: E402
from trainables.models import UNetConfig, build_model  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "brats-sample"


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def mask_pair() -> tuple[np.ndarray, np.ndarray, tuple[float, ...], str]:
    """(pred, ref, spacing, source): two (240, 240, 155) bool masks."""
    from scipy.ndimage import binary_dilation, gaussian_filter

    segs = sorted(SAMPLE.glob("*/*_seg.nii*"))
    if segs:
        import nibabel as nib

        image = nib.load(segs[0])
        labels = np.asarray(image.dataobj).astype(np.uint8)
        pred = binary_dilation(labels == 2, iterations=2) | (labels == 4)
        spacing = tuple(float(v) for v in image.header.get_zooms()[:3])
        return pred, labels > 0, spacing, f"real: {segs[0].parent.name} WT vs grown ED+ET"
    rng = np.random.default_rng(0)
    fields = [gaussian_filter(rng.standard_normal((240, 240, 155)), 6.0) for _ in range(2)]
    pred, ref = (f > np.quantile(f, 0.97) for f in fields)
    return pred, ref, (1.0, 1.0, 1.0), "synthetic blobs"


def bench_metrics(repeats: int) -> dict[str, Any]:
    """Per metric: ours and MONAI's median ms and values on one 240x240x155 pair."""
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    pred, ref, spacing, source = mask_pair()
    p, r = torch.as_tensor(pred)[None, None], torch.as_tensor(ref)[None, None]
    sides = {
        "dice": (
            lambda: dice(pred, ref),
            lambda: compute_dice(p, r, ignore_empty=False).item(),
        ),
        "hd95": (
            lambda: hd95(pred, ref, spacing),
            lambda: compute_hausdorff_distance(
                p, r, include_background=True, percentile=95, spacing=list(spacing)
            ).item(),
        ),
        "surface_dice_1mm": (
            lambda: surface_dice(pred, ref, spacing, 1.0),
            lambda: compute_surface_dice(
                p, r, [1.0], include_background=True, spacing=list(spacing)
            ).item(),
        ),
    }
    out: dict[str, Any] = {"source": source, "shape": list(pred.shape)}
    for name, (ours, theirs) in sides.items():
        out[name] = _side_by_side(ours, theirs, repeats)
    return out


def _side_by_side(ours: Callable[[], Any], theirs: Callable[[], Any], repeats: int) -> dict:
    times: dict[str, list[float]] = {"ours": [], "monai": []}
    for _ in range(repeats):  # alternate, so drifting machine load hits both sides alike
        times["ours"].append(median_ms(ours, 1))
        times["monai"].append(median_ms(theirs, 1))
    return {
        "ours_ms": statistics.median(times["ours"]),
        "monai_ms": statistics.median(times["monai"]),
        "ours_value": float(ours()),
        "monai_value": float(theirs()),
    }


def bench_sliding_window(volume: tuple[int, int, int], roi: int, repeats: int) -> dict[str, Any]:
    """Ours vs ``monai.inferers.sliding_window_inference`` on the same model and input."""
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    model = build_model(UNetConfig(spatial_dims=3, filters=(8, 16, 32), norm="instance"), 4, 3)
    model.eval()
    image = torch.randn(4, *volume)
    patch = (roi,) * 3

    def ours() -> torch.Tensor:
        return sliding_window_logits(model, image, patch, 0.5, gaussian=True, batch_size=4)

    def theirs() -> torch.Tensor:
        with torch.no_grad():
            return sliding_window_inference(
                image[None], patch, 4, model, overlap=0.5, mode="gaussian"
            )[0]

    result = _side_by_side(lambda: ours().sum(), lambda: theirs().sum(), repeats)
    diff = (ours() - theirs()).abs()
    result.update(volume=list(volume), roi=roi, max_abs_diff=float(diff.max()))
    result["argmax_agreement"] = float((ours().argmax(0) == theirs().argmax(0)).float().mean())
    return result


def environment() -> dict[str, str]:
    import monai
    import scipy

    return {
        "machine": f"{platform.machine()} {platform.system()}, {torch.get_num_threads()} threads",
        "processor": platform.processor() or "unknown",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--volume", type=int, nargs=3, default=[160, 160, 128])
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--skip-metrics", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # MONAI's deprecation notes would drown the table
    results: dict[str, Any] = {"environment": environment()}
    if not args.skip_metrics:
        results["metrics"] = bench_metrics(args.repeats)
    results["sliding_window"] = bench_sliding_window(tuple(args.volume), args.roi, args.repeats)
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def format_table(results: dict[str, Any]) -> str:
    """The side-by-side table as Markdown, with the environment underneath."""
    lines = ["| what | ours (ms) | MONAI (ms) | MONAI / ours | ours value | MONAI value |"]
    lines.append("|---|---|---|---|---|---|")
    rows = dict(results.get("metrics", {}))
    rows.pop("source", None), rows.pop("shape", None)
    rows["sliding_window"] = results["sliding_window"]
    for name, row in rows.items():
        ratio = row["monai_ms"] / row["ours_ms"]
        lines.append(
            f"| {name} | {row['ours_ms']:.1f} | {row['monai_ms']:.1f} | {ratio:.2f} | "
            f"{row['ours_value']:.4f} | {row['monai_value']:.4f} |"
        )
    sw = results["sliding_window"]
    lines.append(
        f"\nsliding window: volume {sw['volume']}, roi {sw['roi']}, max |ours - MONAI| "
        f"{sw['max_abs_diff']:.3g}, argmax agreement {sw['argmax_agreement']:.4f}"
    )
    if "metrics" in results:
        lines.append(f"masks: {results['metrics']['source']}, {results['metrics']['shape']}")
    lines.append(", ".join(f"{k} {v}" for k, v in results["environment"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
