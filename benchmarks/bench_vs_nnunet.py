"""Our training step against nnU-Net v2's own, same architecture, side by side in one run.

Usage (``--help`` for all flags)::

    python benchmarks/bench_vs_nnunet.py [--trial search_spaces/base/nnunet_brats.yaml]
        [--steps 50] [--warmup 10] [--patch 128 128 128] [--batch 2] [--device cuda]
        [--json OUT] [--set KEY=VALUE ...] [--precision bf16] [--compile] [--channels-last] ...

DESIGN.md target: on one H100, nnU-Net v2's step for the BraTS architecture (4x128^3, batch 2,
6 stages 32..320, deep supervision, fp16 AMP) takes about 74 ms; ours must reach at least 2x its
throughput with the same numerics quality.

* nnU-Net side: ``benchmarks/nnunet_reference.py`` (its ``PlainConvUNet``, its loss, SGD,
  fp16 autocast + GradScaler, clip 12, per-step loss read-back, cudnn.benchmark on).
* our side: ``trainables.engine.bench.build_bench_step`` on the trial: the very
  ``BenchStep`` ``TrialRunner`` trains with (fused SGD, loss outside autocast in float32, clip,
  the per-step divergence check; cudnn.benchmark on CUDA, as the engine's builder sets it).
* timing: both built in one process; after ``--warmup`` untimed steps each, blocks of
  ``--block`` steps alternate A, B, A, B (cancelling clock and thermal drift), each block timed
  with a device synchronisation at its end; ms/step is the median over blocks.
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on one eager forward + backward of each
  network (convolutions; the loss adds no counted FLOPs).
* memory: per block, the peak allocated above the block's start plus the side's own resident
  tensors (weights, gradients, optimizer state, batch).
* numerics: before timing (it doubles as warm-up), both train ``--train-steps`` steps from a
  fixed seed on the same synthetic batch; the loss trajectories are printed (a report, not a
  gate), and both losses are evaluated on identical logits (ours = nnU-Net's + 1 when the
  formulas agree).

The flags ``--precision``, ``--compile``, ``--compile-loss``, ``--channels-last``, ``--speed NAME``
(a ``train.speed`` switch) and ``--cudnn-benchmark`` change only our side, one candidate
speed-up each.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from a checkout

from benchmarks.nnunet_reference import NNUNetStep, build_reference  # noqa: E402
from benchmarks.side_by_side import interleave, our_side, reference_side  # noqa: E402
from trainables.config.trial import (  # noqa: E402
    SpeedConfig,
    TrialConfig,
    load_yaml,
    parse_trial_config,
)
from trainables.data.labels import INTERNAL_BRATS  # noqa: E402
from trainables.engine.bench import (  # noqa: E402
    BenchStep,
    StepOptions,
    build_bench_step,
    device_name,
)
from trainables.engine.precision import resolve_device  # noqa: E402
from trainables.errors import InputError  # noqa: E402

DEFAULT_TRIAL = REPO / "search_spaces" / "base" / "nnunet_brats.yaml"
TARGET_RATIO = 2.0


# ----------------------------------------------------------------------------------- config
def load_trial(args: argparse.Namespace) -> TrialConfig:
    """The trial YAML with ``--set`` and the command-line overrides applied, validated."""
    data = load_yaml(args.trial)
    flags = {
        "sampling.patch_size": args.patch,
        "train.batch_size": args.batch,
        "train.precision": args.precision,
        "train.compile": args.compile or None,  # absent: the trial's own setting
        "train.speed.channels_last": args.channels_last or None,
        **{f"train.speed.{name}": True for name in args.speed},
        "device": args.device,
    }
    for key, value in [*map(_parse_set, args.set), *flags.items()]:
        if value is not None:
            _set_path(data, key, value)
    cfg = parse_trial_config(data, args.trial)
    if cfg.model.kind != "plain_unet" or cfg.loss.output != "regions":
        raise InputError(
            "nnU-Net's reference is a PlainConvUNet with region outputs: the trial needs "
            f"model.kind plain_unet and a region loss, got {cfg.model.kind} / {cfg.loss.kind}",
            args.trial,
        )
    if cfg.model.strides is not None or cfg.model.kernel_sizes is not None:
        raise InputError(
            "the reference is nnU-Net's isotropic BraTS plan (stride 2, kernel 3 at every "
            "stage): leave model.strides and model.kernel_sizes unset",
            args.trial,
        )
    return cfg


def _parse_set(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise InputError(f"expected KEY=VALUE (a dotted path), got {item!r}", "--set")
    return key, yaml.safe_load(value)


def _set_path(data: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


# ------------------------------------------------------------------------------------ batch
def synthetic_batch(cfg: TrialConfig, device: torch.device) -> tuple[Tensor, Tensor]:
    """A learnable batch from ``cfg.seed``: ``(B, C, *S)`` float32 image, ``(B, *S)`` int64 codes.

    Codes are constant on blocks of ``2**(outputs - 1)`` voxels, so every weighted deep-
    supervision level sees the same targets under nnU-Net's ``nearest-exact`` and our
    ``nearest`` downsampling; each code shifts the channel means, so the labels are learnable.
    """
    generator = torch.Generator().manual_seed(cfg.seed)  # CPU: identical on any device
    block = 2 ** (cfg.model.deep_supervision_outputs - 1)
    batch, patch = cfg.train.batch_size, tuple(cfg.sampling.patch_size)
    uniform = torch.rand((batch, 1, *(p // block for p in patch)), generator=generator)
    coarse = torch.bucketize(uniform, torch.tensor([0.55, 0.7, 0.85]))  # bg, ED-ish, NCR-ish, ET
    codes = torch.tensor([0, 2, 1, 3])[coarse].float()
    label = nn.functional.interpolate(codes, size=patch, mode="nearest")[:, 0].long()
    means = torch.randn((len(cfg.data.modalities), 4), generator=generator)
    noise = torch.randn((batch, len(cfg.data.modalities), *patch), generator=generator)
    image = means[:, label].movedim(0, 1) + 0.5 * noise  # (C, B, *S) -> (B, C, *S)
    return image.to(device), label.to(device)


def build_sides(
    cfg: TrialConfig, options: StepOptions, reference_compile: bool, batch: tuple[Tensor, Tensor]
) -> tuple[NNUNetStep, BenchStep]:
    """Both steps, seeded, on copies of ``batch``."""
    image, label = batch
    torch.manual_seed(cfg.seed)
    features = tuple(cfg.model.filters)
    reference = build_reference(image, label, INTERNAL_BRATS, features, reference_compile)
    torch.manual_seed(cfg.seed)
    ours = build_bench_step(cfg, options)
    ours.image.copy_(image)
    ours.label.copy_(label)
    return reference, ours


# --------------------------------------------------------------------------------- numerics
def loss_parity(reference: NNUNetStep, ours: BenchStep, our_outputs: int) -> float:
    """``our loss - nnU-Net's`` on the same logits (nnU-Net's network's): 1 when the formulas
    agree (nnU-Net's Dice term is ``-Dice``, ours ``1 - Dice``). Our network returns only the
    ``our_outputs`` deep-supervision outputs nnU-Net weights non-zero."""
    with torch.no_grad():
        outputs = [o.float() for o in reference.network(reference.data)]
        theirs = reference.loss(outputs, reference.target)
        mine = ours.train.loss_fn(outputs[:our_outputs], ours.label)
    return float(mine - theirs)


def train_trajectories(reference: NNUNetStep, ours: BenchStep, steps: int) -> dict[str, Any]:
    """Loss per step of each side training on its batch (nnU-Net's shifted by +1)."""
    theirs = [reference.step() + 1.0 for _ in range(steps)]
    mine = [float(ours.step()) for _ in range(steps)]
    return {"steps": steps, "nnunet_plus_1": theirs, "ours": mine}


# ---------------------------------------------------------------------------------- running
def environment(device: torch.device) -> dict[str, Any]:
    """What the numbers depend on: device, library versions, the command line."""
    cuda = device.type == "cuda"
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "dynamic_network_architectures": metadata.version("dynamic_network_architectures"),
        "python": platform.python_version(),
        "command": shlex.join([sys.executable, *sys.argv]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build both sides once; check numerics; count FLOPs; time interleaved; the record."""
    cfg = load_trial(args)
    options = StepOptions(compile_loss=args.compile_loss)
    batch = synthetic_batch(cfg, resolve_device(cfg.device))
    reference, ours = build_sides(cfg, options, args.reference_compile, batch)
    numerics = {"loss_parity": loss_parity(reference, ours, cfg.model.deep_supervision_outputs)}
    numerics.update(train_trajectories(reference, ours, args.train_steps))  # also warms up
    sides = [reference_side(reference), our_side(ours, args.cudnn_benchmark)]
    interleave(sides, max(1, args.steps), max(0, args.warmup), max(1, args.block))
    voxels = cfg.train.batch_size * math.prod(cfg.sampling.patch_size)
    results = {side.name: side.summary(voxels) for side in sides}
    ratio = results["nnunet"]["step_ms_median"] / results["ours"]["step_ms_median"]
    return {
        "environment": environment(ours.train.device),
        "setup": _setup(cfg, args, ours),
        **results,
        "ratio_nnunet_over_ours": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "numerics": numerics,
    }


def _setup(cfg: TrialConfig, args: argparse.Namespace, ours: BenchStep) -> dict[str, Any]:
    flags = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    return {
        "patch_size": list(cfg.sampling.patch_size),
        "batch_size": cfg.train.batch_size,
        "features": list(cfg.model.filters),
        "nnunet_precision": "fp16 autocast + GradScaler"
        if ours.train.device.type == "cuda"
        else "fp32",
        "ours_precision": ours.train.precision,
        "args": flags,
    }


def report(result: dict[str, Any]) -> None:
    """Print the side-by-side table, the ratio line, the numerics and the environment."""
    setup = result["setup"]
    print(f"\nbatch {setup['batch_size']} x {setup['patch_size']}, features {setup['features']}")
    print(f"precision: nnU-Net {setup['nnunet_precision']}, ours {setup['ours_precision']}")
    print(f"flags: {setup['args']}")
    rows = [
        ("ms/step (median)", "step_ms_median", "{:.2f}"),
        ("ms/step (mean)", "step_ms_mean", "{:.2f}"),
        ("Mvoxels/s", "voxels_per_s", "{:.2f}"),
        ("TFLOP/step", "tflop_per_step", "{:.3f}"),
        ("TFLOP/s", "tflops_per_s", "{:.2f}"),
        ("peak GiB", "peak_gpu_mem_gib", "{}"),
    ]
    print(f"\n{'':<18} {'nnU-Net':>12} {'ours':>12}")
    for title, key, fmt in rows:
        values = [result[s][key] for s in ("nnunet", "ours")]
        if key == "voxels_per_s":
            values = [v / 1e6 for v in values]
        print(f"{title:<18} " + " ".join(f"{fmt.format(v):>12}" for v in values))
    ratio = result["ratio_nnunet_over_ours"]
    verdict = "meets" if ratio >= TARGET_RATIO else "below"
    print(
        f"\nratio nnU-Net/ours (step time): {ratio:.3f}x ({verdict} the {TARGET_RATIO:.0f}x target)"
    )
    _report_numerics(result["numerics"])
    print("\n" + "; ".join(f"{k} {v}" for k, v in result["environment"].items()))


def _report_numerics(numerics: dict[str, Any]) -> None:
    print(
        f"\nloss parity on identical logits: ours - nnU-Net = {numerics['loss_parity']:.6f} "
        "(1 when the formulas agree)"
    )
    theirs, mine = numerics["nnunet_plus_1"], numerics["ours"]
    if not mine:
        return
    print(f"training on one fixed batch, {numerics['steps']} steps (nnU-Net's loss + 1):")
    print(f"{'step':>6} {'nnU-Net+1':>10} {'ours':>10}")
    shown = sorted({0, len(mine) // 4, len(mine) // 2, 3 * len(mine) // 4, len(mine) - 1})
    for i in shown:
        print(f"{i + 1:>6} {theirs[i]:>10.4f} {mine[i]:>10.4f}")
    drops = [(t[0] - t[-1]) / t[0] for t in (theirs, mine)]
    print(f"relative decrease: nnU-Net {drops[0]:.1%}, ours {drops[1]:.1%}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--trial", type=Path, default=DEFAULT_TRIAL, help="trial YAML (plain_unet, region loss)")
    add("--steps", type=int, default=50, help="timed steps per side")
    add("--warmup", type=int, default=10, help="untimed steps per side first")
    add("--block", type=int, default=5, help="steps per timed block (blocks alternate)")
    add("--patch", type=int, nargs="+", help="patch size (default: the trial's)")
    add("--batch", type=int, help="batch size (default: the trial's)")
    add("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add("--json", type=Path, help="also write the result record here")
    add("--set", action="append", default=[], metavar="KEY=VALUE", help="override a trial field")
    add("--train-steps", type=int, default=20, help="steps of the numerics comparison")
    add("--precision", choices=["fp32", "fp16", "bf16"], help="ours: precision (bf16: no scaler)")
    add("--compile", action="store_true", help="ours: torch.compile the model")
    add("--compile-loss", action="store_true", help="ours: torch.compile the loss")
    add("--channels-last", action="store_true", help="ours: train.speed.channels_last")
    add(
        "--speed",
        action="append",
        default=[],
        choices=list(SpeedConfig.model_fields),
        help="ours: turn on one train.speed switch (repeatable)",
    )
    add(
        "--cudnn-benchmark",
        action="store_true",
        help="ours: cudnn autotuning (the engine turns it on for CUDA anyway)",
    )
    add("--reference-compile", action="store_true", help="nnU-Net: compile (its >=2.4 default)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
