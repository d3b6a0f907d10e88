"""Real Ray nodes and a real MLflow server on this machine, started and stopped precisely.

``ray stop`` kills every Ray process of the machine (other people's too), so it is never used.
Each node is a ``ray start --block`` process in its own session; every process this harness
starts, and everything they spawn (Ray workers move to process groups of their own), carries a
marker in its environment (``ABLATE_TEST_CLUSTER=<id>``, plus ``ABLATE_TEST_NODE=<name>`` per
node), so teardown, and killing one node, find exactly those processes in ``/proc``.

The nodes share one random token (``RAY_AUTH_MODE=token``): a token in ``~/.ray`` left by some
other cluster on the machine cannot interfere, and no one else can join these nodes. Ray's
servers listen on every interface whatever the node address (Ray has no bind option); the
token keeps them closed. MLflow listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MARKER, NODE_MARKER = "ABLATE_TEST_CLUSTER", "ABLATE_TEST_NODE"
NODE_START_S = 90.0  # a loaded 2-core CI machine can take a minute to start a raylet
NODE_RESOURCE = "node_{}"  # each node advertises 1 unit of its own name, to tell nodes apart
WORKERS = ["w1", "w2", "w3"]  # the tests' worker nodes, 1 CPU each
# The ``ray`` command of this interpreter's Ray, whether or not its scripts are on PATH.
RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def marked_pids(key: str, value: str) -> list[int]:
    """Processes whose environment has ``key=value`` (this harness's processes only)."""
    needle = f"{key}={value}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal the process group (session) a harness process leads, then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@dataclass
class Node:
    """One ``ray start --block`` process: ``name`` is also its custom resource's suffix."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    cpus: int


class LocalCluster:
    """A head and worker nodes started with ``ray start`` on this machine.

    Args:
        root: scratch folder (Ray's temp dir, node logs, the ablate cache).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.id = secrets.token_hex(8)
        self.port = free_port()
        self.nodes: dict[str, Node] = {}
        self.ids: dict[str, str] = {}  # node name -> Ray node id, of every node seen alive
        # Ray's session folder holds AF_UNIX sockets, whose paths may not exceed 107 bytes:
        # a short folder of its own rather than one under pytest's deep tmp_path.
        self.ray_dir = Path(tempfile.mkdtemp(prefix="ablate-ray-", dir="/tmp"))
        self.env = self._environment()

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env.update(
            {
                MARKER: self.id,
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": secrets.token_hex(32),
                "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
                "RAY_USAGE_STATS_ENABLED": "0",
                "ABLATE_CACHE": str(self.root / "cache"),
                "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(
                    os.pathsep
                ),
            }
        )
        return env

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # ------------------------------------------------------------------------- nodes
    def start_head(self, cpus: int = 0, autoscaling_config: Path | None = None) -> Node:
        """The head: GCS on ``self.port``, no dashboard UI; ``cpus`` 0 keeps trials off it.

        With ``autoscaling_config`` (a fake_multinode config), the head runs Ray's
        autoscaler in fake-cluster mode: it launches worker "nodes" as local raylets.
        """
        args = ["--head", f"--port={self.port}", "--include-dashboard=false"]
        args += [f"--dashboard-port={free_port()}", f"--temp-dir={self.ray_dir}"]
        env = {}
        if autoscaling_config is not None:
            args.append(f"--autoscaling-config={autoscaling_config}")
            env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
        node = self._start("head", cpus, args, env)
        self._wait_for_port(node)
        self.wait_for_nodes(["head"])
        return node

    def add_worker(self, name: str, cpus: int = 1) -> Node:
        """A worker node joining the head; waits until the GCS lists it alive."""
        for attempt in range(2):  # a raylet that misses Ray's fixed 30 s start window: retry
            node = self._start(name, cpus, [f"--address={self.address}"])
            try:
                self.wait_for_nodes([name])
                return node
            except RuntimeError:
                self.kill_node(name)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _start(
        self, name: str, cpus: int, args: list[str], extra_env: dict[str, str] | None = None
    ) -> Node:
        resources = json.dumps({NODE_RESOURCE.format(name): 1})
        command = [*RAY_CLI, "start", "--block", "--node-ip-address=127.0.0.1"]
        command += [f"--num-cpus={cpus}", "--num-gpus=0", f"--resources={resources}"]
        command += ["--disable-usage-stats", "--include-log-monitor=false"]
        for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port"):
            command.append(f"--{flag}={free_port()}")
        command += [f"--metrics-export-port={free_port()}"]
        command += [f"--runtime-env-agent-port={free_port()}", *args]
        log = self.root / f"node-{name}.log"
        env = {**self.env, **(extra_env or {}), NODE_MARKER: f"{self.id}:{name}"}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.nodes[name] = Node(name, proc, log, cpus)
        return self.nodes[name]

    def _wait_for_port(self, node: Node) -> None:
        deadline = time.monotonic() + NODE_START_S
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"ray start {node.name} exited:\n{node.log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"head GCS not listening on {self.port} after {NODE_START_S:.0f} s")

    def kill_node(self, name: str) -> None:
        """Lose node ``name`` at once: its raylet's process group and every worker it ran."""
        node = self.nodes.pop(name)
        kill_group(node.proc)
        kill_pids(marked_pids(NODE_MARKER, f"{self.id}:{name}"))

    def node_running(self, pid: int) -> str:
        """The node whose raylet started live process ``pid`` (from its environment marker)."""
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        prefix = f"{NODE_MARKER}={self.id}:".encode()
        names = [item[len(prefix) :].decode() for item in environ if item.startswith(prefix)]
        if not names:
            raise LookupError(f"process {pid} was not started by a node of this cluster")
        return names[0]

    def alive(self) -> dict[str, str]:
        """``{node name: Ray node id}`` of the nodes the GCS lists alive."""
        code = "print(json.dumps([n for n in ray.nodes() if n['Alive']]))"
        prefix = NODE_RESOURCE.format("")
        names = {}
        for info in self.query(code):
            tags = [key for key in info["Resources"] if key.startswith(prefix)]
            if tags:
                names[tags[0].removeprefix(prefix)] = info["NodeID"]
        self.ids.update(names)
        return names

    def wait_for_nodes(self, names: list[str], timeout_s: float = NODE_START_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name in names:
                node = self.nodes[name]
                if node.proc.poll() is not None:
                    raise RuntimeError(f"node {name} exited:\n{node.log.read_text()[-3000:]}")
            if set(names) <= set(self.alive()):
                return
            time.sleep(1.0)
        raise RuntimeError(f"nodes {names} not alive after {timeout_s:.0f} s")

    def ensure_workers(self, names: list[str]) -> None:
        """Start the named workers that are not running (a test may have killed one) or that
        the GCS no longer lists alive (a raylet can miss its heartbeats on a loaded machine and
        be declared dead while its process lingers); a sweep then sees every worker's CPU."""
        alive = self.alive()
        for name in names:
            if name in self.nodes and name not in alive:
                self.kill_node(name)
            if name not in self.nodes:
                self.add_worker(name)

    def query(self, code: str) -> Any:
        """Run ``code`` in a short-lived driver connected to the cluster; its printed JSON.

        A subprocess rather than ``ray.init`` here: Ray caches the auth token and the
        connection per process, and other tests in this pytest process start their own Ray.
        """
        script = f"import json, ray\nray.init(address={self.address!r}, log_to_driver=False)\n"
        out = subprocess.run(
            [sys.executable, "-c", script + code],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"cluster query failed:\n{out.stderr[-3000:]}")
        # Ray may print warnings of its own after ours (e.g. "raylet has lagging heartbeats"
        # on a loaded machine): the answer is the last line that is JSON.
        for line in reversed(out.stdout.strip().splitlines()):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
        raise RuntimeError(f"cluster query printed no JSON:\n{out.stdout[-3000:]}")

    def stop(self) -> None:
        """Kill every node and every process carrying this cluster's marker."""
        for name in list(self.nodes)[::-1]:
            self.kill_node(name)
        for _ in range(3):  # Ray workers exiting late, reparented to init
            pids = marked_pids(MARKER, self.id)
            if not pids:
                break
            kill_pids(pids)
            time.sleep(0.5)
        shutil.rmtree(self.ray_dir, ignore_errors=True)


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with an SQLite store and proxied artifacts in ``root``.

    ``--serve-artifacts`` with ``--artifacts-destination``: clients upload artifacts through
    the server, so no process needs the artifact folder's path or credentials.
    """

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "mlflow-server.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> None:
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
        command += ["--port", str(self.port)]
        command += ["--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}"]
        command += ["--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts")]
        command += ["--workers", "1"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2).close()
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"mlflow server not healthy after {timeout_s:.0f} s")

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down cleanly), SIGKILL if it lingers."""
        if self.proc is not None:
            kill_group(self.proc, signal.SIGTERM)
            self.proc = None


def started(cluster: LocalCluster, workers: list[str]) -> Iterator[LocalCluster]:
    """Start head and ``workers``; stop everything afterwards, whatever happened."""
    try:
        cluster.start_head(cpus=0)
        for name in workers:
            cluster.add_worker(name)
        yield cluster
    finally:
        cluster.stop()
