"""Checks of where a sweep writes (its storage, its SQLite store, earlier runs under its name)
and which Ray it joins, made before Ray or MLflow start.

Both fail late and badly without them: an unwritable ``--storage`` raised a bare OSError after
Ray had started and the MLflow parent run was created (left RUNNING), and an address where no
Ray head listens made ``ray.init`` retry for minutes while printing C++ connection errors.
"""

from __future__ import annotations

import os
import shlex
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from trainables.errors import InputError

# Seconds to wait for a Ray head's TCP port: a head on the same network answers in milliseconds.
CONNECT_TIMEOUT_S = 5.0
# Seconds a storage URI's service has to answer a first listing. Without network or credentials
# pyarrow's GCS client waits indefinitely (measured: no answer from gs:// in 60 s here), while a
# reachable bucket answers in well under a second.
STORAGE_TIMEOUT_S = 60.0
# Ray addresses that name no host:port (ray.init resolves them itself).
SYMBOLIC_ADDRESSES = ("auto", "local")


def check_storage(path: str) -> None:
    """The sweep folder ``path`` (local path or URI) can be created and written.

    Creates the folder (Tune would, moments later) and writes and removes one probe file.

    Raises:
        InputError: naming ``--storage``, with the operating system's reason.
    """
    from pyarrow import fs

    probe = ".ablate_write_probe"
    try:
        filesystem, folder = fs.FileSystem.from_uri(path)
        filesystem.create_dir(folder, recursive=True)
        with filesystem.open_output_stream(f"{folder}/{probe}") as stream:
            stream.write(b"ok")
        filesystem.delete_file(f"{folder}/{probe}")
    except (OSError, ValueError) as error:  # pyarrow: OSError subclasses; ValueError: bad URI
        raise InputError(
            f"cannot write the sweep's results to {path}: {_reason(error)} (pass a writable "
            "folder or a storage URI such as s3://bucket/ablate)",
            where="--storage",
        ) from error


def check_storage_answers(path: str, timeout_s: float = STORAGE_TIMEOUT_S) -> None:
    """A storage URI (``s3://``, ``gs://``...) answers one listing within ``timeout_s``; local
    folders are not probed. Run first: every later read of the URI (Tune's resume check, the
    write probe) would otherwise hang the sweep with nothing printed.

    Raises:
        InputError: naming ``--storage``: no answer in time, or the service's refusal.
    """
    if "://" not in path:
        return
    errors: list[BaseException] = []
    # pyarrow's calls cannot be interrupted: a daemon thread is left to its wait at exit
    probe = threading.Thread(target=_list_folder, args=(path, errors), daemon=True)
    probe.start()
    probe.join(timeout_s)
    if probe.is_alive():
        raise InputError(
            f"{path} did not answer within {timeout_s:g} s: check the network and the "
            "credentials for it from this machine, or pass a local folder",
            where="--storage",
        )
    if errors and isinstance(errors[0], OSError | ValueError):
        reason = _reason(errors[0])
        raise InputError(f"cannot read {path}: {reason}", where="--storage") from errors[0]
    if errors:
        raise errors[0]


def _list_folder(path: str, errors: list[BaseException]) -> None:
    """One listing of ``path``'s folder; an exception is appended to ``errors``."""
    from pyarrow import fs

    try:
        filesystem, folder = fs.FileSystem.from_uri(path)
        filesystem.get_file_info(folder)
    except BaseException as error:  # handed to the waiting thread, which decides
        errors.append(error)


def check_no_earlier_runs(client: Any, name: str, path: str) -> None:
    """A new sweep must not reopen the trial runs of an earlier one at the same storage path,
    nor revive a deleted experiment of its name.

    Without Tune's state in ``path`` (deleted, moved, another machine) the earlier sweep cannot
    be resumed, and starting afresh would find its parent and trial runs by tag and overwrite
    their checkpoints and per-case files under metrics from the first training.
    """
    from orchestrator import tracking

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return
    if experiment.lifecycle_stage == "deleted":  # reviving it silently would surprise
        raise InputError(
            f"MLflow experiment {name!r} was deleted (its name stays taken until `mlflow gc`): "
            "start the sweep with another --name, or restore it first with `mlflow experiments "
            f"restore --experiment-id {experiment.experiment_id}`"
        )
    for parent in tracking.search(client, experiment.experiment_id, {"ablate.kind": "sweep"}):
        runs = tracking.child_runs(client, parent)
        earlier = parent.data.tags.get("ablate.sweep_path", "")
        if runs and earlier == path:
            raise InputError(
                f"sweep {name!r} already has {len(runs)} trial runs in MLflow (parent run "
                f"{parent.info.run_id}) but no Tune state in {path} to resume them from; a new "
                f"sweep there would overwrite their checkpoints: start another with --name, or "
                f"delete experiment {name!r} in MLflow first"
            )
        if runs:  # a second sweep of the name would hide this one from `ablate winners NAME`
            raise InputError(
                f"sweep {name!r} already exists in MLflow with {len(runs)} trial runs (parent "
                f"run {parent.info.run_id}, results in {earlier}): resume it with --storage "
                f"{shlex.quote(_storage_of(earlier, name))} --resume, or start another with --name"
            )


def _storage_of(path: str, name: str) -> str:
    """The ``--storage`` that gives sweep folder ``path`` (``<storage>/<name>``)."""
    storage, last = split_sweep_folder(path)
    return storage if last == name else path


