"""Small helpers shared by the verb modules: progress lines and JSON output."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

_START = time.monotonic()


def progress(message: str) -> None:
    """One progress line on stderr, with the elapsed time, so stdout stays machine-readable."""
    print(f"[{time.monotonic() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


def print_json(payload: Any) -> None:
    """JSON on stdout; NaN/inf become null so every JSON parser accepts it."""
    print(json.dumps(_finite(payload), indent=2, sort_keys=False))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1 (argparse turns the error into exit 2)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse ``type``: an integer >= 0."""
    return _int_at_least(text, 0)


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def _int_at_least(text: str, low: int) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
    return value


def model_name(text: str) -> str:
    """An argparse ``type``: a name the MLflow Model Registry accepts (not empty, no ``/`` or
    ``:``, not ``.`` or ``..``), checked before anything is logged."""
    import argparse

    if not text.strip():
        raise argparse.ArgumentTypeError("a registered model needs a name, got an empty one")
    bad = [c for c in "/:" if c in text]
    if bad:
        raise argparse.ArgumentTypeError(
            f"{text!r} contains {' and '.join(repr(c) for c in bad)}: MLflow model names cannot "
            "contain '/' or ':' (e.g. tumour-seg)"
        )
    if text.strip() in (".", ".."):
        raise argparse.ArgumentTypeError(f"{text!r} is a path part, not a name (e.g. tumour-seg)")
    return text


def writable_folder(path: Path, option: str) -> Path:
    """``path`` created (with its parents) and shown to take a file, before the work that
    will write there starts; an InputError naming ``option`` and the path otherwise."""
    import tempfile

    from trainables.errors import InputError

    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ablate-write-check-"):
            pass
    except FileExistsError:
        raise InputError(f"{option}: exists and is not a folder", folder) from None
    except OSError as err:
        raise InputError(f"{option}: cannot write here ({err.strerror})", folder) from None
    return folder
