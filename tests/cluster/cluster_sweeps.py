"""Sweeps for the cluster tests: the space file, the ``ablate sweep`` process, and readers of
what it left in Tune's storage, in MLflow and in Ray's actor table.

The trial is the repo's tiny trial (``search_spaces/base/tiny.yaml``) shrunk further: 4
synthetic 24^3 cases, 16^3 patches, widths 4-8-16, fp32 (fp16 autocast is slow on a CPU), two
one-sample steps per epoch: about 0.2 s of compute per epoch, so a trial's length is set by
its epoch count and the test can stop things mid-trial.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from cluster_harness import REPO, LocalCluster, MlflowServer, kill_group

TINY = REPO / "search_spaces" / "base" / "tiny.yaml"
SHRINK = {
    "device": "cpu",
    "data.synthetic": {"cases": 4, "shape": [24, 24, 24], "seed": 0},
    "data.split": {"kind": "holdout", "fractions": [0.5, 0.5, 0.0]},
    "sampling.patch_size": [16, 16, 16],
    "model.filters": [4, 8, 16],
    "model.deep_supervision": 0,
    "train.iterations_per_epoch": 2,
    "train.batch_size": 1,
    "train.precision": "fp32",
    "validation": {"max_cases": 1, "hd95": False},
}


def write_space(
    folder: Path, name: str, epochs: int, seeds: int = 2, gpu: int = 0, iterations: int = 2
) -> Path:
    """A 2-cell grid (attention on/off) x ``seeds`` of the shrunk tiny trial, 1 CPU and
    ``gpu`` GPUs each (the trial trains on the CPU: ``device: cpu``), ``iterations`` steps an
    epoch."""
    space = {
        "name": name,
        "extends": str(TINY),
        "base": {**SHRINK, "train.epochs": epochs, "train.iterations_per_epoch": iterations},
        "grid": {"model.attention": [True, False]},
        "seeds": seeds,
        "search": {"kind": "grid"},
        "scheduler": {"kind": "fifo"},
        "metric": "val/dice_mean",
        "mode": "max",
        "resources": {"cpu": 1, "gpu": gpu},
        "max_failures": 2,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


class Sweep:
    """One ``ablate sweep`` driver process against the cluster and the MLflow server."""

    def __init__(self, cluster: LocalCluster, mlflow: MlflowServer, space: Path, name: str) -> None:
        self.cluster, self.mlflow, self.space, self.name = cluster, mlflow, space, name
        self.storage = cluster.root / "ray_results"
        self.path = self.storage / name
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = cluster.root / f"sweep-{name}.log"

    def command(self, *extra: str) -> list[str]:
        command = [sys.executable, "-m", "orchestrator.cli", "sweep", str(self.space)]
        command += ["--address", self.cluster.address, "--tracking-uri", self.mlflow.uri]
        return [*command, "--storage", str(self.storage), "--name", self.name, *extra]

    def start(self, *extra: str) -> None:
        # Tune saves its experiment state at most every second (default: adaptive, >= 10 s),
        # so a driver killed by a test leaves a recent state behind.
        env = {**self.cluster.env, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command(*extra),
                cwd=self.cluster.root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self, timeout_s: float = 300.0) -> int:
        """The driver's exit code; fails the test with its log if it runs past the timeout."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            raise AssertionError(f"sweep ran over {timeout_s:.0f} s:\n{self.output()}") from None

    def run(self, *extra: str, timeout_s: float = 300.0) -> None:
        """Start, wait, and require exit code 0."""
        self.start(*extra)
        code = self.wait(timeout_s)
        assert code == 0, f"ablate sweep exited {code}:\n{self.output()}"

    def kill(self) -> None:
        """SIGKILL the driver alone (its Ray job dies with it: the owner of the trial actors)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    # ----------------------------------------------------------------- what it left behind
    def results(self) -> dict[str, list[dict[str, Any]]]:
        """``{trial key: [result, ...]}`` from each trial's ``result.json`` (one JSON a line)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for path in sorted(self.path.glob("*/result.json")):
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if rows:
                out.setdefault(rows[0]["trial_key"], []).extend(rows)
        return out

    def statuses(self) -> dict[str, str]:
        """``{trial key: Tune status}`` from the saved experiment state."""
        from ray.tune import ExperimentAnalysis

        trials = ExperimentAnalysis(str(self.path)).trials
        return {t.config["trial"]["key"]: t.status for t in trials}

    def checkpointed(self) -> set[str]:
        """Trial keys whose checkpoint the saved experiment state already names (what
        ``--resume`` restores from; a trial that reported an epoch may not be there yet)."""
        from ray.tune import ExperimentAnalysis

        trials = ExperimentAnalysis(str(self.path)).trials
        return {t.config["trial"]["key"] for t in trials if t.checkpoint is not None}

    def wait_until(self, check: Any, timeout_s: float = 180.0, what: str = "") -> Any:
        """Poll ``check()`` until it returns something truthy while the driver runs."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"sweep ended before {what}:\n{self.output()}")
            found = check()
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"no {what} after {timeout_s:.0f} s:\n{self.output()}")


def epochs_done(sweep: Sweep) -> dict[str, int]:
    """``{trial key: last reported epoch}`` of the trials that reported one (safe mid-write)."""
    done = {}
    for path in sweep.path.glob("*/result.json"):
        lines = path.read_text().splitlines()
        for line in reversed(lines):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # being written
                continue
            done[row["trial_key"]] = int(row.get("epoch", 0))
            break
    return done


def mlflow_children(uri: str, name: str) -> dict[str, Any]:
    """``{trial key: Run}`` of the sweep's child runs; fails on a duplicated key."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, f"no MLflow experiment {name!r}"
    runs = client.search_runs([experiment.experiment_id], "tags.`ablate.kind` = 'trial'")
    keys = [run.data.tags["ablate.trial_key"] for run in runs]
    assert len(keys) == len(set(keys)), f"duplicate child runs: {sorted(keys)}"
    return dict(zip(keys, runs, strict=True))


def metric_steps(uri: str, run_id: str, key: str) -> list[int]:
    """The steps at which ``key`` was logged, sorted (duplicates kept)."""
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, key)
    return sorted(m.step for m in history)


ACTOR_NODES = """
rows = ray._private.state.actors()
print(json.dumps({str(a["Pid"]): a["Address"]["NodeID"] for a in rows.values() if a.get("Pid")}))
"""


def node_of_pid(cluster: LocalCluster) -> dict[int, str]:
    """``{pid: node name}`` of every actor the cluster has run, from the GCS actor table.

    Tune's results carry the trial process's ``pid`` but no node id (``node_ip`` is the same
    for every node on one machine); the actor table maps the pid to its node.
    """
    cluster.alive()  # refresh the name -> id map
    names = {node_id: name for name, node_id in cluster.ids.items()}
    return {int(pid): names.get(node, node) for pid, node in cluster.query(ACTOR_NODES).items()}


def trial_nodes(sweep: Sweep) -> dict[str, list[str]]:
    """``{trial key: [node name of each result]}``: where each epoch of each trial ran."""
    nodes = node_of_pid(sweep.cluster)
    return {
        key: [nodes.get(int(row["pid"]), f"pid {row['pid']}") for row in rows]
        for key, rows in sweep.results().items()
    }
