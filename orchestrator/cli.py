"""The ``ablate`` command line.

Exit codes: 0 success, 2 bad input (the message names the file or field; also a path the
system refuses: unwritable, not a folder, full disk), 1 anything else,
130 interrupted, 141 output pipe closed by its reader. Verb groups live in
:mod:`orchestrator.commands`; heavy imports (torch, ray, mlflow) happen inside the handlers so
``ablate --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from orchestrator.commands import data, predict, sweep, test_eval, trial
from orchestrator.tracking_errors import lost_server_message, read_only_store_message
from trainables.errors import InputError

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a command killed by it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ablate",
        description="Ablation studies for 3D medical segmentation as Ray Tune sweeps in MLflow.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    data.register(verbs)
    trial.register(verbs)
    sweep.register(verbs)
    test_eval.register(verbs)
    predict.register(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or EXIT_OK)
    except InputError as err:
        print(f"ablate: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("ablate: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader left (`ablate validate x.yaml | head -1`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit flush
        return EXIT_BROKEN_PIPE
    except Exception as err:  # anything unexpected: say what, traceback on request
        store = lost_server_message(err) or read_only_store_message(err)
        if store is not None:  # the tracking server went away, or the store is read-only
            print(f"ablate: error: {store}", file=sys.stderr)
            return EXIT_BAD_INPUT
        memory = _out_of_memory(err)
        if memory is not None:  # the configuration or input is too large for this machine
            print(f"ablate: error: {memory}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if isinstance(err, OSError) and err.filename:  # a path the user gave or controls
            where = f"{err.filename} -> {err.filename2}" if err.filename2 else err.filename
            print(f"ablate: error: {where}: {err.strerror or err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if args.debug:
            traceback.print_exc()
        print(f"ablate: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_ERROR


def _out_of_memory(err: BaseException) -> str | None:
    """The message for an out-of-memory failure (a trial's, or a raw one from torch or numpy
    in bench, predict, test), else None. torch is consulted only when already loaded."""
    if "torch" not in sys.modules and not isinstance(err, MemoryError):
        return None
    from trainables.engine.memory import allocation_figure, is_out_of_memory
    from trainables.engine.runner import TrialOutOfMemory

    if isinstance(err, TrialOutOfMemory):  # it says what did not fit, and where
        return str(err)
    if not is_out_of_memory(err):
        return None
    return (
        f"out of memory: {allocation_figure(err)}; lower the batch size, the patch or the "
        "volume size (--shape)"
    )


if __name__ == "__main__":
    sys.exit(main())
