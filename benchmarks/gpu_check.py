"""Every GPU figure of DESIGN.md's performance targets from one command, on one lent GPU.

Usage::

    python benchmarks/gpu_check.py [--out DIR] [--stages tests,train,nnunet,pipeline,clstm,dice]
    python benchmarks/gpu_check.py --dry-run      # the same sequence at toy size on a CPU (CI)

Stages (``benchmarks/gpu_check_stages.py``), each under its own time budget and try/except, so
one failing or slow stage still leaves the others' results:

(a) ``tests``: the ``cuda``-marked tests (``pytest -m cuda``), in a subprocess;
(b) ``train``: every ``search_spaces/base`` config with ``--smoke`` in fp16 and bf16 through the
    engine (autocast, GradScaler, cuDNN autotuning, pinned transfers, on-device augmentation):
    finite losses, and a decreasing loss on one fixed batch;
(c) ``nnunet``: our nnU-Net-style step against nnU-Net's own network in the same process
    (``bench_vs_nnunet.run``), plain, with each ``train.speed`` switch and with all of them;
    skipped with a line when ``dynamic_network_architectures`` is not installed;
(d) ``pipeline``: ``benchmark_pipeline`` on synthetic 240x240x155 cases, 4 loader workers:
    iteration over pure step and the data-wait fraction (int64 and uint8 labels);
(e) ``clstm``: peak memory of a C-LSTM step on one 512x512x320 volume, with and without
    checkpointing;
(f) ``dice`` (``benchmarks/gpu_check_dice.py``): a short nnU-Net training, plain and with every
    speed switch, over 3 seeds: is the validation Dice with the switches within noise of plain?

Writes ``gpu_check.json`` and ``gpu_check.md`` (the environment: GPU, driver, torch, CUDA,
cuDNN) into ``--out`` (default ``$OUT`` when set, else ``./gpu_check_out``), after each stage.
Needs torch plus small wheels, and neither ray nor mlflow (docs/performance.md lists them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from a checkout

from benchmarks import gpu_check_stages as stages  # noqa: E402
from benchmarks.gpu_check_dice import short_training_dice  # noqa: E402

STAGES: dict[str, Callable[..., dict[str, Any]]] = {
    "tests": stages.cuda_tests,
    "train": stages.smoke_trials,
    "nnunet": stages.nnunet_comparison,
    "pipeline": stages.data_pipeline,
    "clstm": stages.clstm_memory,
    "dice": short_training_dice,
}
JSON_FILE, MARKDOWN_FILE = "gpu_check.json", "gpu_check.md"
DRY_TITLE = " (dry run: toy sizes on a CPU, no speed figures)"


def environment() -> dict[str, Any]:
    """GPU, driver, torch, CUDA, cuDNN, triton and Python versions of this process."""
    cuda = torch.cuda.is_available()
    return {
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        if cuda
        else None,
        "driver": _driver_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "triton": _version("triton"),
        "dynamic_network_architectures": _version("dynamic_network_architectures"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        # loader workers pass batches through shared memory: 4 workers x prefetch 4 x ~100 MB
        "dev_shm_gib": _shm_gib(),
    }


def _shm_gib() -> float | None:
    try:
        return round(shutil.disk_usage("/dev/shm").total / 2**30, 1)
    except OSError:
        return None


def _driver_version() -> str | None:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def run_stage(name: str, plan: stages.Plan, budget: float, log: stages.Log) -> dict[str, Any]:
    """One stage under its budget: its record with status, seconds and budget."""
    start = time.monotonic()
    log(f"--- stage {name} (budget {budget:.0f} s)")
    try:
        record = {"status": "ok", "result": STAGES[name](plan, start + budget, log)}
    except Exception as err:  # the other stages must still run
        record = {"status": "failed", "error": f"{type(err).__name__}: {err}"[:2000]}
        log(f"stage {name} failed: {record['error']}")
    return {**record, "seconds": round(time.monotonic() - start, 1), "budget_s": budget}


def run(args: argparse.Namespace, log: stages.Log = print) -> dict[str, Any]:
    """Every selected stage in order; the record is rewritten after each."""
    plan = stages.Plan.dry() if args.dry_run else stages.Plan.full()
    budgets = dict(plan.budgets)
    record: dict[str, Any] = {
        "dry_run": args.dry_run,
        "command": " ".join([sys.executable, *sys.argv]),
        "environment": environment(),
        "stages": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.stages:
        record["stages"][name] = run_stage(name, plan, budgets[name], log)
        write(record, args.out)
    return record


def write(record: dict[str, Any], out: Path) -> None:
    (out / JSON_FILE).write_text(json.dumps(record, indent=2, default=str))
    (out / MARKDOWN_FILE).write_text(markdown(record))


def markdown(record: dict[str, Any]) -> str:
    """The environment and one row per stage unit: what, status, the headline figures."""
    env = record["environment"]
    lines = [
        "# gpu_check" + (DRY_TITLE if record["dry_run"] else ""),
        "",
        "| GPU | driver | torch | CUDA | cuDNN | triton | Python |",
        "|---|---|---|---|---|---|---|",
        f"| {env['gpu']} | {env['driver']} | {env['torch']} | {env['cuda']} | {env['cudnn']} "
        f"| {env['triton']} | {env['python']} |",
        "",
        "| stage | unit | status | figures |",
        "|---|---|---|---|",
    ]
    for name, stage in record["stages"].items():
        lines.append(f"| {name} | (stage, {stage['seconds']} s) | {stage['status']} | "
                     f"{stage.get('error', '')} |")  # fmt: skip
        for unit, row in _units(stage.get("result") or {}):
            lines.append(f"| {name} | {unit} | {row.get('status', '')} | {_figures(row)} |")
    return "\n".join(lines) + "\n"


def _units(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    nested = result.get("trials") or result.get("variants") or result
    if "summary" in result:
        return [("pytest -m cuda", {"status": result["returncode"], "summary": result["summary"]})]
    if "runs" in result:  # dice: one row per variant and seed, then the paired comparison
        rows = [(f"{name} {seed}", row) for name, runs in result["runs"].items()
                for seed, row in runs.items()]  # fmt: skip
        return [*rows, ("plain vs switches", result["comparison"])]
    return [(k, v) for k, v in nested.items() if isinstance(v, dict)]


def _figures(row: dict[str, Any]) -> str:
    keys = ("summary", "ok", "reason", "error", "ratio_nnunet_over_ours", "step_ms_median",
            "iteration_over_step", "data_wait_frac", "num_workers", "peak_gpu_mem_gib",
            "within_8_gb", "dice", "pairs", "plain_mean", "switches_mean", "mean_difference",
            "ci95", "plain_seed_sd", "within_noise", "seconds")  # fmt: skip
    parts = [f"{k} {row[k]}" for k in keys if k in row]
    for side in ("nnunet", "ours"):
        if side in row:
            parts.append(f"{side} {row[side]['step_ms_median']} ms")
    return "; ".join(parts).replace("|", "/")[:300]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU (CI)")
    default_out = Path(os.environ.get("OUT") or "gpu_check_out")
    parser.add_argument("--out", type=Path, default=default_out, help="results folder")
    parser.add_argument(
        "--stages",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(STAGES),
        help=f"comma-separated subset of {','.join(STAGES)}",
    )
    args = parser.parse_args(argv)
    unknown = [s for s in args.stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {list(STAGES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device; use --dry-run for the CPU toy run", file=sys.stderr)
        return 2
    record = run(args, log=lambda line: print(line, flush=True))
    print(markdown(record))
    print(f"wrote {args.out / JSON_FILE} and {args.out / MARKDOWN_FILE}")
    failed = [n for n, s in record["stages"].items() if s["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