def sweep_folder(storage: str, name: str) -> str:
    """``<storage>/<name>``: an absolute local path, or a URI with ``name`` added to its path
    and its query kept (``s3://bucket/ablate/<name>?endpoint_override=minio:9000``: pyarrow
    reads an S3-compatible store's endpoint from the query, so appending after it broke it)."""
    if storage.startswith("file:") and "://" not in storage:  # RFC 8089's file:/x is /x
        storage = _file_uri_path(storage)
    if "://" not in storage:
        return str(Path(storage).expanduser().resolve() / name)
    parts = urlsplit(storage)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{name}"))


def _file_uri_path(uri: str) -> str:
    """The local path of a one-slash ``file:/x`` URI (read as a folder named ``file:`` before).

    Raises:
        InputError: naming ``--storage``: ``file:x`` names no absolute path.
    """
    path = uri.removeprefix("file:")
    if not path.startswith("/"):
        raise InputError(
            f"{uri} is not an absolute file: URI: pass file:///abs/path or a plain folder",
            where="--storage",
        )
    return path


def split_sweep_folder(path: str) -> tuple[str, str]:
    """``(storage, name)`` of a sweep folder made by :func:`sweep_folder` (Tune's
    ``storage_path`` and run name)."""
    if "://" not in path:
        storage, _, name = path.rstrip("/").rpartition("/")
        return storage or "/", name  # a sweep right under the root: '' would be the cwd
    parts = urlsplit(path)
    head, _, name = parts.path.rstrip("/").rpartition("/")
    return urlunsplit(parts._replace(path=head)), name


def check_ray_address(address: str, where: str) -> None:
    """A Ray head accepts TCP connections at ``address`` (``host:port`` or ``ray://host:port``).

    Symbolic addresses (``auto``, ``local``) and addresses without a port are left to Ray.

    Args:
        address: as given to ``--address`` or in ``RAY_ADDRESS``.
        where: which of the two it came from, for the message.

    Raises:
        InputError: nothing listens there, or the host name does not resolve.
    """
    reason = _no_head(address)
    if reason:
        raise InputError(
            f"no Ray head answers at {address} ({reason}); start the cluster first "
            "(`ray up cluster.yaml`, or `ray start --head` on the head node) and pass its "
            "address (the head's IP and GCS port, 6379 by default; ray://<head>:10001 for Ray "
            "Client), or leave it out to start Ray on this machine",
            where=where,
        )


def check_ray_to_join(given: str | None) -> None:
    """The Ray head a sweep will join answers: ``--address`` (``given``), else ``RAY_ADDRESS``,
    else the cluster Ray recorded on this machine at its last ``ray start``, which ``ray.init``
    joins without an address or with ``auto``. A head stopped without ``ray stop`` (killed,
    the machine rebooted) leaves the record behind, and ``ray.init`` waited on it for minutes.
    """
    from_env = os.environ.get("RAY_ADDRESS")
    address = given or from_env
    if address and address != "auto":
        check_ray_address(address, "--address" if given else "RAY_ADDRESS")
        return
    from ray._private.utils import get_ray_address_file, read_ray_address  # Ray's own lookup

    recorded = read_ray_address()
    if recorded is None:
        return  # nothing recorded: ray.init starts Ray here (or, for auto, says none runs)
    how = "--address auto" if address else "no --address given"
    parsed = _host_port(recorded)
    reason = _no_head(recorded) if parsed and parsed[0] else f"not host:port: {recorded!r}"
    if reason:
        raise InputError(
            f"{how}, so Ray would join the cluster last started on this machine (`ray start` "
            f"recorded {recorded or 'nothing'} in {get_ray_address_file(None)}), but no Ray "
            f"head answers there ({reason}): run `ray stop` to clear the record and start Ray "
            "here, or pass --address"
        )


def _no_head(address: str) -> str | None:
    """Why no Ray head accepts a connection at ``address``; None when one does, or when the
    address is symbolic or has no port (left to Ray)."""
    parsed = _host_port(address)
    if parsed is None:
        return None
    try:
        socket.create_connection(parsed, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        return _reason(error)
    return None


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` or ``ray://host:port``; None for a symbolic address
    (``auto``, ``local``) or one without a numeric port."""
    target = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = target.rpartition(":")
    if address in SYMBOLIC_ADDRESSES or not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)  # an IPv6 literal: [::1]:6379


def _reason(error: OSError | ValueError) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_S:g} s"
    return getattr(error, "strerror", None) or str(error)


def check_sqlite_store(uri: str, existing: bool) -> None:
    """An SQLite tracking URI's folder exists and is writable; with ``existing`` (a verb that
    reads a sweep) the file itself exists."""
    path = uri.removeprefix("sqlite:///")
    if not path or path == ":memory:" or uri.startswith("sqlite:////:memory:"):
        return
    store = Path(path).expanduser()
    if existing and not store.is_file():
        raise InputError(
            f"no MLflow store at {path}: run ablate in the folder the sweep ran in, or point "
            "--tracking-uri (or MLFLOW_TRACKING_URI) at the sweep's store"
        )
    folder = store.parent
    if not folder.is_dir():
        raise InputError(f"MLflow tracking URI {uri!r}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"MLflow tracking URI {uri!r}: folder {folder} is not writable")
