"""The Ray a sweep runs on: joining a cluster or starting Ray on this machine, and whether each
trial's request fits it (a request nothing can meet would make Tune wait forever)."""

from __future__ import annotations

import logging
import os
import sys

from orchestrator.expand import Plan
from trainables.errors import InputError

QUIET_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0: no Tune status tables, our lines only
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",  # epochs without validation lack val/ metrics
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    # MLflow prints two 'View run' lines per finished run on a tracking server; the sweep prints
    # the experiment's address once at the start
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "1",
}


def check_local_gpus(plan: Plan) -> None:
    """A GPU request on a machine without one is an input error, not a sweep that waits forever."""
    missing = local_gpu_shortfall(plan)
    if missing:
        raise InputError(
            f"{missing}; set resources.gpu: 0 to train on CPU, pass --address to join a Ray "
            "cluster with GPUs, or use --smoke for a quick check on this machine",
            plan.source,
        )


def local_gpu_shortfall(plan: Plan) -> str | None:
    """What the plan asks for that this machine lacks (GPUs), or None when it has them."""
    gpu = plan.space.resources.gpu
    if gpu <= 0:
        return None
    import torch

    if torch.cuda.device_count() > 0:
        return None
    return f"resources.gpu: {gpu:g} GPU per trial requested, but this machine has no GPU"


def check_cluster_resources(plan: Plan, joined: bool = False) -> None:
    """Each trial's request must fit the Ray cluster, or Tune would wait for it forever.

    A joined cluster (``--address``/``RAY_ADDRESS``) may autoscale from zero workers, as
    ``cluster.yaml``'s GPU types do, so there a shortfall is reported and the sweep waits for
    the autoscaler; only a local Ray, which cannot grow, refuses to start.
    """
    import ray

    total = ray.cluster_resources()
    wanted = plan.space.resources
    for kind, amount in (("CPU", wanted.cpu), ("GPU", wanted.gpu)):
        have = float(total.get(kind, 0.0))
        if amount <= have:
            continue
        message = (
            f"resources.{kind.lower()}: each trial asks for {amount:g} {kind} but the Ray "
            f"cluster has {have:g} in total"
        )
        if not joined:
            raise InputError(message, plan.source)
        print(f"ablate: {message} now; waiting for the autoscaler to add nodes", file=sys.stderr)


def ray_running() -> bool:
    """Whether this process is already connected to a Ray (a test's, or a notebook's)."""
    import ray

    return ray.is_initialized()


def start_ray(address: str | None, verbose: bool) -> None:
    """Join ``address`` (``--address`` or RAY_ADDRESS), else start a local Ray; keep Ray's own
    output quiet.

    Raises:
        InputError: the head answers but refuses this driver: ``ray start`` turns on token
            authentication, and a driver without ``RAY_AUTH_MODE=token`` is turned away (was
            a ConnectionError, exit 1, after half a minute of C++ warnings).
    """
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    if not verbose:
        for name in ("ray.tune", "ray.train", "ray.air"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    if ray.is_initialized():
        return
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=verbose,
            logging_level=logging.INFO if verbose else logging.ERROR,
        )
    except ConnectionError as error:
        raise InputError(
            f"the Ray head answers but this driver could not join it ({error}); if the head "
            "uses token authentication (`ray start` turns it on unless RAY_AUTH_MODE=disabled), "
            "export RAY_AUTH_MODE=token here too, with the head's token (RAY_AUTH_TOKEN, or "
            "~/.ray/auth_token on this machine)",
            where="--address" if address else "",
        ) from None
