"""The stages of ``benchmarks/gpu_check.py``: each returns a JSON-able record or raises.

Every stage takes a :class:`Plan` (sizes: the full GPU check or the CPU ``--dry-run``) and a
deadline (``time.monotonic()`` seconds) it checks between its units, so a slow stage ends early
with the units it finished. Everything goes through the engine's own API (no Ray, no MLflow).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
BASE_DIR = REPO / "search_spaces" / "base"
# The Triton kernels last: a fault in one (an illegal address) poisons the CUDA context for
# every later unit of the process, so the variants that cannot fault run first.
SPEED_SWITCHES = ("channels_last", "fused_optimizer", "cuda_graphs", "fused_norm_act")
Log = Callable[[str], None]
DRY_NNUNET_ARGS = (
    *("--steps", "1", "--warmup", "0", "--block", "1", "--train-steps", "1", "--device", "cpu"),
    *("--patch", "16", "16", "16", "--batch", "1", "--set", "model.num_stages=3"),
)


@dataclass(frozen=True)
class Plan:
    """Sizes of one check. ``full()`` is the lent-GPU run, ``dry()`` the CPU toy run."""

    device: str
    precisions: tuple[str, ...]
    train_epochs: int
    train_iterations: int
    decrease_steps: int
    nnunet_args: tuple[str, ...]
    pipeline_shape: tuple[int, int, int]
    pipeline_cases: int
    pipeline_steps: int
    pipeline_overrides: tuple[tuple[str, Any], ...]
    clstm_patch: tuple[int, int, int]
    dice_seeds: tuple[int, ...]
    dice_overrides: tuple[tuple[str, Any], ...]
    budgets: tuple[tuple[str, float], ...]
    train_configs: tuple[str, ...] = ()  # base config stems; empty: every one

    @staticmethod
    def full() -> Plan:
        return Plan(
            device="cuda",
            precisions=("fp16", "bf16"),
            train_epochs=2,
            train_iterations=5,
            decrease_steps=12,
            # 6 numerics steps: past the CUDA graph's 3 eager warm-up steps, so replays count
            nnunet_args=("--steps", "20", "--warmup", "5", "--block", "5", "--train-steps", "6"),
            pipeline_shape=(240, 240, 155),
            pipeline_cases=4,  # synthesising one 240x240x155 case takes ~10-20 s of one CPU core
            pipeline_steps=30,
            pipeline_overrides=(("train.num_workers", 4),),
            clstm_patch=(512, 512, 320),
            dice_seeds=(0, 1, 2),
            dice_overrides=(
                *(("data.synthetic.shape", [80, 80, 64]), ("data.synthetic.cases", 10)),
                *(("sampling.patch_size", [64, 64, 64]), ("model.num_stages", 5)),
                *(("train.epochs", 5), ("train.iterations_per_epoch", 40)),
                *(("schedule.warmup_epochs", 0), ("train.num_workers", 4)),
                ("validation.max_cases", 2),
            ),
            budgets=(
                ("tests", 60),
                ("train", 100),
                ("nnunet", 110),
                ("pipeline", 80),
                ("clstm", 50),  # two steps per unit: one untimed (cuDNN autotuning)
                ("dice", 80),
            ),  # 480 s in all: the 8 minutes
        )

    @staticmethod
    def dry() -> Plan:
        toy = ("sampling.patch_size", [16, 16, 16]), ("model.num_stages", 3)
        return Plan(
            device="cpu",
            precisions=("fp32", "bf16"),
            train_epochs=1,
            train_iterations=1,
            decrease_steps=3,
            nnunet_args=DRY_NNUNET_ARGS,
            pipeline_shape=(48, 48, 40),
            pipeline_cases=4,
            pipeline_steps=2,
            pipeline_overrides=(*toy, ("train.num_workers", 1), ("model.base_filters", 4)),
            clstm_patch=(32, 32, 6),
            dice_seeds=(0, 1),
            dice_overrides=(
                *(("data.synthetic.shape", [48, 48, 40]), ("data.synthetic.cases", 10)),
                *(("sampling.patch_size", [32, 32, 32]), ("model.num_stages", 3)),
                *(("model.base_filters", 4), ("train.epochs", 1)),
                *(("train.iterations_per_epoch", 2), ("schedule.warmup_epochs", 0)),
                *(("train.num_workers", 0), ("validation.max_cases", 1)),
            ),
            budgets=(
                *(("tests", 60), ("train", 45), ("nnunet", 30)),
                *(("pipeline", 30), ("clstm", 20), ("dice", 30)),
            ),
            # one of each code path: attention (tiny), residual + group norm, C-LSTM, 2-D
            train_configs=("tiny", "btrseg", "clstm", "unet2d_penalty"),
        )


# ------------------------------------------------------------------------------ (a) tests
def cuda_tests(plan: Plan, deadline: float, log: Log) -> dict[str, Any]:
    """``pytest -m cuda`` over the test files that carry the marker, in a subprocess."""
    files = sorted(
        str(p.relative_to(REPO))
        for p in (REPO / "tests").rglob("test_*.py")
        if "mark.cuda" in p.read_text()
    )
    # -v: one line per test as it ends, so a timed-out run still shows how far it got
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-v", "-p", "no:cacheprovider", *files]
    timeout = max(5.0, deadline - time.monotonic())
    try:
        done = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as err:  # keep what pytest printed before the kill
        output = _text(err.stdout) + _text(err.stderr)
        log(f"cuda tests: timed out after {timeout:.0f} s")
        return {"files": files, "returncode": None, "summary": f"timed out after {timeout:.0f} s",
                "output_tail": output[-3000:]}  # fmt: skip
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)}
    log(f"cuda tests: {summary}")
    return {"files": files, "returncode": done.returncode, "summary": summary, **counts,
            "output_tail": (done.stdout + done.stderr)[-3000:]}  # fmt: skip


def _text(out: bytes | str | None) -> str:
    """A TimeoutExpired's captured output: bytes even with ``text=True``, or None."""
    if isinstance(out, bytes):
        return out.decode(errors="replace")
    return out or ""


