"""Stage ``dice`` of ``benchmarks/gpu_check.py``: do the speed switches change what is learned?

A short training of the nnU-Net BraTS network (``search_spaces/base/nnunet_brats.yaml``, the one
the switches target) on synthetic four-modality cases, once plain and once with every
``train.speed`` switch on, for each of a few seeds (the same seed gives both the same weights
and the same batches). The figure is the last epoch's ``val/dice_mean``.

Within noise means the mean paired difference (switches on minus plain) is no larger than the
seed-to-seed standard deviation of the plain runs themselves, with a floor of 0.01 Dice: the
speed switches move the result less than changing the seed does. The 95% interval of the paired
difference (Student t over the seeds) is reported beside it.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from benchmarks.gpu_check_stages import BASE_DIR, Log, Plan, guarded

NOISE_FLOOR = 0.01  # Dice: below this a difference is not one a reader would act on
METRIC = "val/dice_mean"


def short_training_dice(plan: Plan, deadline: float, log: Log) -> dict[str, Any]:
    """Plain and all-switches trainings, alternating per seed, then their paired comparison."""
    variants = {"plain": {}, "all_switches": _all_switches(plan.device)}
    runs: dict[str, dict[str, Any]] = {name: {} for name in variants}
    for seed in plan.dice_seeds:
        for name, switches in variants.items():
            key = f"seed {seed}"
            if time.monotonic() > deadline:
                runs[name][key] = {"status": "skipped", "reason": "stage time budget spent"}
                continue
            runs[name][key] = guarded(lambda s=seed, w=switches: _train(plan, s, w))
            log(f"dice {name} {key}: {runs[name][key].get('dice', runs[name][key])}")
    pairs = [
        (runs["plain"][k]["dice"], runs["all_switches"][k]["dice"])
        for k in runs["plain"]
        if runs["plain"][k].get("status") == "ok" and runs["all_switches"][k].get("status") == "ok"
    ]
    comparison = compare_paired([p for p, _ in pairs], [f for _, f in pairs])
    log(f"dice comparison: {comparison}")
    return {"switches": sorted(variants["all_switches"]), "runs": runs, "comparison": comparison}


def _all_switches(device: str) -> dict[str, bool]:
    from trainables.config.trial import SpeedConfig

    names = [n for n in SpeedConfig.model_fields if device == "cuda" or n != "cuda_graphs"]
    return {f"train.speed.{n}": True for n in names}  # CUDA graphs are refused on a CPU


def _train(plan: Plan, seed: int, switches: dict[str, bool]) -> dict[str, Any]:
    from trainables.config.dotted import apply_overrides
    from trainables.config.trial import load_trial_config, parse_trial_config
    from trainables.engine.train import train_trial

    base = load_trial_config(BASE_DIR / "nnunet_brats.yaml").model_dump(mode="json")
    overrides = {"device": plan.device, "seed": seed, **dict(plan.dice_overrides), **switches}
    cfg = parse_trial_config(apply_overrides(base, overrides), source="gpu_check dice")
    start = time.monotonic()
    history = train_trial(cfg).history
    return {
        "dice": round(history[-1][METRIC], 4),
        "dice_per_epoch": [round(h[METRIC], 4) for h in history],
        "train_loss_per_epoch": [round(h["train/loss"], 4) for h in history],
        "step_ms": [round(h["perf/step_ms"], 3) for h in history],
        "seconds": round(time.monotonic() - start, 1),
    }


def compare_paired(plain: list[float], fast: list[float]) -> dict[str, Any]:
    """Paired difference ``fast - plain`` over seeds, against the plain runs' seed spread.

    ``within_noise``: ``|mean difference| <= max(sd of plain, NOISE_FLOOR)``; None with fewer
    than two pairs (no spread to compare with). ``ci95``: Student-t interval of the mean
    difference.
    """
    n = len(plain)
    if n != len(fast):
        raise ValueError(f"{n} plain results but {len(fast)} with the switches")
    if n == 0:
        return {"pairs": 0, "within_noise": None}
    deltas = [f - p for p, f in zip(plain, fast, strict=True)]
    mean_delta = statistics.fmean(deltas)
    record: dict[str, Any] = {
        "pairs": n,
        "plain_mean": round(statistics.fmean(plain), 4),
        "switches_mean": round(statistics.fmean(fast), 4),
        "mean_difference": round(mean_delta, 4),
        "within_noise": None,
    }
    if n < 2:
        return record
    from scipy import stats

    sd_plain = statistics.stdev(plain)
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(deltas) / math.sqrt(n)
    margin = max(sd_plain, NOISE_FLOOR)
    return {
        **record,
        "ci95": [round(float(mean_delta - half), 4), round(float(mean_delta + half), 4)],
        "plain_seed_sd": round(sd_plain, 4),
        "noise_margin": round(margin, 4),
        "within_noise": abs(mean_delta) <= margin,
    }
