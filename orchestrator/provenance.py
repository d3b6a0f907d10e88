"""What produced a sweep's results: ablate's version and commit, the study folder's commit and
the library versions, as the parent run's tags (see :mod:`orchestrator.tracking`)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def parent_tags(plan_tags: dict[str, str]) -> dict[str, str]:
    """Tags of a sweep's parent run: the caller's plus code and library versions."""
    import mlflow
    import ray
    import torch

    return {
        "ablate.kind": "sweep",
        "ablate.version": ablate_version(),
        "ablate.code_commit": git_commit(Path(__file__).resolve().parent.parent),
        "ablate.ray_version": ray.__version__,
        "ablate.torch_version": torch.__version__,
        "ablate.mlflow_version": mlflow.__version__,
        **plan_tags,
    }


def ablate_version() -> str:
    """The installed ablate distribution's version (``unknown`` when run from an uninstalled
    source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ablate")
    except PackageNotFoundError:
        return "unknown"


def git_commit(folder: Path) -> str:
    """The commit checked out in ``folder``, with ``-dirty`` when tracked files differ from it
    (the results then came from code no commit holds); ``unknown`` outside git or before the
    first commit (an installed wheel's folder, say)."""
    head = _git(folder, "rev-parse", "HEAD")
    if head is None:
        return "unknown"
    dirty = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return f"{head}-dirty" if dirty else head


def _git(folder: Path, *args: str) -> str | None:
    """``git args`` in ``folder``: its stripped output, or None when git fails or is missing."""
    try:
        out = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