# ------------------------------------------------------------------------------ (b) train
def smoke_trials(plan: Plan, deadline: float, log: Log) -> dict[str, Any]:
    """Every base config with ``--smoke``, in each precision, through ``train_trial``; then the
    same step on one fixed batch for ``decrease_steps`` steps.

    Check (``ok``): every epoch's ``train/loss`` is finite, and on the fixed batch the mean of
    the last 3 losses is below the mean of the first 3 (first and last loss when fewer than 6).
    """
    rows: dict[str, Any] = {}
    paths = sorted(BASE_DIR.glob("*.yaml"))
    if plan.train_configs:
        paths = [p for p in paths if p.stem in plan.train_configs]
    # precision-major: should the budget run out, every config has still trained in fp16
    for precision in plan.precisions:
        for path in paths:
            key = f"{path.stem}/{precision}"
            if time.monotonic() > deadline:
                rows[key] = {"status": "skipped", "reason": "stage time budget spent"}
                continue
            rows[key] = guarded(lambda p=path, q=precision: _smoke_one(plan, p, q))
            log(f"train {key}: {_short(rows[key])}")
    return {"trials": rows, "all_ok": all(r.get("ok") for r in rows.values())}


def _smoke_one(plan: Plan, path: Path, precision: str) -> dict[str, Any]:
    from trainables.config.dotted import apply_overrides
    from trainables.config.trial import load_trial_config, parse_trial_config
    from trainables.engine.bench import build_bench_step
    from trainables.engine.smoke import smoke_config
    from trainables.engine.train import train_trial

    small = smoke_config(load_trial_config(path)).model_dump(mode="json")
    overrides = {
        "device": plan.device,
        "train.precision": precision,
        "train.epochs": plan.train_epochs,
        "schedule.warmup_epochs": 0,
        "train.iterations_per_epoch": plan.train_iterations,
        "validation.max_cases": 1,
    }
    cfg = parse_trial_config(apply_overrides(small, overrides), source=path)
    start = time.monotonic()
    history = train_trial(cfg).history
    losses = [h["train/loss"] for h in history]
    bench = build_bench_step(cfg)
    fixed = [float(bench.step()) for _ in range(plan.decrease_steps)]
    k = 3 if len(fixed) >= 6 else 1
    decreased = sum(fixed[-k:]) / k < sum(fixed[:k]) / k
    finite = all(math.isfinite(v) for v in [*losses, *fixed])
    return {
        "ok": finite and decreased,
        "epoch_losses": losses,
        "fixed_batch_losses": fixed,
        "precision": bench.train.precision,
        "step_ms": [round(h["perf/step_ms"], 3) for h in history],
        "seconds": round(time.monotonic() - start, 2),
    }


