"""``ablate validate / sweep / winners / report``: studies as Ray Tune sweeps tracked in MLflow."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.commands.common import model_name, positive_int, print_json, progress
from orchestrator.preflight import split_sweep_folder

if TYPE_CHECKING:
    from orchestrator.space import SpaceFile
    from orchestrator.sweep import SweepResult

EXIT_INTERRUPTED = 130
URI_HELP = "MLflow tracking URI (default $MLFLOW_TRACKING_URI, else ./mlflow.db)"


def register(verbs: argparse._SubParsersAction) -> None:
    """Add ``validate``, ``sweep``, ``winners`` and ``report`` to the ``ablate`` parser."""
    _add_validate(verbs)
    _add_sweep(verbs)
    _add_results(verbs)


def _add_validate(verbs: argparse._SubParsersAction) -> None:
    validate = verbs.add_parser("validate", help="check a search-space file and list its trials")
    validate.add_argument("space", type=Path, help="search-space YAML (see search_spaces/)")
    validate.add_argument("--data", type=Path, help="dataset directory the sweep will use")
    validate.add_argument("--smoke", action="store_true", help="list the shrunk --smoke trials")
    _max_trials_arg(validate)
    validate.add_argument("--tracking-uri", help="also check that this MLflow store answers")
    validate.add_argument(
        "--address",
        help="Ray cluster the sweep will join (skips the local GPU check; so does $RAY_ADDRESS)",
    )
    validate.add_argument(
        "--json", action="store_true", help="the trials as JSON, each with its resolved config"
    )
    validate.set_defaults(handler=_validate)


def _add_sweep(verbs: argparse._SubParsersAction) -> None:
    sweep = verbs.add_parser("sweep", help="run a search-space file as a Ray Tune sweep")
    sweep.add_argument("space", type=Path)
    sweep.add_argument("--data", type=Path, help="dataset directory (default: synthetic cases)")
    sweep.add_argument("--tracking-uri", help=URI_HELP)
    sweep.add_argument(
        "--storage", default="ray_results", help="Tune results folder (./ray_results)"
    )
    sweep.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    sweep.add_argument("--smoke", action="store_true", help="shrink every trial for a quick check")
    _max_trials_arg(sweep)
    sweep.add_argument(
        "--address",
        help="Ray cluster to join (default $RAY_ADDRESS, else the cluster the last `ray start` "
        "on this machine recorded, else a new local Ray)",
    )
    sweep.add_argument("--name", help="sweep name (default: the space's name, -smoke with --smoke)")
    sweep.add_argument("--verbose", action="store_true", help="show Ray's own logs and tables")
    sweep.set_defaults(handler=_sweep)


def _add_results(verbs: argparse._SubParsersAction) -> None:
    winners = verbs.add_parser("winners", help="the ablation table: mean and 95%% CI per cell")
    report = verbs.add_parser("report", help="tables and plots as Markdown or HTML, in MLflow")
    report.add_argument("--out", type=Path, required=True, help="report file: .md or .html")
    for parser in (winners, report):
        parser.add_argument("sweep", help="sweep name (MLflow experiment) or parent run id")
        parser.add_argument("--tracking-uri", help=URI_HELP)
        parser.add_argument(
            "--alpha", type=float, default=0.05, help="significance of tied/worse, in (0, 1)"
        )
        parser.add_argument(
            "--correction",
            default="holm",
            help="multiplicity correction of the p-values against the best: holm (default), none",
        )
    winners.add_argument("--json", action="store_true")
    winners.add_argument(
        "--register",
        metavar="NAME",
        type=model_name,
        help="log the winner as an MLflow pytorch model, register it as NAME, alias champion",
    )
    winners.set_defaults(handler=_winners)
    report.set_defaults(handler=_report)


def _validate(args: argparse.Namespace) -> int:
    from orchestrator import tracking
    from orchestrator.checks import check_data_dir
    from orchestrator.expand import plan_sweep
    from orchestrator.plan_text import describe_plan
    from orchestrator.ray_cluster import local_gpu_shortfall
    from orchestrator.sweep import data_label_scheme
    from orchestrator.sweep_data import check_config_roots

    data = args.data.resolve() if args.data else None
    plan = plan_sweep(args.space, data, args.smoke, args.max_trials)
    joined = args.address is not None or bool(os.environ.get("RAY_ADDRESS"))
    if args.address:  # as `ablate sweep` checks it: a head that does not answer is refused
        from orchestrator.preflight import check_ray_address

        check_ray_address(args.address, "--address")
    data_lines = []
    if args.data:
        data_lines = check_data_dir(args.data.resolve(), data_label_scheme(plan), joined)
    else:
        data_lines = check_config_roots(plan, joined)
    missing = None if joined else (local_gpu_shortfall(plan) or _cpu_shortfall(plan.space))
    if args.tracking_uri:
        tracking.connect(args.tracking_uri)
    summary, rows = describe_plan(plan)
    note = _where_to_run(args.space, missing) if missing else None
    if args.json:
        print_json({"summary": summary, "trials": rows, "note": note, "data": data_lines})
        return 0
    print(summary)
    for line in data_lines:
        print(line)
    for row in rows:
        overrides = " ".join(f"{k}={v}" for k, v in row["overrides"].items())
        print(f"  {row['key']:<40} {overrides}")
    if note:
        print(note)
    return 0


def _cpu_shortfall(space: SpaceFile) -> str | None:
    """More CPUs per trial than this machine has (a local Ray has os.cpu_count() of them, and
    ``ablate sweep`` refuses such a request once Ray is up)."""
    have, wanted = os.cpu_count() or 1, space.resources.cpu
    if wanted <= have:
        return None
    return f"resources.cpu: {wanted:g} CPUs per trial requested, but this machine has {have}"


def _where_to_run(space: Path, missing: str) -> str:
    """The validation note of a valid study this machine cannot run as written."""
    return (
        f"valid, but not runnable here as written: {missing}.\n"
        f"  on this machine (tiny CPU trials, one seed per cell): ablate sweep {space} --smoke\n"
        f"  on a Ray cluster that has them: ablate sweep {space} --address auto "
        "(see docs/cluster.md)"
    )


def _max_trials_arg(parser: argparse.ArgumentParser) -> None:
    from orchestrator.space import MAX_TRIALS

    parser.add_argument(
        "--max-trials",
        type=positive_int,
        default=MAX_TRIALS,
        help=f"refuse a study of more trials than this (default {MAX_TRIALS})",
    )


def _sweep(args: argparse.Namespace) -> int:
    from orchestrator.mlflow_ui import browse_lines
    from orchestrator.sweep import SweepOptions, run_sweep

    opts = SweepOptions(
        space=args.space,
        data=args.data,
        tracking_uri=args.tracking_uri,
        storage=args.storage,
        resume=args.resume,
        smoke=args.smoke,
        address=args.address,
        name=args.name,
        verbose=args.verbose,
        max_trials=args.max_trials,
    )
    result = run_sweep(opts)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(result.counts.items()))
    if result.restarted:
        counts += f" ({result.restarted} restarted after a failure: ablate.attempts on their runs)"
    progress(f"sweep {result.name}: {counts}; Tune state in {result.path}")
    progress(f"MLflow parent run {result.parent_run_id} in {result.tracking_uri}")
    for line in browse_lines(result.tracking_uri, result.experiment_id):
        progress(line)
    return _say_outcome(args, result)


def _say_outcome(args: argparse.Namespace, result: SweepResult) -> int:
    """What the user must know at the end (unsent results, an interruption, trials without a
    result, cases left out) on stderr; the exit code."""
    if result.unsent_calls:
        print(
            f"ablate: MLflow at {result.tracking_uri} stopped answering; "
            f"{result.unsent_calls} tracking calls were not sent. Tune kept every result in "
            f"{result.path}: once the server answers, {_resume_command(args, result)} sends "
            "them (finished trials are not trained again)",
            file=sys.stderr,
        )
    if result.interrupted:
        print(f"ablate: interrupted; resume with: {_resume_command(args, result)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result.problems:
        total = sum(result.counts.values())
        print(
            f"ablate: {len(result.problems)} of {total} trials gave no result to rank (the others'"
            f" results are kept; `ablate winners {result.name}` ranks them):",
            file=sys.stderr,
        )
        for problem in result.problems:
            print(f"  {problem.key}: {problem.outcome}: {problem.message}", file=sys.stderr)
    if result.left_out:
        print(
            f"ablate: {len(result.left_out)} case(s) of the data were left out of every trial "
            "(the results are from the others):",
            file=sys.stderr,
        )
        for message in result.left_out:
            print(f"  {message}", file=sys.stderr)
    return result.exit_code


def _resume_command(args: argparse.Namespace, result: SweepResult) -> str:
    """The command that continues this sweep: the same study, name, data and shrinking."""
    storage = split_sweep_folder(result.path)[0]
    words = ["ablate", "sweep", str(args.space), "--resume", "--name", result.name]
    words += ["--storage", storage]
    if args.data:
        words += ["--data", str(args.data.resolve())]
    if args.address:
        words += ["--address", args.address]
    if args.smoke:
        words.append("--smoke")
    return shlex.join(words)


def _winners(args: argparse.Namespace) -> int:
    from orchestrator import tracking
    from orchestrator.winners import find_winners
    from orchestrator.winners_format import format_table

    client = tracking.connect(args.tracking_uri or tracking.default_tracking_uri(), existing=True)
    table = find_winners(client, args.sweep, alpha=args.alpha, correction=args.correction, tag=True)
    if args.json:
        print_json(table.to_json())
    else:
        print(format_table(table))
    if args.register:
        _register(client, table.winner_run_id, args.register, args.sweep)
    return 0


def _register(client: object, run_id: str | None, name: str, sweep: str) -> None:
    from orchestrator.models import CHAMPION, register_winner
    from trainables.errors import InputError

    if run_id is None:
        raise InputError(f"sweep {sweep!r} has no winner to register (no finished run)")
    version = register_winner(client, run_id, name)
    progress(f"registered run {run_id} as models:/{name}/{version}; models:/{name}@{CHAMPION}")


def _report(args: argparse.Namespace) -> int:
    from orchestrator import tracking
    from orchestrator.report import check_report_path, write_report
    from orchestrator.winners import find_winners

    check_report_path(args.out)  # before find_winners tags the winner in MLflow
    client = tracking.connect(args.tracking_uri or tracking.default_tracking_uri(), existing=True)
    table = find_winners(client, args.sweep, alpha=args.alpha, correction=args.correction, tag=True)
    written = write_report(client, table, args.out)
    beside = f", {len(written) - 1} PNGs beside it" if len(written) > 1 else " (self-contained)"
    progress(f"report written to {written[0]}{beside}; logged to the parent run")
    return 0
