"""``ablate predict MODEL INPUT_DIR --out DIR``: label maps from a checkpoint, run, sweep winner,
cell ensemble or registered model (see :mod:`orchestrator.models`).

Exit codes: 0 every case written; 2 bad input (nothing written) or some cases not predicted
(each named with its problem; the others are written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.commands.common import print_json, progress

EXIT_BAD_INPUT = 2
MODEL_HELP = (
    "best.pt checkpoint, MLflow run id, sweep name (its winner), SWEEP:CELL (the cell's "
    "finished runs ensembled) or models:/NAME@ALIAS"
)


def register(verbs: argparse._SubParsersAction) -> None:
    """Add ``predict`` to the ``ablate`` parser."""
    predict = verbs.add_parser("predict", help="segment new images with a trained model")
    predict.add_argument("model", help=MODEL_HELP)
    predict.add_argument("input_dir", type=Path, help="images in any supported layout")
    predict.add_argument("--out", type=Path, required=True, help="folder for <case>.nii.gz")
    predict.add_argument("--tta", action="store_true", help="average mirrored predictions")
    predict.add_argument("--overwrite", action="store_true", help="replace files in --out")
    predict.add_argument(
        "--no-postprocess",
        action="store_true",
        help="write the raw label maps, without the trial's validation.test_postprocess",
    )
    predict.add_argument(
        "--tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )
    predict.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1...")
    predict.add_argument(
        "--label-scheme",
        default="auto",
        help="label values to write: auto (the input layout's), brats2021, brats2023, ...",
    )
    predict.add_argument("--json", action="store_true", help="summary as JSON on stdout")
    predict.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> int:
    from orchestrator.models import resolve_model
    from trainables.data.layouts import dataset_layout
    from trainables.engine.predict import build_predictor
    from trainables.engine.predict_cases import check_output, predict_directory

    # before the model is fetched and loaded: a full --out, or an input folder that is no
    # dataset, is refused at once
    check_output(args.out, Path(args.input_dir).expanduser().absolute(), args.overwrite, False)
    dataset_layout(args.input_dir)
    checkpoints = resolve_model(args.model, args.tracking_uri)
    predictor = build_predictor(checkpoints, args.device, not args.no_postprocess)
    progress(f"model: {predictor.describe()}{', with mirroring TTA' if args.tta else ''}")
    sources = [member.source for member in predictor.members]  # which run(s) MODEL resolved to
    progress(f"from {sources[0]}" if len(sources) == 1 else f"from {'; '.join(sources)}")
    report = predict_directory(
        predictor, args.input_dir, args.out, args.tta, args.overwrite, args.label_scheme, progress
    )
    summary = {
        "out": str(report.out_dir),
        "model": sources,
        "label_scheme": report.label_scheme,
        "written": [str(p) for p in report.written],
        "seconds_per_case": sum(report.seconds) / max(1, len(report.seconds)),
        "problems": [{"case_id": p.case_id, "problem": str(p)} for p in report.problems],
    }
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {len(report.written)} label maps ({report.label_scheme}) to {report.out_dir}")
    for problem in report.problems:
        print(f"not predicted: {problem.case_id}: {problem}", file=sys.stderr)
    return EXIT_BAD_INPUT if report.problems else 0