# ----------------------------------------------------------------------------- (c) nnU-Net
def nnunet_comparison(plan: Plan, deadline: float, log: Log) -> dict[str, Any]:
    """``bench_vs_nnunet.run`` without switches, with each speed switch alone, channels-last
    with the fused norm, and with all."""
    try:
        import dynamic_network_architectures  # noqa: F401
    except ImportError:
        line = (
            "skipped: nnU-Net's dynamic_network_architectures is not installed "
            "(pip install --no-deps dynamic-network-architectures==0.4.4)"
        )
        log(f"nnunet: {line}")
        return {"status": "skipped", "reason": line}
    from benchmarks import bench_vs_nnunet as bench

    variants = {
        "plain": [],
        **{s: [s] for s in SPEED_SWITCHES},
        # channels-last alone was slower on nnU-Net's step (instance norm transposes); the fused
        # norm reads channels-last in place, so the pair is the combination that can win
        "channels_last+fused_norm_act": ["channels_last", "fused_norm_act"],
        "all": list(SPEED_SWITCHES),
    }
    rows: dict[str, Any] = {}
    for name, switches in variants.items():
        if time.monotonic() > deadline:
            rows[name] = {"status": "skipped", "reason": "stage time budget spent"}
            continue
        if plan.device == "cpu":  # CUDA graphs are refused on a CPU
            switches = [s for s in switches if s != "cuda_graphs"]
            if name == "cuda_graphs":
                rows[name] = {"status": "skipped", "reason": "CUDA graphs need a CUDA device"}
                continue
        flags = [f for s in switches for f in ("--speed", s)]
        args = bench.parse_args([*plan.nnunet_args, *flags])
        rows[name] = guarded(lambda a=args: _nnunet_row(bench.run(a)))
        log(f"nnunet {name}: {_short(rows[name])}")
    return {"variants": rows}


def _nnunet_row(result: dict[str, Any]) -> dict[str, Any]:
    keep = ("step_ms_median", "voxels_per_s", "tflops_per_s", "peak_gpu_mem_gib")
    losses = result["numerics"]["ours"]
    return {
        # a variant that trains on inf/NaN must not pass as a speed-up
        "ok": all(math.isfinite(v) for v in [*losses, *result["numerics"]["nnunet_plus_1"]]),
        "our_losses": losses,
        "ratio_nnunet_over_ours": result["ratio_nnunet_over_ours"],
        "nnunet": {k: result["nnunet"][k] for k in keep},
        "ours": {k: result["ours"][k] for k in keep},
        "loss_parity": result["numerics"]["loss_parity"],
    }


