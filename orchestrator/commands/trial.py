"""``ablate train`` and ``ablate bench``: one trial, no Ray, no MLflow."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.commands.common import (
    non_negative_int,
    positive_int,
    print_json,
    progress,
    writable_folder,
)


def register(verbs: argparse._SubParsersAction) -> None:
    train = verbs.add_parser("train", help="train one trial (no Ray), print final metrics as JSON")
    train.add_argument("trial", type=Path, help="trial YAML (see search_spaces/base/)")
    _common_trial_args(train)
    train.add_argument("--epochs", type=positive_int, help="override train.epochs")
    train.add_argument("--checkpoint-dir", type=Path, help="keep the best checkpoint here")
    train.add_argument(
        "--smoke",
        action="store_true",
        help="shrink the trial (tiny patch and widths, 2 short epochs, few cases) for a CPU check",
    )
    train.set_defaults(handler=_train)

    bench = verbs.add_parser("bench", help="training-step time, voxels/s and peak memory")
    bench.add_argument("trial", type=Path)
    _common_trial_args(bench)
    bench.add_argument("--steps", type=positive_int, default=20, help="timed steps (default 20)")
    bench.add_argument(
        "--warmup", type=non_negative_int, default=5, help="untimed steps first (default 5)"
    )
    bench.add_argument(
        "--pipeline",
        action="store_true",
        help="also time real iterations (cache, patches, augmentation) against the pure step",
    )
    bench.add_argument(
        "--inference",
        action="store_true",
        help="instead: cases/minute of sliding-window prediction on one synthetic case",
    )
    bench.add_argument(
        "--shape",
        type=positive_int,
        nargs=3,
        help="--inference case shape (default 240 240 155, a BraTS volume)",
    )
    bench.add_argument("--cases", type=positive_int, help="--inference: cases timed (default 1)")
    bench.add_argument("--tta", action="store_true", help="--inference: with mirroring TTA")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(handler=_bench)


def _common_trial_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, help="dataset directory (default: synthetic cases)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override device")


def load_for_cli(args: argparse.Namespace):  # -> TrialConfig (import kept lazy)
    """The trial YAML with the command-line overrides applied, validated."""
    from trainables.config.dotted import apply_overrides
    from trainables.config.trial import load_trial_config, parse_trial_config
    from trainables.engine.smoke import smoke_config

    cfg = load_trial_config(args.trial)
    given = {
        "data.root": str(args.data.resolve()) if getattr(args, "data", None) else None,
        "device": getattr(args, "device", None),
        "train.epochs": getattr(args, "epochs", None),
    }
    overrides = {path: value for path, value in given.items() if value is not None}
    cfg = parse_trial_config(apply_overrides(cfg.model_dump(mode="json"), overrides), args.trial)
    return smoke_config(cfg) if getattr(args, "smoke", False) else cfg


def _train(args: argparse.Namespace) -> int:
    from trainables.engine.train import train_trial

    cfg = load_for_cli(args)
    if args.checkpoint_dir is not None:  # before training, not after it
        writable_folder(args.checkpoint_dir, "--checkpoint-dir")
    progress(
        f"trial {cfg.name}: model {cfg.model.kind}, loss {cfg.loss.kind}, "
        f"{cfg.train.epochs} epochs x {cfg.train.iterations_per_epoch} iterations"
    )
    result = train_trial(cfg, progress=progress, checkpoint_dir=args.checkpoint_dir)
    history = [
        {k: v for k, v in m.items() if k in ("epoch", "train/loss", "val/loss", "val/dice_mean")}
        for m in result.history
    ]
    print_json(
        {
            "trial": cfg.name,
            "best_epoch": result.best_epoch,
            "final": result.final,
            "history": history,
            "left_out": result.left_out,
        }
    )
    if result.left_out:  # trained on the others, but the data had bad input: say it again
        progress(f"{len(result.left_out)} case(s) of the data were left out (bad input):")
        for message in result.left_out:
            progress(f"  {message}")
        return 2
    return 0


def _check_bench_flags(args: argparse.Namespace) -> None:
    """Refuse a flag the chosen benchmark would ignore: the user meant something else."""
    from trainables.errors import InputError

    if args.inference:
        unused = _given({"--pipeline": args.pipeline, "--data": args.data})
        if unused:
            raise InputError(
                f"{' and '.join(unused)} do(es) not apply to --inference (it times one "
                "synthetic case of --shape)"
            )
        return
    unused = _given({"--shape": args.shape, "--cases": args.cases, "--tta": args.tta})
    if unused:
        raise InputError(f"{', '.join(unused)} apply only with --inference")
    if args.data and not args.pipeline:
        raise InputError(
            "--data is read only with --pipeline (the step benchmark times random patches)"
        )


def _given(flags: dict[str, object]) -> list[str]:
    """The flags of ``flags`` (name -> parsed value) that were given on the command line."""
    return [flag for flag, value in flags.items() if value]


def _bench(args: argparse.Namespace) -> int:
    from trainables.engine.bench import benchmark_pipeline, benchmark_step

    _check_bench_flags(args)
    cfg = load_for_cli(args)
    if args.inference:
        from trainables.engine.bench_inference import benchmark_inference

        shape = args.shape or (240, 240, 155)
        result = benchmark_inference(cfg, shape, args.cases or 1, args.tta, progress)
    else:
        bench = benchmark_pipeline if args.pipeline else benchmark_step
        result = bench(cfg, steps=args.steps, warmup=args.warmup, progress=progress)
    if args.json:
        print_json(result)
    else:
        for key, value in result.items():
            print(f"{key:28s} {value}")
    return 0
