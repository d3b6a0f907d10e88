"""Shared helpers for the orchestrator tests: tiny trials, space files, a real SQLite MLflow.

Creating an MLflow SQLite database runs its schema migrations (seconds), so one empty database
is made once per MLflow version (under a lock, shared by concurrent test runs) and copied for
each test: every test still gets its own real store.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
TINY_TRIAL = REPO / "search_spaces" / "base" / "tiny.yaml"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there


def tiny_trial(folder: Path, **sections: dict[str, Any]) -> Path:
    """``folder/trial.yaml``: the repo's tiny trial shrunk further (2 epochs of 2 steps,
    4 synthetic 32x32x32 cases, no HD95), with ``sections`` merged in; returns its path."""
    data = yaml.safe_load(TINY_TRIAL.read_text())
    data["data"]["synthetic"] = {"cases": 4, "shape": [32, 32, 32], "seed": 0}
    data["data"]["split"] = {"kind": "holdout", "fractions": [0.5, 0.5, 0.0]}
    data["train"].update(epochs=2, iterations_per_epoch=2)
    data["validation"] = {"max_cases": 1, "hd95": False}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = folder / "trial.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_space(folder: Path, text: str, name: str = "space.yaml") -> Path:
    """Write a space file (YAML text) next to the tiny trial and return its path."""
    if not (folder / "trial.yaml").exists():
        tiny_trial(folder)
    path = folder / name
    path.write_text(text)
    return path


def mlflow_uri(folder: Path) -> str:
    """A fresh, real SQLite MLflow store in ``folder`` (a copy of a migrated empty one)."""
    import mlflow

    cache = Path(tempfile.gettempdir()) / "ablate-test-mlflow"
    cache.mkdir(exist_ok=True)
    template = cache / f"empty-{mlflow.__version__}.db"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not template.exists():
            from mlflow.tracking import MlflowClient

            partial = cache / f"partial-{mlflow.__version__}.db"
            partial.unlink(missing_ok=True)
            MlflowClient(f"sqlite:///{partial}").search_experiments(max_results=1)
            partial.rename(template)
    target = folder / "mlflow.db"
    shutil.copy(template, target)
    return f"sqlite:///{target}"


def log_sweep(uri: str, name: str, cells: dict[str, list[float]], **kwargs: Any) -> tuple[Any, str]:
    """A sweep logged with the tracking helpers, as the sweep callbacks would: one parent run,
    one child per (cell, seed) whose ``val/dice_mean`` climbs over 3 epochs to the given best
    value. Returns (client, parent run id).

    Keyword args: ``split`` (split hash per cell, default the same for all), ``failed`` (cell ->
    outcome of one extra failed run), ``paper`` (the parent's paper.json payload).
    """
    from orchestrator import provenance, tracking

    client = tracking.connect(uri)
    experiment = tracking.ensure_experiment(client, name)
    tags = provenance.parent_tags({"ablate.metric": "val/dice_mean", "ablate.mode": "max"})
    parent = tracking.open_parent_run(client, experiment, name, f"/ray/{name}", tags)
    for cell, values in cells.items():
        for seed, best in enumerate(values):
            split = kwargs.get("split", {}).get(cell, "split-1")
            _child(client, experiment, parent, cell, seed, best, split)
    for cell, outcome in kwargs.get("failed", {}).items():
        run_id, _ = tracking.open_child_run(
            client, experiment, parent, f"{cell}/seed9", {"ablate.cell": cell}
        )
        tracking.set_tags(client, run_id, {"ablate.outcome": outcome, "ablate.seed": "9"})
        client.set_terminated(run_id, status="FAILED")
    if "paper" in kwargs:
        tracking.log_json(client, parent, kwargs["paper"], "paper.json")
    client.set_terminated(parent, status="FINISHED")
    return client, parent


def _child(
    client: Any, experiment: str, parent: str, cell: str, seed: int, best: float, split: str
) -> str:
    from orchestrator import tracking

    tags = {"ablate.cell": cell, "ablate.seed": str(seed), "ablate.split_hash": split}
    run_id, _ = tracking.open_child_run(client, experiment, parent, f"{cell}/seed{seed}", tags)
    for epoch, fraction in enumerate((0.5, 0.9, 1.0), start=1):
        metrics = {"val/dice_mean": best * fraction, "val/dice_wt": best * fraction + 0.05}
        metrics |= {"val/dice_tc": best * fraction, "val/dice_et": best * fraction - 0.05}
        metrics |= {"perf/epoch_s": 10.0 + seed, "perf/peak_gpu_mem_gib": 2.0 + seed / 10}
        tracking.log_metrics(client, run_id, metrics, epoch)
    tracking.log_metrics(
        client, run_id, tracking.summarize(client, run_id, "val/dice_mean", "max"), 0
    )
    tracking.set_tags(client, run_id, {"ablate.outcome": "finished"})
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def run_validate(path: Path, capsys: Any, *extra: str) -> tuple[int, str]:
    """``ablate validate PATH EXTRA...``: its exit code and what it wrote to stderr."""
    from orchestrator.cli import main

    code = main(["validate", str(path), *extra])
    return code, capsys.readouterr().err
