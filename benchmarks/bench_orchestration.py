"""Orchestration overhead: ``ablate sweep`` against plain Ray Tune running the same trials.

DESIGN.md target: a sweep of tiny trials costs at most 1.2x the same trials run by plain Ray
Tune without tracking. "Plain Ray Tune" here is the same Trainable and the same param space in a
``Tuner`` with Tune's defaults (no actor reuse, no callbacks, no per-epoch checkpoints); "ablate"
is ``run_sweep``: MLflow parent/child tracking, progress lines, a checkpoint per epoch, actor
reuse. Ray is started once before either, so neither pays its start-up; runs alternate (plain,
ablate, plain, ablate...) so load drift hits both.

    python benchmarks/bench_orchestration.py [--space search_spaces/smoke.yaml] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def plain_tune(space: Path, workdir: Path, reuse_actors: bool = False) -> float:
    """Wall time of the smoke trials of ``space`` through a plain ``tune.Tuner`` (Tune's
    defaults, optionally with actor reuse, the lever ablate itself pulls)."""
    from ray import tune

    from orchestrator.expand import plan_sweep
    from orchestrator.tuner import param_space
    from trainables.trainable import AblateTrainable

    plan = plan_sweep(space, smoke=True)
    resources = {"cpu": plan.space.resources.cpu, "gpu": plan.space.resources.gpu}
    tuner = tune.Tuner(
        tune.with_resources(AblateTrainable, resources),
        param_space=param_space(plan, {}),
        tune_config=tune.TuneConfig(
            metric=plan.space.metric, mode=plan.space.mode, reuse_actors=reuse_actors
        ),
        run_config=tune.RunConfig(storage_path=str(workdir / "plain"), verbose=0),
    )
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


def ablate_sweep(space: Path, workdir: Path, run: int) -> float:
    """Wall time of ``ablate sweep SPACE --smoke`` (tracking into a fresh SQLite store)."""
    from orchestrator.sweep import SweepOptions, run_sweep

    opts = SweepOptions(
        space=space,
        tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}",  # one store, as a user's mlflow.db
        storage=str(workdir / "ablate"),
        smoke=True,
        name=f"overhead{run + 1}",
    )
    start = time.perf_counter()
    result = run_sweep(opts)
    elapsed = time.perf_counter() - start
    if result.counts.get("finished", 0) != sum(result.counts.values()):
        raise SystemExit(f"not every trial finished: {result.counts}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=REPO / "search_spaces" / "smoke.yaml")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    import ray
    import torch

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    plain, reused, ours = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("ABLATE_CACHE", str(Path(tmp) / "cache"))
        plain_tune(args.space, Path(tmp) / "warmup")  # synthesise + prepare the data once
        ablate_sweep(args.space, Path(tmp), -1)  # creates the MLflow store (schema migrations)
        for run in range(args.repeats):
            plain.append(plain_tune(args.space, Path(tmp) / f"p{run}"))
            reused.append(plain_tune(args.space, Path(tmp) / f"r{run}", reuse_actors=True))
            ours.append(ablate_sweep(args.space, Path(tmp), run))
            print(
                f"run {run + 1}: plain Tune {plain[-1]:.1f} s, plain Tune reusing actors "
                f"{reused[-1]:.1f} s, ablate sweep {ours[-1]:.1f} s"
            )
    ray.shutdown()
    med = {
        k: statistics.median(v) for k, v in (("plain", plain), ("reused", reused), ("ours", ours))
    }
    print(f"median plain Ray Tune (defaults)      {med['plain']:.1f} s")
    print(f"median plain Ray Tune, actors reused  {med['reused']:.1f} s")
    print(f"median ablate sweep (MLflow tracking) {med['ours']:.1f} s")
    print(f"ratio ablate / plain defaults         {med['ours'] / med['plain']:.2f} (target <= 1.2)")
    print(f"ratio ablate / plain reusing actors   {med['ours'] / med['reused']:.2f}")
    print(
        f"ray {ray.__version__}, torch {torch.__version__}, python {platform.python_version()}; "
        f"{platform.platform()}, {args.cpus} CPUs for Ray; space {args.space.name} (--smoke)"
    )


if __name__ == "__main__":
    main()
