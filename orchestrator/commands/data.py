"""``ablate data synth | inspect | plan | prepare`` and ``ablate evaluate``.

A directory with some bad cases is still handled case by case: the good cases are inspected,
prepared or evaluated, the bad ones are reported naming their files, and the exit code is 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.commands.common import positive_float, positive_int, print_json, progress

EXIT_BAD_INPUT = 2


def register(verbs: argparse._SubParsersAction) -> None:
    data = verbs.add_parser("data", help="synthesize, inspect and prepare datasets")
    sub = data.add_subparsers(dest="data_verb", required=True, metavar="DATA_VERB")

    synth = sub.add_parser("synth", help="write BraTS-2021-layout synthetic NIfTI cases")
    synth.add_argument("--out", type=Path, required=True, help="output directory")
    synth.add_argument("--cases", type=int, default=10, help="number of cases (default 10)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=(64, 64, 48),
        metavar=("X", "Y", "Z"),
        help="volume shape in voxels, NIfTI axis order (default 64 64 48)",
    )
    synth.add_argument(
        "--modality",
        choices=["mri", "ct"],
        default="mri",
        help="mri: BraTS-2021 layout, 4 modalities, tumours; ct: MSD layout, haemorrhage",
    )
    synth.set_defaults(handler=_synth)

    inspect = sub.add_parser("inspect", help="list cases, modalities, shapes, labels, problems")
    inspect.add_argument("dir", type=Path)
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.add_argument("--workers", type=positive_int, default=1, help="cases read at once")
    inspect.set_defaults(handler=_inspect)

    plan = sub.add_parser(
        "plan", help="nnU-Net's plan: target spacing, patch, network and batch from the data"
    )
    plan.add_argument("dir", type=Path)
    plan.add_argument(
        "--configuration",
        choices=["3d_fullres", "3d_lowres", "2d"],
        default="3d_fullres",
        help="3d_fullres (volume model, default), 3d_lowres (the volume model at nnU-Net's "
        "coarser spacing, where it makes one) or 2d (slice model)",
    )
    plan.add_argument(
        "--gpu-memory-gb",
        type=positive_float,
        default=8.0,
        help="GPU memory to plan the patch and batch for (nnU-Net's default 8)",
    )
    plan.add_argument("--label-scheme", default="auto")
    plan.add_argument("--workers", type=positive_int, default=1, help="cases read at once")
    plan.add_argument(
        "--base", type=Path, help="trial YAML to apply the plan to; prints the whole trial config"
    )
    plan.add_argument("--out", type=Path, help="write the YAML here instead of printing it")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.set_defaults(handler=_plan)

    prepare = sub.add_parser("prepare", help="preprocess once into a memory-mapped cache")
    prepare.add_argument("dir", type=Path)
    prepare.add_argument("--out", type=Path, required=True, help="cache directory")
    prepare.add_argument("--config", type=Path, help="trial YAML whose data.preprocess to use")
    prepare.add_argument("--label-scheme", default="auto")
    prepare.add_argument("--workers", type=positive_int, default=1)
    prepare.set_defaults(handler=_prepare)

    evaluate = verbs.add_parser("evaluate", help="BraTS metrics of NIfTI predictions per case")
    evaluate.add_argument("pred_dir", type=Path, help="<case_id>.nii.gz label maps")
    evaluate.add_argument("ref_dir", type=Path, help="reference dataset, any supported layout")
    evaluate.add_argument("--tolerance-mm", type=float, default=1.0, help="surface-Dice tolerance")
    evaluate.add_argument(
        "--label-scheme",
        default="auto",
        help="the reference's label values: auto (its layout's or dataset.json's), brats2021, ...",
    )
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument(
        "--lesion-wise",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="BraTS 2023 lesion-wise Dice and HD95 (default on; --no-lesion-wise skips them)",
    )
    evaluate.set_defaults(handler=_evaluate)


def _synth(args: argparse.Namespace) -> int:
    from trainables.data.synth import synthesize_dataset
    from trainables.data.synth_ct import synthesize_ct_dataset

    def counter(done: int, total: int, name: str) -> None:
        progress(f"synth {done}/{total} {name}")

    generate = synthesize_ct_dataset if args.modality == "ct" else synthesize_dataset
    written = generate(args.out, args.cases, args.seed, tuple(args.shape), progress=counter)
    print(f"wrote {len(written)} {args.modality.upper()} cases to {args.out}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from trainables.data.inspect import inspect_dataset

    def counter(done: int, total: int, name: str) -> None:
        progress(f"inspect {done}/{total} {name}")

    report = inspect_dataset(args.dir, None if args.json else counter, workers=args.workers)
    print_json(report.to_dict()) if args.json else print(report.format_table())
    return EXIT_BAD_INPUT if report.problems else 0


def _plan(args: argparse.Namespace) -> int:
    from trainables.data.inspect import inspect_dataset
    from trainables.planning.render import (
        nested,
        plan_dict,
        plan_inspected,
        plan_overrides,
        plan_summary,
        plan_yaml,
        planned_trial,
    )

    def counter(done: int, total: int, name: str) -> None:
        progress(f"plan: read {done}/{total} {name}")

    report = inspect_dataset(args.dir, counter, args.label_scheme, args.workers)
    for case in report.problems:  # planned without them; the exit code says so
        where = f"{case.problem_file}: " if case.problem_file else ""
        print(f"skipped {case.case_id}: {where}{case.problem}", file=sys.stderr)
    plan = plan_inspected(report, args.gpu_memory_gb)
    if args.json:
        print_json(plan_dict(plan, args.configuration))
        return EXIT_BAD_INPUT if report.problems else 0
    lines = plan_summary(plan, args.configuration, args.dir)
    if args.base:
        settings = planned_trial(args.base, plan, args.configuration)
        lines.append(f"{args.base} with the plan applied (validated)")
    else:
        settings = nested(plan_overrides(plan, args.configuration))
        lines.append("put these under a study's `base:`, or give --base TRIAL.yaml")
    text = plan_yaml(lines, settings)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return EXIT_BAD_INPUT if report.problems else 0


def _prepare(args: argparse.Namespace) -> int:
    from trainables.config.trial import load_trial_config
    from trainables.data.cache import prepare
    from trainables.data.preprocess import PreprocessConfig

    cfg = load_trial_config(args.config).data.preprocess if args.config else PreprocessConfig()

    def counter(done: int, total: int, name: str) -> None:
        progress(f"prepare {done}/{total} {name}")

    manifest = prepare(args.dir, args.out, cfg, args.label_scheme, counter, args.workers)
    prepared, skipped = len(manifest.cases), manifest.skipped
    print(f"prepared {prepared} cases into {args.out} (preprocessing {cfg.fingerprint()})")
    for problem in skipped:
        print(f"skipped: {problem.message}", file=sys.stderr)
    return EXIT_BAD_INPUT if skipped else 0


def _evaluate(args: argparse.Namespace) -> int:
    from trainables.data.evaluate import evaluate_predictions

    def counter(done: int, total: int, case_id: str) -> None:  # stderr: --json stays clean
        progress(f"evaluate {done}/{total} {case_id}")

    report = evaluate_predictions(
        args.pred_dir,
        args.ref_dir,
        args.tolerance_mm,
        progress=counter,
        lesion_wise=args.lesion_wise,
        label_scheme=args.label_scheme,
    )
    print_json(report.to_dict()) if args.json else print(report.format_table())
    return EXIT_BAD_INPUT if report.problems else 0
