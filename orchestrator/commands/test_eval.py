"""``ablate test``: evaluate a finished sweep's runs on held-out test cases (or an external set)."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.commands.common import progress

URI_HELP = "MLflow tracking URI (default $MLFLOW_TRACKING_URI, else ./mlflow.db)"
EXIT_BAD_INPUT = 2


def register(verbs: argparse._SubParsersAction) -> None:
    """Add ``test`` to the ``ablate`` parser."""
    test = verbs.add_parser(
        "test",
        help="evaluate every finished run's best model on the split's test cases (or --data)",
    )
    test.add_argument("sweep", help="sweep name (MLflow experiment) or parent run id")
    test.add_argument(
        "--data",
        type=Path,
        help="external test set (any layout): all its labelled cases, logged as test_ext/",
    )
    test.add_argument("--tracking-uri", help=URI_HELP)
    redo = test.add_mutually_exclusive_group()  # opposite answers to "tested already?"
    redo.add_argument(
        "--overwrite", action="store_true", help="evaluate runs that already have test metrics"
    )
    redo.add_argument(
        "--missing",
        action="store_true",
        help="test only the runs without test metrics (continue an interrupted `ablate test`)",
    )
    test.set_defaults(handler=_test)


def _test(args: argparse.Namespace) -> int:
    from orchestrator import tracking
    from orchestrator.test_runs import evaluate_sweep

    client = tracking.connect(args.tracking_uri or tracking.default_tracking_uri(), existing=True)
    report = evaluate_sweep(
        client, args.sweep, args.data, args.overwrite, progress, missing_only=args.missing
    )
    text = (
        f"{len(report.tested)} runs tested ({report.prefix}/ metrics, per_case/{report.prefix}.csv)"
    )
    if report.already:
        text += f"; {report.already} tested before, left as they were"
    if report.unfinished:
        text += f"; {report.unfinished} runs not finished, not tested"
    progress(text)
    if report.no_test_cases == report.already > 0 and not args.data:
        progress(
            "nothing to test: the sweep's split holds no test cases (data.split's test fraction "
            "is 0); test the runs on a labelled set kept apart with --data DIR"
        )
    elif report.already and not report.tested and not report.failed:
        why = (
            f"on {args.data}"
            if args.data
            else "(the sweep tests each run's selected weights at its last epoch)"
        )
        progress(
            f"nothing to test: every finished run already has {report.prefix}/ metrics {why}; "
            "--overwrite evaluates again"
        )
    if report.failed:
        progress(f"{len(report.failed)} runs could not be tested:")
        for line in report.failed:
            progress(f"  {line}")
    if report.left_out:  # named as they were found; the count again where the run ends
        progress(f"{len(report.left_out)} case(s) of {args.data} were left out (bad input)")
    return EXIT_BAD_INPUT if report.failed or report.left_out else 0
