"""Checks of a study against where its trials train: a GPU asked for or not, a GPU-only
metric, and cells that differ only in what a CPU does not do (fp16 runs as fp32 there)."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.checks import Problems
from orchestrator.space import SpaceFile


def check_device(space: SpaceFile, configs: dict[str, dict[str, Any]], errors: Problems) -> None:
    """``device: cuda`` needs a GPU from Ray: trials without ``resources.gpu`` see none."""
    if space.resources.gpu > 0:
        return
    for label, config in configs.items():
        if config.get("device") == "cuda":
            errors.add(
                f"cell {label!r}: device 'cuda' but resources.gpu is 0, so Ray gives the trial "
                "no GPU; set resources.gpu (e.g. 1, or 0.5 to share) or device: auto"
            )


# Metrics only a trial on a GPU logs (the engine measures CUDA memory).
GPU_ONLY_METRICS = ("perf/peak_gpu_mem_gib",)


def check_metric_on_device(
    space: SpaceFile, written_gpu: float, configs: dict[str, dict[str, Any]], errors: Problems
) -> None:
    """A GPU-only metric is never logged by a trial without a GPU, so ranking by it would leave
    an empty table. ``written_gpu`` is the file's ``resources.gpu`` (``--smoke`` on a CPU sets
    0 on purpose: a plumbing check, not a measurement)."""
    if space.metric not in GPU_ONLY_METRICS:
        return
    if written_gpu <= 0:
        errors.add(
            f"metric: {space.metric} is logged only by trials on a GPU, and resources.gpu is 0, "
            "so no trial would log it; give the trials a GPU or rank by another metric"
        )
        return
    for label, config in configs.items():
        if config.get("device") == "cpu":
            errors.add(
                f"metric: {space.metric} is logged only by trials on a GPU, and cell {label!r} "
                "has device: cpu"
            )
            return


def check_distinct_cells(
    configs: dict[str, dict[str, Any]], errors: Problems, on_cpu: bool = False
) -> None:
    """Two cells must not resolve to one trial config (YAML reads ``yes`` and ``on`` as true,
    and the config takes ``1`` for true), nor, for trials on a CPU (``on_cpu``: no GPU from
    Ray; or ``device: cpu``), to one training there (fp16 runs as fp32 on a CPU): they would
    be compared as if they differed."""
    written: dict[str, str] = {}
    trained: dict[str, str] = {}
    for label, config in configs.items():
        key = json.dumps(config, sort_keys=True)
        cpu = on_cpu or config.get("device") == "cpu"
        alike = json.dumps(_as_trained_on_cpu(config), sort_keys=True) if cpu else key
        if key in written:
            errors.add(
                f"cells {written[key]!r} and {label!r} give the same trial config (their values "
                "differ only in how they are written, e.g. 1 and true); make them differ"
            )
        elif alike in trained:
            errors.add(
                f"cells {trained[alike]!r} and {label!r} train alike: {_FP16_ON_CPU}; train "
                "them on a GPU (resources.gpu, device auto or cuda), or leave train.precision "
                "out of the axes"
            )
        written.setdefault(key, label)
        trained.setdefault(alike, label)


_FP16_ON_CPU = (
    "fp16 runs as fp32 on a CPU, where these trials train (resources.gpu: 0 or device: cpu)"
)


def check_precision_sample(
    space: SpaceFile, configs: dict[str, dict[str, Any]], errors: Problems
) -> None:
    """A sampled ``train.precision`` with fp16 on CPU trials: its fp16 and fp32 suggestions
    train alike, and the tuner learns from a difference that is not there."""
    rng = space.sample.get("train.precision")
    on_cpu = space.resources.gpu <= 0 or any(c.get("device") == "cpu" for c in configs.values())
    if rng is not None and on_cpu and "fp16" in rng.written_values():
        errors.add(f"sample.train.precision: {_FP16_ON_CPU}; sample it on a GPU, or not at all")


def _as_trained_on_cpu(config: dict[str, Any]) -> dict[str, Any]:
    """The config as a CPU trains it (trainables.engine.precision.effective_precision)."""
    train = config.get("train") or {}
    if train.get("precision") != "fp16":
        return config
    return {**config, "train": {**train, "precision": "fp32"}}