# ---------------------------------------------------------------------------- (d) pipeline
def data_pipeline(plan: Plan, deadline: float, log: Log) -> dict[str, Any]:
    """``benchmark_pipeline`` on the nnU-Net BraTS trial over synthetic cases of
    ``pipeline_shape``: the default (int64 labels, rotated and scaled samples cut with
    nnU-Net's margin), without the margin (``augment.crop_margin: false``, what the margin
    costs), then ``uint8_labels``."""
    from trainables.config.dotted import apply_overrides
    from trainables.config.trial import load_trial_config, parse_trial_config
    from trainables.engine.bench import benchmark_pipeline

    base = load_trial_config(BASE_DIR / "nnunet_brats.yaml").model_dump(mode="json")
    rows: dict[str, Any] = {}
    variants = {
        "int64_labels": {},
        "no_margin": {"augment.crop_margin": False},
        "uint8_labels": {"train.speed.uint8_labels": True},
    }
    for name, variant in variants.items():
        if time.monotonic() > deadline:
            rows[name] = {"status": "skipped", "reason": "stage time budget spent"}
            continue
        overrides = {
            "device": plan.device,
            "data.synthetic.shape": list(plan.pipeline_shape),
            "data.synthetic.cases": plan.pipeline_cases,
            "data.split": {"kind": "holdout", "fractions": [0.75, 0.25, 0.0]},
            **variant,
            **dict(plan.pipeline_overrides),
        }
        cfg = parse_trial_config(apply_overrides(base, overrides), source="gpu_check pipeline")
        n = plan.pipeline_steps
        rows[name] = guarded(lambda c=cfg, n=n: benchmark_pipeline(c, n, max(1, n // 5)))
        log(f"pipeline {name}: {_short(rows[name])}")
    return rows


# ------------------------------------------------------------------------------- (e) C-LSTM
def clstm_memory(plan: Plan, deadline: float, log: Log) -> dict[str, Any]:
    """Peak memory of one C-LSTM training step on one ``clstm_patch`` volume (batch 1, the
    U-Net trainable), with and without per-slice checkpointing, after one untimed step."""
    rows: dict[str, Any] = {}
    for checkpointing in (True, False):
        name = "checkpointing" if checkpointing else "no_checkpointing"
        if time.monotonic() > deadline:
            rows[name] = {"status": "skipped", "reason": "stage time budget spent"}
            continue
        rows[name] = guarded(lambda c=checkpointing: _clstm_step(plan, c))
        log(f"clstm {name}: {_short(rows[name])}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def _clstm_step(plan: Plan, checkpointing: bool) -> dict[str, Any]:
    from trainables.config.dotted import apply_overrides
    from trainables.config.trial import load_trial_config, parse_trial_config
    from trainables.engine.bench import build_bench_step
    from trainables.engine.precision import peak_memory_gib

    cfg = load_trial_config(BASE_DIR / "clstm.yaml").model_dump(mode="json")
    overrides = {
        "device": plan.device,
        "sampling.patch_size": list(plan.clstm_patch),
        "model.checkpointing": checkpointing,
        "train.freeze": None,  # the frozen first stage keeps no U-Net activations: not the peak
    }
    bench = build_bench_step(parse_trial_config(apply_overrides(cfg, overrides)))
    device = bench.train.device
    bench.step()  # untimed: cuDNN's autotuning workspaces would otherwise set the peak
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.monotonic()
    loss = float(bench.step())
    return {
        "patch_size": list(plan.clstm_patch),
        "loss": loss,
        "step_s": round(time.monotonic() - start, 3),
        "peak_gpu_mem_gib": peak_memory_gib(device),
        "within_8_gb": None if device.type != "cuda" else peak_memory_gib(device) <= 8e9 / 2**30,
    }


# -------------------------------------------------------------------------------- helpers
def guarded(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``'s record with ``status: ok``, or ``status: failed`` with the error."""
    try:
        return {"status": "ok", **fn()}
    except Exception as err:  # one failing unit must not end the stage
        from trainables.engine.memory import is_out_of_memory

        status = "out_of_memory" if is_out_of_memory(err) else "failed"
        return {"status": status, "error": f"{type(err).__name__}: {err}"[:2000]}


def _short(row: dict[str, Any]) -> str:
    if row.get("status") != "ok":
        return f"{row.get('status')}: {row.get('error') or row.get('reason')}"
    keys = ("ok", "ratio_nnunet_over_ours", "data_wait_frac", "iteration_over_step",
            "peak_gpu_mem_gib", "step_ms_median", "seconds")  # fmt: skip
    return ", ".join(f"{k} {row[k]}" for k in keys if k in row) or "ok"
